"""`segtune export-model MODEL -o model.onnx`: a checkpoint, a `finish` folder's ensemble, or a study's search ensemble
(`segtune ensemble`, ``--ensemble``), as one ONNX graph."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segtune.data import build_dataset
from segtune.data.resize import ResizePolicy
from segtune.errors import SegtuneError
from segtune.results.onnx import ExportReport, export_model
from segtune.spec import validate
from segtune.training import checkpoint
from segtune.training.loop import IMAGENET_MEAN, IMAGENET_STD
from segtune.training.models import ARCHITECTURES

CHECK_IMAGES = 16


def _models(source: Path, trust_code: bool) -> tuple[list[Any], dict[str, Any], bool, str]:
    """The models to export, one checkpoint's metadata, whether flip TTA goes in the graph, and what it is."""
    finish_json = source / "finish.json" if source.is_dir() else source if source.name == "finish.json" else None
    if finish_json is not None and finish_json.is_file():
        record = json.loads(finish_json.read_text())
        if "ensemble" not in record:
            raise SegtuneError(f"{finish_json}: finish has not ended yet (no ensemble chosen); run it to the end")
        loaded = [checkpoint.load(p, trust_code=trust_code) for p in record["ensemble"]["checkpoints"]]
        flip = bool(record["ensemble"]["flip"])
        what = f"finish ensemble of {len(loaded)} fold models" + (" with flip TTA" if flip else "")
        return [m for m, _ in loaded], loaded[0][1], flip, what
    model, meta = checkpoint.load(source, trust_code=trust_code)
    return [model], meta, False, f"{meta['config']['arch']} / {meta['config']['encoder']}"


def _pictures(paths: list[str], meta: dict[str, Any], policy: ResizePolicy, dataset: dict | None = None) -> np.ndarray:
    """Canvases of real pictures to check the export on: --images, else the checkpoint's own dataset (or the one its
    study names)."""
    if paths:
        files = [f for p in map(Path, paths) for f in (sorted(p.iterdir()) if p.is_dir() else [p]) if f.is_file()]
        canvases = []
        for f in files[:CHECK_IMAGES]:
            try:
                with Image.open(f) as im:
                    canvases.append(policy.image(im.convert("RGB"))[0])
            except OSError as e:
                raise SegtuneError(f"{f}: cannot read image: {e}") from None
        if not canvases:
            raise SegtuneError("--images: no pictures there")
        return np.stack(canvases)
    dataset = meta.get("dataset") or dataset
    if not dataset:
        raise SegtuneError("this checkpoint does not say which dataset it learned: give --images PATH to check on")
    data = build_dataset(
        validate(
            {"study": "export", "dataset": {**dataset, "allow_missing_classes": True}},
            source="checkpoint",
            check_root=True,
        ).dataset
    )
    split = "test" if len(data.splits["test"]) else "val"
    return data.images[data.splits[split][:CHECK_IMAGES]]


def export(
    source: str | Path,
    out: Path,
    images: list[str],
    trust_code: bool = False,
    stream: Any = None,
    dataset: dict[str, Any] | None = None,
) -> ExportReport:
    stream = stream or sys.stdout
    models, meta, flip, what = _models(Path(source), trust_code)
    policy = ResizePolicy.from_checkpoint(meta)
    canvases = _pictures(images, meta, policy, dataset)
    print(
        f"exporting {what}: input uint8 N x 3 x {policy.canvas[0]} x {policy.canvas[1]} (resize {policy.mode}), "
        f"checked on {len(canvases)} pictures",
        file=stream,
        flush=True,
    )
    report = export_model(
        models, meta["classes"], policy, canvases, out, flip=flip, meta={"source": str(source), "model": what}
    )
    for line in report.lines():
        print(line, file=stream)
    if report.classes_predicted < 2:
        print("note: the model predicts one class on these pictures, so their agreement says little", file=stream)
    return report


def export_ensemble(
    study: Any,
    out: Path,
    images: list[str],
    artifacts_url: str | None = None,
    trust_code: bool = False,
    stream: Any = None,
) -> ExportReport:
    """The ensemble `segtune ensemble` recorded in ``study``: its members (fetched from the artifact store) as one
    graph, the weighted mean of their softmax, checked in onnxruntime as a `finish` ensemble is."""
    from segtune.results import ensemble

    stream = stream or sys.stdout
    name = study.study_name
    selection = ensemble.recorded(study)
    if selection is None:
        raise SegtuneError(f"study {name!r} has no ensemble yet: run `segtune ensemble {name}` first")
    files = ensemble.member_files(study, selection, artifacts_url)
    loaded = [checkpoint.load(path, trust_code=trust_code) for path, _ in files]
    meta = loaded[0][1]
    policy = ResizePolicy.from_checkpoint(meta)
    canvases = _pictures(images, meta, policy, (study.user_attrs.get("spec") or {}).get("dataset"))
    taken = " + ".join(f"{m.weight} x {m.label}" for m in selection.members)
    what = f"search ensemble of study {name!r}: {taken}"
    if not selection.kept:
        print(f"note: this ensemble was not kept ({selection.reason})", file=stream)
    print(
        f"exporting {what}: input uint8 N x 3 x {policy.canvas[0]} x {policy.canvas[1]} (resize {policy.mode}), "
        f"checked on {len(canvases)} pictures",
        file=stream,
        flush=True,
    )
    members = [{"model": m.label, "trial": m.trial, "weight": m.weight} for m in selection.members]
    report = export_model(
        [m for m, _ in loaded],
        meta["classes"],
        policy,
        canvases,
        out,
        meta={"source": f"study {name}", "model": what, "ensemble": members},
        weights=[w for _, w in files],
    )
    for line in report.lines():
        print(line, file=stream)
    if report.classes_predicted < 2:
        print("note: the model predicts one class on these pictures, so their agreement says little", file=stream)
    return report


NORMALISATION = {
    "input": "RGB, float, N x 3 x H x W",
    "scale": "divide 0-255 pixels by 255",
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
}


def model_card(meta: dict[str, Any], name: str, test: dict[str, Any] | None) -> str:
    """What a reader of the folder needs: where the model comes from, what it was trained on, how well it does
    and at which resolution, its classes, how pictures go in."""
    config = meta["config"]
    policy = ResizePolicy.from_checkpoint(meta)
    metrics = meta.get("metrics") or {}
    val = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("val_") and isinstance(v, float))
    if test:
        scored = (
            f"test mIoU {test['test_miou']:.4f}, Dice {test['test_dice']:.4f}, pixel accuracy "
            f"{test['test_pixel_acc']:.4f} on {test['test_images']} pictures; resolution: {test['test_resolution']}"
        )
    else:
        scored = "not scored on the test split (a search trial's weights: `segtune retrain` scores it there)"
    lines = [
        "---",
        "library_name: segmentation-models-pytorch",
        "tags: [segmentation-models-pytorch, semantic-segmentation, segtune]",
        "---",
        f"# {config['arch']} / {config['encoder']}, from segtune ({name})",
        "",
        "Load it without segtune, offline: `segmentation_models_pytorch.from_pretrained(THIS_FOLDER)` (its config",
        "says `encoder_weights: null`: every weight is in `model.safetensors`, nothing is downloaded).",
        "",
        "## Where it comes from",
        f"- {name}: trial {meta.get('trial', '-')}, epoch {meta.get('epoch', '-')}",
        f"- configuration: {json.dumps(config, sort_keys=True)}",
        "",
        "## How well it does",
        f"- validation (on the training-size canvas, padding ignored): {val or '-'}",
        f"- test: {scored}",
        "",
        "## Classes",
        *[f"- {i}: {c}" for i, c in enumerate(meta["classes"])],
        "",
        "## Pictures in, masks out",
        f"- resize: {policy.mode}; the canvas is {policy.canvas[0]} x {policy.canvas[1]} "
        + (
            "(each picture fitted inside it, aspect ratio kept, padded bottom and right; crop the prediction back "
            "and resize it to the picture)"
            if policy.mode == "pad"
            else "(each picture stretched to it)"
        ),
        f"- normalisation: pixels / 255, then (x - mean) / std with ImageNet's mean {list(IMAGENET_MEAN)} and std "
        f"{list(IMAGENET_STD)} (also in `preprocessing.json`)",
        "- output: logits N x classes x H x W; argmax over classes gives the mask",
        "",
    ]
    return "\n".join(lines)


def export_smp(source: str | Path, out: Path, trust_code: bool = False, name: str = "", stream: Any = None) -> Path:
    """A checkpoint as smp's ``save_pretrained`` folder plus a model card, loadable with
    ``smp.from_pretrained(out)`` where neither segtune nor a network is. Written beside ``out``, then moved there."""
    stream = stream or sys.stdout
    path = Path(source)
    model, meta = checkpoint.load(path, trust_code=trust_code)
    arch = meta["config"]["arch"]
    if arch not in ARCHITECTURES:
        raise SegtuneError(
            f"{path}: its model {arch!r} is segtune's own network (or a class of yours), not an smp model; export it "
            "as ONNX instead: segtune export-model MODEL -o model.onnx"
        )
    folder = path.parent if path.is_file() else path
    metrics_file = folder / "metrics.json"  # a retrain's test metrics, when this is a retrain's model
    test = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save_pretrained(str(partial))
        (partial / "README.md").write_text(model_card(meta, name or str(source), test))
        (partial / "preprocessing.json").write_text(
            json.dumps({**NORMALISATION, "resize": ResizePolicy.from_checkpoint(meta).to_dict()}, indent=2)
        )
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print(f"wrote {out}/ (smp save_pretrained: config.json, model.safetensors, README.md model card)", file=stream)
    return out
