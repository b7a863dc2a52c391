"""The winner as an smp model (issue 29 item 3): `export-model --format smp` writes smp's `save_pretrained` folder,
and `smp.from_pretrained` loads it in a process where segtune cannot be imported and no network can be reached,
giving the outputs the checkpoint gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from segtune.config import TrialConfig
from segtune.data.resize import ResizePolicy
from segtune.training import checkpoint
from segtune.training.models import build_model
from tests.conftest import segtune

# the child: every segtune import fails, every socket connection fails, then smp loads the folder
LOAD_OFFLINE = """
import json, socket, sys
sys.modules["segtune"] = None  # import segtune -> ImportError
def refuse(*args, **kwargs):
    raise OSError("no network here")
socket.socket.connect = refuse
socket.create_connection = refuse
import torch
import segmentation_models_pytorch as smp
model = smp.from_pretrained(sys.argv[1]).eval()
x = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(x), sys.argv[3])
print(type(model).__name__)
"""


def test_an_smp_export_loads_without_segtune_or_a_network_and_predicts_the_same(tmp_path: Path) -> None:
    config = TrialConfig(arch="FPN", encoder="resnet18", encoder_weights=None)
    torch.manual_seed(0)
    model = build_model(config, 3).eval()
    ckpt = checkpoint.save(
        tmp_path / "model.pt", model, config, ["background", "pet", "border"], ResizePolicy(64, 64), epoch=3
    )
    out = tmp_path / "smp"
    proc = segtune("export-model", str(ckpt), "--format", "smp", "-o", str(out), cwd=tmp_path)
    assert f"wrote {out}/" in proc.stdout
    files = sorted(p.name for p in out.iterdir())
    assert files == ["README.md", "config.json", "model.safetensors", "preprocessing.json"]
    saved = json.loads((out / "config.json").read_text())
    assert saved["encoder_weights"] is None  # else smp would try to download ImageNet weights on load
    assert saved["classes"] == 3
    assert "- 2: border" in (out / "README.md").read_text()  # the model card names the classes
    assert json.loads((out / "preprocessing.json").read_text())["resize"]["height"] == 64
    assert not list(tmp_path.glob(".smp*"))  # written beside, then moved: nothing partial left

    x = torch.randn(2, 3, 64, 64)
    torch.save(x, tmp_path / "x.pt")
    child = subprocess.run(
        [sys.executable, "-c", LOAD_OFFLINE, str(out), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip().splitlines()[-1] == "FPN"
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(torch.load(tmp_path / "y.pt"), expected, atol=1e-5)


def test_segtunes_own_network_is_refused_in_one_line_that_points_to_onnx(tmp_path: Path) -> None:
    config = TrialConfig(arch="SmallUNet", encoder_weights=None)
    model = build_model(config, 2)
    ckpt = checkpoint.save(tmp_path / "model.pt", model, config, ["background", "pet"], ResizePolicy(64, 64))
    proc = segtune("export-model", str(ckpt), "--format", "smp", "-o", str(tmp_path / "smp"), cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "'SmallUNet' is segtune's own network" in line and "export-model MODEL -o model.onnx" in line
    assert "Traceback" not in proc.stderr and not (tmp_path / "smp").exists()
