"""`segtune export-model MODEL -o model.onnx`: a checkpoint, or a `finish` folder's ensemble, as one ONNX graph."""

from __future__ import annotations

import json
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


def _pictures(paths: list[str], meta: dict[str, Any], policy: ResizePolicy) -> np.ndarray:
    """Canvases of real pictures to check the export on: --images, else the checkpoint's own dataset."""
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
    if "dataset" not in meta:
        raise SegtuneError("this checkpoint does not say which dataset it learned: give --images PATH to check on")
    data = build_dataset(
        validate(
            {"study": "export", "dataset": {**meta["dataset"], "allow_missing_classes": True}},
            source="checkpoint",
            check_root=True,
        ).dataset
    )
    split = "test" if len(data.splits["test"]) else "val"
    return data.images[data.splits[split][:CHECK_IMAGES]]


def export(
    source: str | Path, out: Path, images: list[str], trust_code: bool = False, stream: Any = None
) -> ExportReport:
    stream = stream or sys.stdout
    models, meta, flip, what = _models(Path(source), trust_code)
    policy = ResizePolicy.from_checkpoint(meta)
    canvases = _pictures(images, meta, policy)
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
