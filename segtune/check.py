"""`segtune check`: catch what would break a study before any trial runs."""

from __future__ import annotations

import itertools
import sys
from typing import Any

import torch

from segtune import space
from segtune.config import DEFAULTS
from segtune.data import SegData, build_dataset, index_summary
from segtune.data.base import BadData
from segtune.errors import SegtuneError, SpecError
from segtune.spec import StudySpec, num_classes, uses_pretrained
from segtune.tables import params_text
from segtune.training.models import ARCHITECTURES, build_model, pairing_problem


def check_models(spec: StudySpec, out: Any = None, weights: bool = True) -> int:
    """Build every architecture x encoder pairing the space allows, once, on the CPU, with a forward pass.

    Unknown names are caught by spec validation already; this finds the pairings smp cannot build
    (UnetPlusPlus on mit_b0, say), which the search will skip, and missing pretrained weights,
    which are an error: before any trial starts instead of mid-study.
    """
    out = out or sys.stdout
    params = space.parse_space(spec.space)

    weights_values = params["encoder_weights"].possible_values() if "encoder_weights" in params else [None]
    if not weights:  # --spec-only: the structure of every pairing, not whether its weights are on disk
        weights_values = [None]
    size = min(spec.dataset.image_size, 64)
    built = 0
    seen: set[tuple[str, str, Any]] = set()
    for (arch, encoder), weights in itertools.product(space.pairs(params), weights_values):
        if arch not in ARCHITECTURES:  # segtune's own nets and module:Class models take no encoder
            encoder, weights = "-", None
        if (arch, encoder, weights) in seen:
            continue
        seen.add((arch, encoder, weights))
        cfg = {**DEFAULTS, "arch": arch, "encoder": encoder, "encoder_weights": weights}
        problem = pairing_problem(arch, encoder) if arch in ARCHITECTURES else None
        if problem:
            print(f"  skipped: {arch} / {encoder} cannot be built ({problem}); the search draws again", file=out)
            continue
        try:
            model = build_model(cfg, num_classes(spec.dataset)).eval()
            with torch.no_grad():
                model(torch.zeros(2, 3, size, size))
        except SegtuneError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure to build is a bad spec value
            raise SpecError(
                f"space: {arch} with encoder {encoder} cannot be built: {str(e).strip().splitlines()[0][:200]}"
            ) from None
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"  model ok: {arch} / {encoder} / weights {weights} ({n_params:.1f} M parameters)", file=out)
        built += 1
    if not built:
        raise SpecError("space: no architecture / encoder pairing in the space can be built")
    return built


def report_skipped(data: SegData, out: Any) -> None:
    """What dataset.skip_bad_files left out: a count, and the files."""
    if not data.skipped:
        return
    print(f"skipped {len(data.skipped)} bad files (dataset.skip_bad_files is on):", file=out)
    for line in data.skipped[: BadData.MAX_LISTED]:
        print(f"  {line}", file=out)
    if len(data.skipped) > BadData.MAX_LISTED:
        print(f"  ... and {len(data.skipped) - BadData.MAX_LISTED} more", file=out)


def check(spec: StudySpec, spec_only: bool = False, out: Any = None) -> dict[str, Any]:
    out = out or sys.stdout
    print(f"spec ok: study {spec.study!r}, dataset {spec.dataset.name}, {len(spec.space)} space entries", file=out)
    report: dict[str, Any] = {"models": check_models(spec, out=out, weights=not spec_only)}
    if spec_only and uses_pretrained(spec):
        print("  pretrained weights not checked (--spec-only); `segtune check SPEC` looks for them", file=out)
    params = space.parse_space(spec.space)
    report["configs"] = space.sample_configs(params, 3, seed=spec.search.seed or 0)
    for _, sampled in report["configs"]:
        print(f"  sample: {params_text(sampled) or '(every parameter is fixed)'}", file=out)
    if not spec_only:
        data = build_dataset(spec.dataset)
        report_skipped(data, out)
        summary = index_summary(data)
        splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
        print(f"dataset ok: {summary['images']} images ({splits}); classes {summary['classes']}", file=out)
        share = ", ".join(f"{k} {v:.1%}" for k, v in summary["pixel_share"].items())
        print(f"  label values seen (share of pixels): {share}", file=out)
        report["dataset"] = summary
    return report
