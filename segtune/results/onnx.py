"""`segtune export-model`: a model that runs outside PyTorch, checked in onnxruntime against PyTorch.

The graph takes raw pixels (uint8, N x 3 x H x W, the resize policy's canvas) and does the ImageNet
normalisation itself, so a caller needs nothing of segtune's. One model gives logits (N, C, H, W); a
`finish` ensemble is one graph too: the mean of its fold models' softmax (flipped copies included when
flip TTA was chosen), output as probabilities; a search ensemble (results/ensemble.py) the weighted mean of
its members' softmax. The class names, the resize policy and what the output is
are in the file's metadata; `segtune predict` takes the file like a checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

import segtune
from segtune.data.resize import ResizePolicy
from segtune.errors import SegtuneError
from segtune.training.loop import Normalizer

AGREEMENT = 0.999  # argmax agreement with PyTorch over every pixel checked


def _runtime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise SegtuneError(
            "export-model needs onnx, onnxruntime and onnxscript: pip install 'segtune[export]'"
        ) from None
    return ort


class Deployable(nn.Module):
    """Raw pixels in, logits (one model) or mean probabilities (several, or flip TTA) out; with ``weights`` (a search
    ensemble: how often the selection took each model), their weighted mean."""

    def __init__(self, models: list[nn.Module], flip: bool = False, weights: list[float] | None = None):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.norm = Normalizer()
        self.flip = flip
        self.probabilities = len(models) > 1 or flip
        given = [1.0] * len(models) if weights is None else [float(w) for w in weights]
        if len(given) != len(models) or min(given, default=1.0) <= 0:
            raise SegtuneError(f"weights: one positive number a model ({len(models)}), got {weights}")
        self.weights = [w / sum(given) for w in given]
        self.weighted = weights is not None and len(set(self.weights)) > 1

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.norm(image)
        if not self.probabilities:
            return self.models[0](x)
        outs = []
        for model in self.models:
            outs.append(model(x).softmax(1))
            if self.flip:
                outs.append(model(x.flip(-1)).softmax(1).flip(-1))
        if not self.weighted:
            return torch.stack(outs).mean(0)
        views = 2 if self.flip else 1
        total = outs[0] * (self.weights[0] / views)
        for i, out in enumerate(outs[1:], start=1):
            total = total + out * (self.weights[i // views] / views)
        return total


@dataclass
class ExportReport:
    path: Path
    dynamic: str  # which axes vary
    max_abs_diff: float
    agreement: float
    classes_predicted: int
    pixels: int
    latency_ms: dict[str, float]

    def lines(self) -> list[str]:
        lat = self.latency_ms
        return [
            f"wrote {self.path} ({self.path.stat().st_size / 1e6:.1f} MB; dynamic {self.dynamic})",
            f"onnxruntime vs PyTorch on {self.pixels} pixels: max |difference| {self.max_abs_diff:.2e}, argmax "
            f"agreement {self.agreement:.4%} ({self.classes_predicted} classes predicted)",
            f"latency, median ms per image on this CPU: batch 1: PyTorch {lat['torch_b1']:.1f}, onnxruntime "
            f"{lat['onnx_b1']:.1f}; batch 8: PyTorch {lat['torch_b8']:.1f}, onnxruntime {lat['onnx_b8']:.1f}",
        ]


def _export(module: nn.Module, example: torch.Tensor, path: Path, spatial: bool) -> None:
    from torch.export import Dim

    dims = {0: Dim("batch", min=1, max=1024)}
    if spatial:
        dims.update({2: Dim.AUTO, 3: Dim.AUTO})
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["scores"],
            dynamic_shapes={"image": dims},
            dynamo=True,
            external_data=False,
        )


def _median_ms(run: Any, batch: np.ndarray, repeats: int = 10) -> float:
    run(batch)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - started) * 1000 / len(batch))
    return statistics.median(times)


def export_model(
    models: list[nn.Module],
    classes: list[str],
    resize: ResizePolicy,
    canvases: np.ndarray,
    out: Path,
    flip: bool = False,
    meta: dict[str, Any] | None = None,
    weights: list[float] | None = None,
) -> ExportReport:
    """Export, then check on ``canvases`` (real pictures on the policy's canvas, uint8 N x H x W x 3).

    The file is written beside ``out`` and moved into place only once onnxruntime agrees with PyTorch: an export
    that fails its check (or is interrupted) leaves neither ``out`` nor a partial file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        report = _export_checked(models, classes, resize, canvases, partial, out, flip, meta, weights)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    report.path = out
    return report


def _export_checked(
    models: list[nn.Module],
    classes: list[str],
    resize: ResizePolicy,
    canvases: np.ndarray,
    out: Path,
    final: Path,
    flip: bool,
    meta: dict[str, Any] | None,
    weights: list[float] | None = None,
) -> ExportReport:
    """The export written to ``out`` and checked; ``final`` is where it goes once it passes."""
    import onnx

    ort = _runtime()
    module = Deployable([m.cpu().eval() for m in models], flip=flip, weights=weights).eval()
    images = torch.from_numpy(np.ascontiguousarray(canvases.transpose(0, 3, 1, 2)))
    dynamic = "batch, height, width"
    try:
        _export(module, images[:2], out, spatial=True)
    except Exception:  # noqa: BLE001 - some architectures fix their spatial size when traced
        _export(module, images[:2], out, spatial=False)
        dynamic = f"batch (height and width fixed at {resize.canvas[0]} x {resize.canvas[1]})"
    model = onnx.load(str(out))
    info = {
        "segtune_version": segtune.__version__,
        "classes": json.dumps(classes),
        "resize": json.dumps(resize.to_dict()),
        "input": "image: uint8 N x 3 x H x W, RGB, 0-255, not normalised",
        "output": ("probabilities (weighted mean softmax)" if module.weighted else "probabilities (mean softmax)")
        if module.probabilities
        else "logits",
        **{k: json.dumps(v) for k, v in (meta or {}).items()},
    }
    for key, value in info.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(out))

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = module(images).numpy()
    got = np.concatenate([session.run(None, {"image": images[i : i + 4].numpy()})[0] for i in range(0, len(images), 4)])
    agree = float((expected.argmax(1) == got.argmax(1)).mean())
    predicted = len(np.unique(got.argmax(1)))
    report = ExportReport(out, dynamic, float(np.abs(expected - got).max()), agree, predicted, got.argmax(1).size, {})
    if agree < AGREEMENT:
        raise SegtuneError(
            f"{final}: onnxruntime disagrees with PyTorch on {1 - agree:.3%} of the pixels "
            f"(max |difference| {report.max_abs_diff:.2e}): not exported faithfully, nothing written"
        )
    batch1, batch8 = images[:1], images[:8].repeat(max(1, 8 // len(images) + 1), 1, 1, 1)[:8]
    with torch.no_grad():
        report.latency_ms = {
            "torch_b1": _median_ms(lambda b: module(b), batch1),
            "torch_b8": _median_ms(lambda b: module(b), batch8),
            "onnx_b1": _median_ms(lambda b: session.run(None, {"image": b.numpy()}), batch1),
            "onnx_b8": _median_ms(lambda b: session.run(None, {"image": b.numpy()}), batch8),
        }
    return report


class OnnxPredictor:
    """`segtune predict` on an ONNX file written by `segtune export-model`."""

    def __init__(self, path: Path):
        ort = _runtime()
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - a file that is not ONNX, or a broken one
            raise SegtuneError(f"{path}: not an ONNX model ({str(e).splitlines()[0][:160]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "classes" not in meta or "resize" not in meta:
            raise SegtuneError(f"{path}: an ONNX file without segtune's metadata (classes, resize)")
        self.classes = json.loads(meta["classes"])
        self.resize = ResizePolicy(**json.loads(meta["resize"]))
        self.logits = meta.get("output") == "logits"

    def probabilities(self, canvases: np.ndarray) -> torch.Tensor:
        images = np.ascontiguousarray(canvases.transpose(0, 3, 1, 2))
        scores = torch.from_numpy(self.session.run(None, {"image": images})[0])
        return scores.softmax(1) if self.logits else scores
