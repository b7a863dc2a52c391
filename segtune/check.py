"""`segtune check`: catch what would break a study before any trial runs."""

from __future__ import annotations

import sys
from typing import Any

import torch

from segtune import space
from segtune.config import TrialConfig
from segtune.data import SegData, build_dataset, index_summary
from segtune.data.base import BadData
from segtune.data.labels import train_pixels_per_class
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

    weights_param = params.get("encoder_weights")

    def weights_for(arch: str, encoder: str) -> list[Any]:
        """The weights this pairing can be drawn with: a ``when`` on arch or encoder narrows them."""
        if weights_param is None or not weights:  # --spec-only: the structure, not the files on disk
            return [None]
        pairing = {"arch": arch, "encoder": encoder}
        if any(dep in pairing and pairing[dep] not in allowed for dep, allowed in weights_param.when.items()):
            return [None]
        return weights_param.possible_values()

    size = 64  # a forward pass proves the pairing builds; the study's size changes nothing here
    built = 0
    seen: set[tuple[str, str, Any]] = set()
    combos = [(pair, w) for pair in space.pairs(params) for w in weights_for(*pair)]
    for (arch, encoder), weights in combos:
        if arch not in ARCHITECTURES:  # segtune's own nets and module:Class models take no encoder
            encoder, weights = "-", None
        if (arch, encoder, weights) in seen:
            continue
        seen.add((arch, encoder, weights))
        cfg = TrialConfig(arch=arch, encoder=encoder, encoder_weights=weights)
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


def check_dataset(spec: StudySpec, out: Any) -> dict[str, Any]:
    """Index and decode the dataset as `run` will: counts per split, what the mask values became, what lossy
    reading and mask resizing did, the share of each label; warns when most classes are absent from train."""
    data = build_dataset(spec.dataset)
    report_skipped(data, out)
    summary = index_summary(data)
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    print(f"dataset ok: {summary['images']} images ({splits}); classes {summary['classes']}", file=out)
    share = ", ".join(f"{k} {v:.1%}" for k, v in summary["pixel_share"].items())
    print(f"  mask values: {data.labels_note}", file=out)
    for split, off in data.off_level.items():  # dataset.lossy_masks: what the snapping did, never silent
        print(f"  lossy masks, {split}: {off.text()}", file=out)
    if data.resized_masks:
        print(
            f"  {len(data.resized_masks)} masks stored at another size than their picture, resized to it "
            "nearest-neighbour (dataset.mask_resize)",
            file=out,
        )
    print(f"  label values seen (share of pixels): {share}", file=out)
    train = train_pixels_per_class(data.masks[data.splits["train"]], data.num_classes)
    absent = [c for c, n in zip(data.classes, train, strict=True) if n == 0]
    if 2 * len(absent) > len(data.classes):
        print(
            f"  warning: {len(absent)} of {len(data.classes)} classes have no pixel in the train split "
            f"({', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}): a study of mostly absent classes "
            "means little; check dataset.classes and the mask values",
            file=out,
        )
    if summary["padding_share"]:
        h, w = data.resize.canvas
        print(
            f"  padding to the {h}x{w} canvas: {summary['padding_share']:.1%} of it, ignored in training "
            "and not counted above",
            file=out,
        )
    return summary


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
        report["dataset"] = check_dataset(spec, out)
    return report
