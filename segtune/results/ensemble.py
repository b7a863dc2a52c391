"""`segtune ensemble STUDY`: an ensemble of the models a search already trained, kept only when it beats the best one.

Caruana's ensemble selection (Caruana, Niculescu-Mizil, Crew and Ksikes, "Ensemble selection from libraries of
models", ICML 2004), as auto-sklearn, Auto-PyTorch and AutoGluon run it after their searches:

- **Candidates**: the study's complete trials, and its pruned ones (paused trials that were never promoted end
  pruned) and complete ones on a schedule a budget cut short whose recorded value is at least
  ``pruned_floor`` (default 0.95) of the best complete trial's; at most
  ``max_candidates`` (16), best first. A pruned trial close to the best is a decent model of another configuration,
  the diversity an ensemble lives on; far below it, it trained one epoch or two, and the only way it enters is by
  fitting val's noise (more candidates, more chances to). Every trial's best weights are in the artifact store.
- **Selection** on the val split, by the study's metric of the weighted mean softmax: start from the best single
  model (Caruana starts from the best N of a library of 2000; here the library is tens, and the best few would force
  weak models in), then add, with replacement, the model that raises the metric most; stop when no addition raises
  it (or after ``max_steps``). A member's weight is how often it was taken.
- **At a bounded size**: each candidate's val probabilities are computed once, at every ``stride``-th pixel of the
  training canvas in each direction (the smallest stride that keeps one model's probabilities within
  ``budget_mb``, 32 MB), quantised to uint8, in memory when all candidates fit in 512 MB, else in memory-mapped
  files in a temporary folder that goes when the selection ends. A pixel subsample, not pooled probabilities: each
  counted pixel is the ensemble's exact vote there, and the counts estimate the canvas's confusion matrix. Classes
  are the last axis (the vote is an argmax over contiguous values); the running sum is int16 in memory (2 x one
  model's budget; at most 128 picks). So memory and disk grow with the candidates, never with val beyond the
  budget.
- **Judged on pictures the selection did not see**: the selection's val gain is optimistic (it was chosen on val),
  so val is split in two halves (seeded); the selection is run on each half and judged on the other against the
  best single model of the same half, and a paired bootstrap over all val pictures (1000 draws) of the held-out
  difference (ensemble minus best single, each picture's confusion matrix counted) gives its 90% interval. **Kept
  when the lower 5% quantile is above 0** and the selection on all of val took at least two models. Each half's
  selection saw half the pictures, so the held-out gain is, if anything, pessimistic for the selection on all of
  val; a study with fewer than 4 val pictures cannot be judged and is not kept.
- **Reported** at the study's own definition: the ensemble (selected on all of val) and the best single model are
  scored on the whole canvas in float32 (``predict.split_metrics``, as the trials score val), with the ensemble's
  latency per picture and size; all of it goes to the study attr ``ensemble`` (`report` shows it, `export-model
  STUDY --ensemble` exports it as one ONNX graph).

A list of checkpoints (a hand-picked list's retrains) is selected the same way (:func:`select_checkpoints`), and
:func:`evaluate` scores any weighted set of models on a split at the pictures' own size.
"""

from __future__ import annotations

import io
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from segtune.config import METRIC_LABELS, METRICS
from segtune.data import build_dataset
from segtune.data.base import SegData
from segtune.data.labels import IGNORE_INDEX
from segtune.data.resize import ResizePolicy
from segtune.errors import DataError, SegtuneError, StoreError
from segtune.results.export import trial_config
from segtune.results.fetch import trial_model
from segtune.results.predict import TorchPredictor, full_resolution_note, split_metrics
from segtune.search import store
from segtune.spec import validate
from segtune.tables import format_table
from segtune.training import checkpoint
from segtune.training.device import pick_device
from segtune.training.metrics import json_safe, metrics_from_confusion

ATTR = "ensemble"  # the study attr holding the selection (report and export-model read it)
PRUNED_FLOOR = 0.95
MAX_CANDIDATES = 16
MAX_STEPS = 25
MAX_PICKS = 128  # 128 x 255 fits the int16 running sum
BUDGET_MB = 32.0  # one candidate's val probabilities at the selection's stride, uint8
IN_MEMORY_MB = 512.0  # all candidates' probabilities up to this stay in memory; above, memory-mapped files
DRAWS = 1000
QUANTILE = 0.05  # kept when this quantile of the held-out gain is above 0
MIN_PICTURES = 4


@dataclass
class Candidate:
    """A model the selection may take: a study's trial (fetched from the artifact store) or a checkpoint file."""

    label: str  # "trial 7", or the checkpoint's path
    fetch: Callable[[Path | None], Path]  # the model file, downloaded into the folder given when it must be
    trial: int | None = None
    state: str = ""  # COMPLETE / PRUNED for a trial
    recorded: float | None = None  # its value as the search (or the checkpoint) recorded it
    config: str = ""


@dataclass
class Member:
    label: str
    weight: int  # how often the selection took it
    trial: int | None = None
    state: str = ""
    recorded: float | None = None
    val: float | None = None  # its own val metric, at the selection's resolution
    config: str = ""
    size_mb: float = 0.0
    path: str | None = None  # where the model is in the process that selected it (a checkpoint's path is lasting)


@dataclass
class Selection:
    """What the selection chose and how it was judged: the study attr ``ensemble``, as JSON."""

    metric: str
    members: list[Member]
    candidates: list[Member]  # every candidate with its own val (weight 0 when not taken)
    val_ensemble: float  # on all of val, whole canvas, float32: optimistic (val chose it)
    val_best_single: float
    best_single: str
    gain: float  # val_ensemble - val_best_single (in-sample)
    heldout_gain: float | None  # selected on one half of val, judged on the other, both ways
    heldout_interval: tuple[float, float] | None  # its bootstrap's 5% and 95% quantiles
    kept: bool
    reason: str
    latency_ms: float  # per picture, batch 1, PyTorch, on latency_device
    latency_device: str
    size_mb: float  # the members' checkpoints, each once
    pictures: int  # val pictures
    resolution: str  # what the selection was computed at
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """As JSON; a trial member's file path is left out (a temporary copy of this process: the trial names it)."""
        raw = asdict(self)
        for m in raw["members"]:
            if m["trial"] is not None:
                m["path"] = None
        return json_safe(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Selection:
        raw = dict(raw)
        raw["members"] = [Member(**m) for m in raw["members"]]
        raw["candidates"] = [Member(**m) for m in raw["candidates"]]
        if raw.get("heldout_interval") is not None:
            raw["heldout_interval"] = tuple(raw["heldout_interval"])
        return cls(**raw)

    @property
    def weights(self) -> list[int]:
        return [m.weight for m in self.members]

    def weighted_paths(self) -> list[tuple[Path, float]]:
        """(model file, weight) of each member, for :func:`evaluate` in the process that selected them."""
        if any(m.path is None for m in self.members):
            raise SegtuneError("this selection's member files are not on this machine: fetch them (member_files)")
        return [(Path(str(m.path)), float(m.weight)) for m in self.members]

    def summary(self) -> str:
        """One line: what the ensemble is and whether it is kept."""
        label = METRIC_LABELS.get(self.metric, self.metric)
        taken = " + ".join(f"{m.weight} x {m.label}" for m in self.members)
        held = (
            f"held-out gain {self.heldout_gain:+.4f} (90% bootstrap interval {self.heldout_interval[0]:+.4f} to "
            f"{self.heldout_interval[1]:+.4f})"
            if self.heldout_gain is not None and self.heldout_interval is not None
            else "no held-out judgement"
        )
        return (
            f"ensemble {taken}: {label} {self.val_ensemble:.4f} against the best single ({self.best_single}) "
            f"{self.val_best_single:.4f}, gain {self.gain:+.4f} on val (chosen there: optimistic); {held}; "
            f"{'KEPT' if self.kept else 'not kept'}: {self.reason}"
        )


@dataclass
class Score:
    """A weighted set of models on one split: :func:`evaluate`'s answer."""

    miou: float
    dice: float
    pixel_acc: float
    iou_per_class: dict[str, float | None]
    images: int
    split: str
    resolution: str


# -- the probabilities the selection works on ----------------------------------------------------------------------


@dataclass
class ProbabilityCache:
    """Every candidate's val probabilities at every ``stride``-th pixel, uint8 (0-255), and the true classes there."""

    probs: list[np.ndarray]  # per candidate: uint8 (N, h, w, C), in memory or memory-mapped
    targets: np.ndarray  # uint8 (N, h, w): class or IGNORE_INDEX (the canvas's padding)
    stride: int
    num_classes: int
    folder: Path | None  # the memory-mapped files' folder, removed by close()

    def close(self) -> None:
        self.probs.clear()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def rows(self, pictures: np.ndarray) -> list[np.ndarray]:
        """``pictures`` in chunks of about 16 MB of one candidate's probabilities."""
        per = max(1, int(16e6 // max(1, self.probs[0][0].nbytes if self.probs else 1)))
        return [pictures[i : i + per] for i in range(0, len(pictures), per)]

    def confusions(self, counts: dict[int, int], pictures: np.ndarray, base: torch.Tensor | None = None) -> np.ndarray:
        """Each picture's confusion matrix (len(pictures), C, C) of the ensemble ``counts`` (candidate -> weight),
        plus ``base`` (a running sum over ``pictures``, int16) when given."""
        n = self.num_classes
        out = np.zeros((len(pictures), n, n), np.int64)
        start = 0
        for chunk in self.rows(pictures):
            total = base[start : start + len(chunk)] if base is not None else None
            for m, w in counts.items():
                p = torch.from_numpy(np.ascontiguousarray(self.probs[m][chunk])).to(torch.int16) * w
                total = p if total is None else total + p
            assert total is not None
            pred = total.argmax(-1)
            target = torch.from_numpy(np.ascontiguousarray(self.targets[chunk])).long()
            cells = torch.where(target == IGNORE_INDEX, n * n, target * n + pred)
            offset = torch.arange(len(chunk)).view(-1, 1, 1) * (n * n + 1)
            counted = torch.bincount((cells + offset).flatten(), minlength=len(chunk) * (n * n + 1))
            out[start : start + len(chunk)] = counted.view(len(chunk), n * n + 1)[:, : n * n].view(-1, n, n).numpy()
            start += len(chunk)
        return out

    def stacked(self, counts: dict[int, int], pictures: np.ndarray) -> torch.Tensor:
        """The ensemble's summed uint8 probabilities over ``pictures``, int16 (the greedy's running sum)."""
        total = None
        for m, w in counts.items():
            p = torch.from_numpy(np.ascontiguousarray(self.probs[m][pictures])).to(torch.int16) * w
            total = p if total is None else total + p
        assert total is not None
        return total


def metric_of(confusion: np.ndarray, metric: str) -> float:
    """The study's metric from a summed confusion matrix (training/metrics.py's definitions)."""
    return float(metrics_from_confusion(torch.from_numpy(confusion).double())[metric.removeprefix("val_")])


def plan_stride(pictures: int, classes: int, canvas: tuple[int, int], budget_mb: float) -> int:
    """The smallest stride that keeps one model's uint8 probabilities within ``budget_mb``."""
    stride = 1
    while pictures * classes * math.ceil(canvas[0] / stride) * math.ceil(canvas[1] / stride) > budget_mb * 1e6:
        stride += 1
    return stride


def build_cache(
    candidates: list[Candidate],
    data: SegData,
    device: torch.device,
    budget_mb: float,
    trust_code: bool,
    out: Any,
) -> tuple[ProbabilityCache, list[float]]:
    """Each candidate's val probabilities, computed once (its model fetched, used and its copy removed); the
    models' sizes in MB."""
    val = data.splits["val"]
    n, c = len(val), data.num_classes
    stride = plan_stride(n, c, data.canvas, budget_mb)
    off = stride // 2
    targets = np.ascontiguousarray(data.masks[val][:, off::stride, off::stride])
    shape = (n, *targets.shape[1:], c)
    per_model = math.prod(shape)
    folder = None
    if per_model * len(candidates) > IN_MEMORY_MB * 1e6:
        folder = Path(tempfile.mkdtemp(prefix="segtune-ensemble-"))
    cache = ProbabilityCache([], targets, stride, c, folder)
    sizes = []
    try:
        for k, cand in enumerate(candidates):
            started = time.monotonic()
            scratch = Path(tempfile.mkdtemp(prefix="segtune-ensemble-model-"))
            try:
                path = cand.fetch(scratch)
                sizes.append(path.stat().st_size / 1e6)
                model, meta = checkpoint.load(path, device, trust_code=trust_code)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            _same_data(meta, data, cand.label)
            probs = (
                np.lib.format.open_memmap(folder / f"{k}.npy", mode="w+", dtype=np.uint8, shape=shape)
                if folder is not None
                else np.empty(shape, np.uint8)
            )
            predictor = TorchPredictor([model], data.classes, data.resize, device)
            for i in range(0, n, 8):
                p = predictor.probabilities(data.images[val[i : i + 8]])[:, :, off::stride, off::stride]
                probs[i : i + 8] = (p * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            cache.probs.append(probs)
            del model, predictor
            print(
                f"  {cand.label} ({cand.state.lower() or 'checkpoint'}"
                + (f", recorded {cand.recorded:.4f}" if cand.recorded is not None else "")
                + f"): val probabilities in {time.monotonic() - started:.1f} s",
                file=out,
                flush=True,
            )
    except BaseException:
        cache.close()
        raise
    return cache, sizes


def _same_data(meta: dict[str, Any], data: SegData, label: str) -> None:
    if list(meta["classes"]) != list(data.classes):
        raise DataError(f"{label}: its classes {meta['classes']} are not the dataset's {data.classes}")
    if ResizePolicy.from_checkpoint(meta) != data.resize:
        raise DataError(
            f"{label}: it was trained at {ResizePolicy.from_checkpoint(meta).to_dict()}, the dataset is read at "
            f"{data.resize.to_dict() if data.resize else None}: ensemble members must share one canvas"
        )


# -- Caruana's greedy selection --------------------------------------------------------------------------------------


@dataclass
class Greedy:
    counts: Counter[int]
    single: int  # the best single candidate on these pictures
    score: float
    single_score: float
    singles: list[float]


def greedy(cache: ProbabilityCache, pictures: np.ndarray, metric: str, max_steps: int = MAX_STEPS) -> Greedy:
    """Forward selection with replacement from the best single candidate, on ``pictures``; stops when no addition
    raises the metric."""
    if max_steps >= MAX_PICKS:
        raise SegtuneError(f"max_steps: below {MAX_PICKS}, got {max_steps}")
    singles = [metric_of(cache.confusions({m: 1}, pictures).sum(0), metric) for m in range(len(cache.probs))]
    best = max(range(len(singles)), key=lambda m: (singles[m], -m))
    counts: Counter[int] = Counter({best: 1})
    running = cache.stacked({best: 1}, pictures)
    score = singles[best]
    for _ in range(max_steps):
        tries = [metric_of(cache.confusions({m: 1}, pictures, running).sum(0), metric) for m in range(len(singles))]
        m = max(range(len(tries)), key=lambda j: (tries[j], -j))
        if not tries[m] > score + 1e-12:
            break
        counts[m] += 1
        running += cache.stacked({m: 1}, pictures)
        score = tries[m]
    return Greedy(counts, best, score, singles[best], singles)


def heldout(
    cache: ProbabilityCache, metric: str, seed: int, max_steps: int, draws: int = DRAWS
) -> tuple[float, tuple[float, float]] | None:
    """Select on one half of val, judge on the other, both ways; the held-out gain over each half's best single and
    the bootstrap's (QUANTILE, 1 - QUANTILE) quantiles, pictures drawn with replacement, paired. None when val has too
    few pictures to split."""
    n = len(cache.targets)
    if n < MIN_PICTURES:
        return None
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    halves = (np.sort(order[: n // 2]), np.sort(order[n // 2 :]))
    c = cache.num_classes
    ens, single = np.zeros((n, c, c), np.int64), np.zeros((n, c, c), np.int64)
    for chosen_on, judged_on in (halves, halves[::-1]):
        g = greedy(cache, chosen_on, metric, max_steps)
        ens[judged_on] = cache.confusions(dict(g.counts), judged_on)
        single[judged_on] = cache.confusions({g.single: 1}, judged_on)
    gain = metric_of(ens.sum(0), metric) - metric_of(single.sum(0), metric)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=draws)
    e, s = weights @ ens.reshape(n, -1), weights @ single.reshape(n, -1)
    gains = [metric_of(e[b].reshape(c, c), metric) - metric_of(s[b].reshape(c, c), metric) for b in range(draws)]
    gains = [g for g in gains if not math.isnan(g)]
    low, high = np.quantile(gains, [QUANTILE, 1 - QUANTILE])
    return gain, (float(low), float(high))


def select(
    candidates: list[Candidate],
    data: SegData,
    metric: str = "val_miou",
    device: str | None = None,
    trust_code: bool = False,
    budget_mb: float = BUDGET_MB,
    max_steps: int = MAX_STEPS,
    seed: int = 0,
    out: Any = None,
) -> Selection:
    """Caruana's selection over ``candidates`` on ``data``'s val split, judged as the module says."""
    out = out or sys.stdout
    if metric not in METRICS:
        raise SegtuneError(f"metric: {metric!r} is not one of {', '.join(METRICS)}")
    if not candidates:
        raise StoreError("no candidate model to ensemble")
    if len(data.splits["val"]) == 0:
        raise DataError("dataset: the val split is empty; the selection needs it")
    started = time.monotonic()
    dev = pick_device(device)
    cache, sizes = build_cache(candidates, data, dev, budget_mb, trust_code, out)
    try:
        everything = np.arange(len(cache.targets))
        chosen = greedy(cache, everything, metric, max_steps)
        judged = heldout(cache, metric, seed, max_steps)
        resolution = (
            f"one pixel in {cache.stride} x {cache.stride} of the {data.canvas[0]}x{data.canvas[1]} canvas, "
            if cache.stride > 1
            else f"every pixel of the {data.canvas[0]}x{data.canvas[1]} canvas, "
        ) + f"uint8 probabilities ({'memory-mapped files' if cache.folder else 'in memory'})"
    finally:
        cache.close()
    order = sorted(chosen.counts, key=lambda m: (-chosen.counts[m], -chosen.singles[m]))

    def member(m: int, weight: int, path: Path | None = None) -> Member:
        cand = candidates[m]
        return Member(
            label=cand.label,
            weight=weight,
            trial=cand.trial,
            state=cand.state,
            recorded=cand.recorded,
            val=chosen.singles[m],
            config=cand.config,
            size_mb=sizes[m],
            path=str(path) if path is not None else None,
        )

    paths = {m: candidates[m].fetch(None) for m in order}  # kept until the process ends: evaluate() reads them
    loaded = [checkpoint.load(paths[m], dev, trust_code=trust_code)[0] for m in order]
    weights = [chosen.counts[m] for m in order]
    ensemble = TorchPredictor(loaded, data.classes, data.resize, dev, weights=[float(w) for w in weights])
    key = metric.removeprefix("val_")
    val_ensemble = float(split_metrics(ensemble, data, "val", full_resolution=False)[key])
    best = order.index(chosen.single)
    single = TorchPredictor([loaded[best]], data.classes, data.resize, dev)
    val_single = float(split_metrics(single, data, "val", full_resolution=False)[key])
    latency = _latency_ms(ensemble, data)
    distinct = len(order)
    notes = [
        f"{len(candidates)} candidates; selection at {resolution}; val scored on the whole canvas in float32",
    ]
    if judged is None:
        kept, reason = False, f"val holds {len(everything)} pictures, too few to judge an ensemble (at least 4)"
    elif distinct < 2:
        kept, reason = False, "no addition raised the best single model's val: the ensemble is that model"
    elif judged[1][0] > 0:
        kept, reason = (
            True,
            (
                f"its gain on the val pictures the selection did not see is above 0 in {1 - QUANTILE:.0%} of "
                f"{DRAWS} bootstrap draws (lower {QUANTILE:.0%} quantile {judged[1][0]:+.4f})"
            ),
        )
    else:
        kept, reason = (
            False,
            (
                f"its gain on the val pictures the selection did not see is within the noise: the bootstrap's lower "
                f"{QUANTILE:.0%} quantile is {judged[1][0]:+.4f}, not above 0; the best single model stays the choice"
            ),
        )
    return Selection(
        metric=metric,
        members=[member(m, chosen.counts[m], paths[m]) for m in order],
        candidates=[member(m, chosen.counts.get(m, 0)) for m in range(len(candidates))],
        val_ensemble=val_ensemble,
        val_best_single=val_single,
        best_single=candidates[chosen.single].label,
        gain=val_ensemble - val_single,
        heldout_gain=judged[0] if judged else None,
        heldout_interval=judged[1] if judged else None,
        kept=kept,
        reason=reason,
        latency_ms=latency,
        latency_device=str(dev),
        size_mb=sum(sizes[m] for m in order),
        pictures=len(everything),
        resolution=resolution,
        notes=notes,
        seconds=round(time.monotonic() - started, 1),
    )


def _latency_ms(predictor: TorchPredictor, data: SegData, repeats: int = 5) -> float:
    """Median milliseconds of one val picture through the ensemble (batch 1), after a warm-up."""
    picture = data.images[data.splits["val"][:1]]
    predictor.probabilities(picture).cpu()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.probabilities(picture).cpu()  # .cpu() waits for a GPU
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


# -- where the candidates come from ---------------------------------------------------------------------------------


def _dataset(dataset: Any, splits: tuple[str, ...], full_res: tuple[str, ...] = ()) -> SegData:
    """A dataset section (a dict, as a study or a checkpoint records it, or a validated spec), decoded for
    ``splits`` (train and val are always decoded: the builders refuse a dataset without them); a :class:`SegData`
    as it is (a caller scoring many models decodes once)."""
    if isinstance(dataset, SegData):
        return dataset
    raw = dataset.model_dump(mode="json") if hasattr(dataset, "model_dump") else dict(dataset)
    spec = validate({"study": "ensemble", "dataset": {**raw, "allow_missing_classes": True}}, source="dataset")
    return build_dataset(spec.dataset, only=tuple(dict.fromkeys(("train", "val", *splits))), full_res=full_res)


def _config_text(config: dict[str, Any]) -> str:
    return f"{config.get('arch')}/{config.get('encoder')} {config.get('loss')} lr={config.get('lr', 0):.2g}"


def study_candidates(
    study: optuna.Study,
    artifacts_url: str | None = None,
    pruned_floor: float | None = PRUNED_FLOOR,
    max_candidates: int = MAX_CANDIDATES,
) -> tuple[list[Candidate], list[str]]:
    """The study's complete trials, and its pruned ones within ``pruned_floor`` of the best complete one (None: no
    pruned trial), best first, at most ``max_candidates``; and what was left out, in words. A study with no complete
    trial (a short time budget cut them all) offers its pruned ones within the floor of the best pruned one."""
    metric = store.study_metric(study)
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if store.objective_value(t) is not None
    ]
    notes: list[str] = []
    if not complete:
        stopped = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
            if store.shown_value(t, metric) is not None
        ]
        if not stopped:
            raise StoreError(f"study {study.study_name!r} has no complete or pruned trial to ensemble")
        notes.append("no trial ran its whole schedule: the candidates are pruned trials, at their best epoch")
        pruned_floor = PRUNED_FLOOR if pruned_floor is None else pruned_floor
    best = max(store.shown_value(t, metric) or 0.0 for t in complete or stopped)
    pruned: list[FrozenTrial] = []
    if pruned_floor is not None:
        pruned = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
            if (v := store.shown_value(t, metric)) is not None and v >= pruned_floor * best
        ]
    # a complete trial whose schedule a budget cut short (an exact budget's or the time budget's end: its
    # epochs_planned) is a short training like a pruned one, held to the same floor (the default one with
    # --no-pruned); CamVid, K = 10: a 1-epoch trial at val 0.16 was taken three times by a selection fitting val's noise
    floor = PRUNED_FLOOR if pruned_floor is None else pruned_floor
    short = [
        t
        for t in complete
        if t.user_attrs.get("epochs_planned") is not None and (store.shown_value(t, metric) or 0.0) < floor * best
    ]
    if short:
        notes.append(f"{len(short)} complete trials on schedules the budget cut short left out (below the floor)")
        complete = [t for t in complete if t not in short]
    ranked = sorted(complete + pruned, key=lambda t: store.shown_value(t, metric) or 0.0, reverse=True)
    if len(ranked) > max_candidates:
        notes.append(f"{len(ranked) - max_candidates} more trials above the floor left out (max_candidates)")
        ranked = ranked[:max_candidates]

    def fetcher(number: int) -> Callable[[Path | None], Path]:
        return lambda folder: trial_model(study, number, artifacts_url, folder)

    out = []
    for t in ranked:
        try:
            trial_model_exists(study, t, artifacts_url)
        except StoreError as e:
            notes.append(f"trial {t.number} left out: {e}")
            continue
        out.append(
            Candidate(
                f"trial {t.number}",
                fetcher(t.number),
                t.number,
                t.state.name,
                store.shown_value(t, metric),
                _config_text(trial_config(study, t)),
            )
        )
    return out, notes


def trial_model_exists(study: optuna.Study, trial: FrozenTrial, artifacts_url: str | None) -> None:
    """A StoreError when trial ``trial``'s model is neither where it wrote it nor in the study's artifact store."""
    from segtune.search.store import artifacts

    local = trial.user_attrs.get("checkpoint")
    if local and Path(local, artifacts.MODEL).is_file():
        return
    where = artifacts.study_location(study, artifacts_url)
    if where is None:
        raise StoreError("no artifact store recorded (pass --artifacts URL)")
    if artifacts.MODEL not in artifacts.files_of(study, trial.number):
        raise StoreError(f"no {artifacts.MODEL} in the artifact store")


def select_study(
    study: optuna.Study,
    artifacts_url: str | None = None,
    pruned_floor: float | None = PRUNED_FLOOR,
    max_candidates: int = MAX_CANDIDATES,
    device: str | None = None,
    trust_code: bool = False,
    budget_mb: float = BUDGET_MB,
    max_steps: int = MAX_STEPS,
    seed: int = 0,
    out: Any = None,
    data: SegData | None = None,
) -> Selection:
    """Caruana's selection over a study's trained models, on its val split (the benchmark's entry; `segtune
    ensemble` records it with :func:`record`). ``data``: the study's dataset already decoded (train and val, as
    the search read it), so a caller that selects and scores several times decodes once."""
    out = out or sys.stdout
    spec = study.user_attrs.get("spec")
    if not spec:
        raise StoreError(f"study {study.study_name!r} was not made by segtune run (no spec in its attributes)")
    candidates, notes = study_candidates(study, artifacts_url, pruned_floor, max_candidates)
    if not candidates:
        raise StoreError(f"study {study.study_name!r}: no trial's model can be had ({'; '.join(notes)})")
    floor = "no pruned trials" if pruned_floor is None else f"pruned trials at >= {pruned_floor:g} x the best"
    print(
        f"ensemble of study {study.study_name!r}: {len(candidates)} candidates (complete trials, {floor}), "
        "val probabilities once each",
        file=out,
        flush=True,
    )
    data = data if data is not None else _dataset(spec["dataset"], ("val",))
    selection = select(candidates, data, store.study_metric(study), device, trust_code, budget_mb, max_steps, seed, out)
    selection.notes.extend(notes)
    return selection


def checkpoint_candidates(paths: Sequence[str | Path]) -> list[Candidate]:
    """Checkpoint files (a hand-picked list's retrains) as candidates, their recorded val from the checkpoint."""
    out = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            path = path / checkpoint.FILENAME
        if not path.is_file():
            raise SegtuneError(f"{path}: no such checkpoint")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        metrics = payload.get("metrics") or {}
        recorded = metrics.get(metrics.get("metric", "val_miou")) if isinstance(metrics, dict) else None
        out.append(
            Candidate(
                str(path),
                lambda folder, path=path: path,
                recorded=recorded if isinstance(recorded, float) else None,
                config=_config_text(payload.get("config") or {}),
            )
        )
    return out


def select_checkpoints(
    paths: Sequence[str | Path],
    dataset: Any = None,
    metric: str = "val_miou",
    device: str | None = None,
    trust_code: bool = False,
    budget_mb: float = BUDGET_MB,
    max_steps: int = MAX_STEPS,
    seed: int = 0,
    out: Any = None,
) -> Selection:
    """Caruana's selection over checkpoint files on the val split of ``dataset`` (a dataset section or a SegData;
    default: the one the first checkpoint records, as `retrain` writes it)."""
    candidates = checkpoint_candidates(paths)
    if dataset is None:
        payload = torch.load(candidates[0].fetch(None), map_location="cpu", weights_only=True)
        dataset = payload.get("dataset")
        if not dataset:
            raise SegtuneError(f"{candidates[0].label}: it does not say which dataset it learned: pass the dataset")
    data = _dataset(dataset, ("val",)) if not isinstance(dataset, SegData) else dataset
    return select(candidates, data, metric, device, trust_code, budget_mb, max_steps, seed, out)


def member_files(
    study: optuna.Study, selection: Selection, artifacts_url: str | None = None
) -> list[tuple[Path, float]]:
    """(model file, weight) of a recorded selection's members: trials fetched from the artifact store, checkpoints
    where they are."""
    files = []
    for m in selection.members:
        if m.trial is not None:
            files.append((trial_model(study, m.trial, artifacts_url), float(m.weight)))
        elif m.path is not None and Path(m.path).is_file():
            files.append((Path(m.path), float(m.weight)))
        else:
            raise SegtuneError(f"ensemble member {m.label}: its model is not here")
    return files


# -- scoring any weighted set of models ----------------------------------------------------------------------------


def evaluate(
    members: Sequence[tuple[str | Path, float]],
    dataset: Any,
    split: str = "test",
    device: str | None = None,
    trust_code: bool = False,
    full_resolution: bool = True,
) -> Score:
    """The weighted mean softmax of ``members`` ((checkpoint, weight), one member of weight 1 for a single model)
    on ``split`` of ``dataset`` (a dataset section or a SegData decoded with that split at full resolution), at each
    picture's own size (``predict.split_metrics``, as `retrain` and `finish` score test)."""
    if not members:
        raise SegtuneError("evaluate: no model given")
    data = _dataset(dataset, (split,), (split,) if full_resolution else ())
    if len(data.splits.get(split, [])) == 0:
        raise DataError(f"dataset: the {split} split is empty")
    if full_resolution and any(int(i) not in data.full_masks for i in data.splits[split]):
        raise SegtuneError(
            f"evaluate: the dataset was decoded without the {split} split's full-resolution masks "
            f"(build_dataset(..., full_res=({split!r},)))"
        )
    dev = pick_device(device)
    models = []
    for path, _ in members:
        model, meta = checkpoint.load(path, dev, trust_code=trust_code)
        _same_data(meta, data, str(path))
        models.append(model)
    predictor = TorchPredictor(models, data.classes, data.resize, dev, weights=[float(w) for _, w in members])
    m = split_metrics(predictor, data, split, full_resolution=full_resolution)
    resolution = full_resolution_note(data, split) if full_resolution else f"{data.canvas[0]}x{data.canvas[1]} canvas"
    return Score(
        float(m["miou"]),
        float(m["dice"]),
        float(m["pixel_acc"]),
        json_safe(dict(zip(data.classes, m["iou_per_class"], strict=True))),
        len(data.splits[split]),
        split,
        resolution,
    )


# -- the study attr and the table -----------------------------------------------------------------------------------


def record(study: optuna.Study, selection: Selection) -> None:
    """The selection into the study attr ``ensemble`` (`report` and `export-model --ensemble` read it)."""
    study.set_user_attr(ATTR, selection.to_dict())


def recorded(study: optuna.Study) -> Selection | None:
    raw = study.user_attrs.get(ATTR)
    return Selection.from_dict(raw) if raw else None


def table(selection: Selection) -> str:
    label = METRIC_LABELS.get(selection.metric, selection.metric)
    rows = [
        [c.label, c.state.lower() or "-", c.recorded, c.val, c.weight or "-", f"{c.size_mb:.1f}", c.config]
        for c in sorted(selection.candidates, key=lambda c: (-c.weight, -(c.val or 0)))
    ]
    return format_table(["model", "state", "recorded", f"{label} alone", "weight", "MB", "configuration"], rows)


def report_lines(selection: Selection) -> list[str]:
    return [
        selection.summary(),
        f"latency {selection.latency_ms:.1f} ms per picture (batch 1, PyTorch, {selection.latency_device}); "
        f"{selection.size_mb:.1f} MB of weights in {len(selection.members)} models; {selection.seconds:.0f} s",
        *selection.notes,
    ]


# -- benchmarks/confirm_search.py's entry ---------------------------------------------------------------------------


def benchmark_score(
    arm: str,
    picks: list[dict[str, Any]],
    store_path: Path,
    name: str,
    dataset: dict[str, Any],
    device: str | None = None,
) -> dict[str, Any]:
    """One arm's ensemble deliverable for benchmarks/confirm_search.py: ``arm`` "hand" selects over the K hand picks'
    retrained models (``picks[i]["model"]``, a retrain's folder), "search" over the models study ``name`` of the
    SQLite store ``store_path`` trained; both on val, both scored on test at the pictures' own size, the data decoded
    once. ``test`` is what the procedure delivers: the ensemble when it is kept, else its best single model (an arm
    never ships an ensemble its own rule refused); ``test_selection`` is the selected ensemble's, kept or not."""
    data = _dataset(dataset, ("test",), ("test",))
    quiet = io.StringIO()  # the selection's progress lines: the benchmark prints its own
    if arm == "hand":
        selection = select_checkpoints([p["model"] for p in picks], data, device=device, out=quiet)
        files = selection.weighted_paths()
        single = Path(selection.best_single)
    elif arm == "search":
        study = store.load_study(store.open_storage(f"sqlite:///{store_path}", must_exist=True), name)
        selection = select_study(study, device=device, out=quiet, data=data)
        files = member_files(study, selection)
        single = trial_model(study, int(selection.best_single.removeprefix("trial ")))
    else:
        raise ValueError(f"arm: 'hand' or 'search', got {arm!r}")
    ensemble_test = evaluate(files, data, "test", device=device).miou
    single_test = ensemble_test if len(files) == 1 else evaluate([(single, 1.0)], data, "test", device=device).miou
    return {
        "test": ensemble_test if selection.kept else single_test,
        "test_selection": ensemble_test,
        "test_best_single": single_test,
        "kept": selection.kept,
        "reason": selection.reason,
        "members": [(m.label, m.weight) for m in selection.members],
        "candidates": len(selection.candidates),
        "val": selection.val_ensemble,
        "val_best_single": selection.val_best_single,
        "heldout_gain": selection.heldout_gain,
        "heldout_interval": selection.heldout_interval,
        "latency_ms": selection.latency_ms,
        "size_mb": selection.size_mb,
        "seconds": selection.seconds,
    }
