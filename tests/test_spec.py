"""The study spec: the shipped specs validate; each kind of bad input is one line, exit 2, no store file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from segtune import spec as spec_mod
from segtune.cli import main
from segtune.errors import SpecError
from tests.conftest import SPACES

DEMO = SPACES / "demo.yaml"


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_validate(path: Path) -> None:
    spec = spec_mod.load(path, check_root=False)  # their datasets are not on this machine
    assert spec.study and spec.search.trials >= 1 and spec.space


def test_defaults_fill_what_is_left_out() -> None:
    spec = spec_mod.validate({"study": "s", "dataset": {"name": "synthetic"}})
    assert spec.storage == "sqlite:///segtune.db"
    assert spec.search.sampler == "tpe" and spec.search.scheduler == "asha" and spec.search.metric == "val_miou"
    assert spec.resources.gpus_per_trial == "auto"


def test_scientific_notation_reads_as_a_number() -> None:
    assert spec_mod.parse_yaml("lr: 1e-3")["lr"] == pytest.approx(0.001)


def test_overrides_change_any_field_and_are_validated() -> None:
    spec = spec_mod.load(
        DEMO, ["search.trials=4", "dataset.image_size=64", "space.lr=0.002", "search.starting_points=[]"]
    )
    assert spec.search.trials == 4 and spec.dataset.image_size == 64 and spec.space["lr"] == 0.002
    with pytest.raises(SpecError, match=r"dataset\.image_size: must be one side .* at least 32 \(got 16\)"):
        spec_mod.load(DEMO, ["dataset.image_size=16"])
    with pytest.raises(SpecError, match="expected dotted.key=value"):
        spec_mod.load(DEMO, ["search.trials"])


BAD = [
    ("bad_yaml", None, "study: [unclosed\n", "not valid YAML"),
    ("unknown_dataset", ["dataset.name=imagenet"], None, "dataset.name: unknown dataset 'imagenet'"),
    ("unknown_arch", ["space.arch=UNet3000"], None, "space.arch: unknown architecture 'UNet3000'"),
    (
        "unknown_arch_in_choice",
        ["space.arch={choice: [Unet, Segfromer]}"],
        None,
        "space.arch: unknown architecture 'Segfromer'",
    ),
    ("unknown_encoder", ["space.encoder=resnet35"], None, "space.encoder: unknown encoder 'resnet35'"),
    ("unknown_loss", ["space.loss={choice: [ce, dise]}"], None, "space.loss: unknown loss 'dise'"),
    ("lr_zero", ["space.lr=0"], None, "space.lr: must be > 0"),
    ("lr_negative_range", ["space.lr={loguniform: [-1, 0.1]}"], None, "space.lr.loguniform: bounds must be > 0"),
    (
        "grace_period_zero",
        ["search.grace_period=0"],
        None,
        "search.grace_period: must be 'auto' or a whole number >= 1",
    ),
    ("rf_one", ["search.reduction_factor=1"], None, "search.reduction_factor: must be 'auto' or a number > 1"),
    ("rungs_word", ["search.min_first_rung=many"], None, "search.min_first_rung"),
    ("grace_beyond_epochs", ["search.grace_period=9"], None, "search: grace_period (9) must be <= max_epochs (6)"),
    ("typo_field", ["search.trails=3"], None, "search.trails: unknown field"),
    ("unknown_param", ["space.learning_rate=0.1"], None, "space.learning_rate: unknown parameter"),
    ("missing_root", ["dataset.root=builtin:nope"], None, "dataset.root: folder"),
    ("when_before_defined", ["space.aug_strength={uniform: [0, 1], when: {zzz: 1}}"], None, "space.aug_strength.when"),
]


@pytest.mark.parametrize(("overrides", "text", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_specs_exit_2_with_one_line_and_no_store(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], overrides: list[str] | None, text: str | None, expected: str
) -> None:
    path = DEMO
    if text is not None:
        path = in_tmp / "bad.yaml"
        path.write_text(text)
    db = in_tmp / "store.db"
    code = main(["run", str(path), "--storage", f"sqlite:///{db}", *[a for o in overrides or [] for a in ("--set", o)]])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not db.exists() and not (in_tmp / "segtune.db").exists()


def test_bad_folder_root_names_the_field(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", str(SPACES / "folder_example.yaml"), "--data-root", str(in_tmp / "absent")])
    assert code == 2
    assert "dataset.root: folder" in capsys.readouterr().err


def test_cli_process_exits_2_without_traceback(in_tmp: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "segtune", "check", str(DEMO), "--spec-only", "--set", "space.encoder=resnet35"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("segtune: error:") and "space.encoder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_pretrained_weights_fail_before_any_trial(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = in_tmp / "store.db"
    code = main(["run", str(DEMO), "--storage", f"sqlite:///{db}", "--set", "space.encoder_weights=imagenet"])
    err = capsys.readouterr().err
    assert code == 2 and "encoder_weights: imagenet weights for" in err and "are not on this machine" in err
    assert not db.exists()
