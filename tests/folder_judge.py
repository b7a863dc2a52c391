"""Judge what `segtune init` made of a drawn folder against the folder's truth (issue 39).

`init` runs as a user runs it (the command's own ``main``, in this process); its spec is then decoded by the
reader `check` and `run` use (``build_dataset``), and the decoded dataset is compared with the truth:

- **right**: the same pairs (one of the readings the truth allows: a second annotator's masks are a choice), the
  same number of classes, each true class decoded as one class of its own (a one-to-one map), at most
  ``MAX_WRONG`` of the labelled pixels in another class than their own, at most ``MAX_IGNORED`` of them ignored,
  every class's share within ``SHARE_POINTS`` of its true share, and the split sizes a shipped split fixes;
- **refused**: exit 2 and one line naming what to write by hand; no spec written;
- **wrong**: anything else: a spec with another truth, a refusal of more than one line, a crash.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segtune import cli
from segtune import spec as spec_mod
from segtune.data import build_dataset
from segtune.data.folder import index_records
from segtune.data.labels import IGNORE_INDEX
from tests.folder_space import Truth

MAX_WRONG = 0.02  # of the labelled pixels: lossy masks' edges may snap to the neighbouring class
MAX_IGNORED = 0.05  # of all pixels: lossy masks' edge blends are ignored, never most of a class
SHARE_POINTS = 0.03  # each class's share of the labelled pixels within 3 points of its true share


@dataclass
class Outcome:
    verdict: str  # right, refused, wrong
    detail: str  # why (the refusal's line, or what differs)


def run_init(root: Path, out: Path) -> tuple[int, str, str]:
    """`segtune init ROOT -o OUT` in this process: exit code, what it printed, what it printed on stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(["init", str(root), "-o", str(out), "--force"])
    return code, stdout.getvalue(), stderr.getvalue()


def judge(truth: Truth, out: Path) -> Outcome:
    """What init made of ``truth.root``: right, refused (one clear line), or wrong (and how)."""
    out.unlink(missing_ok=True)
    try:
        code, printed, err = run_init(truth.root, out)
    except Exception as e:  # a crash is never a refusal
        return Outcome("wrong", f"init crashed: {type(e).__name__}: {e}")
    if code == 2:
        lines = err.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("segtune: error: "):
            return Outcome("wrong", f"a refusal of {len(lines)} lines: {err.strip()!r}")
        if out.exists():
            return Outcome("wrong", f"refused but wrote {out}")
        if "by hand" not in lines[0] and "dataset." not in lines[0]:
            return Outcome("wrong", f"a refusal that names nothing to write: {lines[0]}")
        return Outcome("refused", lines[0].removeprefix("segtune: error: "))
    if code != 0:
        return Outcome("wrong", f"init exited {code}: {err.strip()[-300:]}")
    try:
        return _compare(truth, out, printed)
    except Exception as e:  # the spec written does not even decode: a wrong spec
        return Outcome("wrong", f"the spec does not decode: {type(e).__name__}: {e}")


def _rel(path: Path, root: Path) -> str:
    return path.resolve().relative_to(root).as_posix()


def _compare(truth: Truth, out: Path, printed: str) -> Outcome:
    spec = spec_mod.load(out)
    if spec.dataset.name != "folder":
        return Outcome("wrong", f"read as {spec.dataset.name}")
    records, _ = index_records(spec.dataset)
    root = truth.root.resolve()
    pairs = {_rel(r.image, root): _rel(r.mask, root) for r in records}
    if pairs not in truth.pairings:
        missing = sorted(set(truth.pairs.items()) - set(pairs.items()))[:2]
        extra = sorted(set(pairs.items()) - set(truth.pairs.items()))[:2]
        return Outcome("wrong", f"{len(pairs)} pairs, not {len(truth.pairs)}: missing {missing}, extra {extra}")
    data = build_dataset(spec.dataset)
    if len(data.names) != len(records):
        return Outcome("wrong", f"{len(data.names)} pairs decoded of {len(records)}")
    if len(data.classes) != truth.k:
        return Outcome("wrong", f"{len(data.classes)} classes, not {truth.k}")
    k = truth.k
    confusion = np.zeros((k, k + 1), np.int64)  # true class -> decoded class (the last column: ignored)
    for i, record in enumerate(records):
        want = truth.labels[_rel(record.mask, root)]
        h, w = (int(x) for x in data.content[i])
        got = data.masks[i][:h, :w]
        if got.shape != want.shape:
            return Outcome("wrong", f"{record.image.name} decoded at {got.shape}, not {want.shape}")
        got = np.where(got == IGNORE_INDEX, k, got).astype(np.int64)
        if got.max() > k:
            return Outcome("wrong", f"{record.mask.name} decodes to class {int(got.max())} of {k}")
        cells = (want.astype(np.int64) * (k + 1) + got).ravel()
        confusion += np.bincount(cells, minlength=k * (k + 1)).reshape(k, k + 1)
    labelled = confusion[:, :k]
    mapping = labelled.argmax(axis=1)
    if len(set(mapping.tolist())) != k:
        return Outcome("wrong", f"true classes merged: true -> decoded {mapping.tolist()}")
    total = confusion.sum()
    ignored = confusion[:, k].sum() / total
    if ignored > MAX_IGNORED:
        return Outcome("wrong", f"{ignored:.1%} of the pixels ignored")
    right = labelled[np.arange(k), mapping].sum()
    wrong = 1 - right / max(1, labelled.sum())
    if wrong > MAX_WRONG:
        return Outcome("wrong", f"{wrong:.1%} of the labelled pixels in another class")
    true_share = confusion.sum(axis=1) / total
    decoded = labelled.sum(axis=0)
    decoded_share = decoded[mapping] / max(1, decoded.sum())
    worst = int(np.abs(decoded_share - true_share).argmax())
    if abs(decoded_share[worst] - true_share[worst]) > SHARE_POINTS:
        return Outcome(
            "wrong", f"class {worst}: {decoded_share[worst]:.1%} of the pixels decoded, {true_share[worst]:.1%} true"
        )
    if truth.splits is not None:
        sizes = {s: len(v) for s, v in data.splits.items()}
        fixed = dict(truth.splits)
        if truth.carved:  # val carved from the listed train: train + val is what the file fixes
            sizes = {"train": sizes["train"] + sizes["val"], "test": sizes["test"]}
            fixed = {"train": fixed["train"] + fixed["val"], "test": fixed["test"]}
        if sizes != fixed:
            return Outcome("wrong", f"splits {sizes}, not the shipped {fixed}")
    return Outcome("right", "")
