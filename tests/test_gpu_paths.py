"""The GPU and cluster paths, checked without a GPU: the rules as pure functions, and Ray's logical GPUs
(`ray start --num-gpus 2` on a CPU machine: Ray schedules and sets CUDA_VISIBLE_DEVICES, trials still
train on the CPU) for packing and for requests no node can meet."""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from segtune.search.nodes.resources import PENDING_ENV, cpu_share, local_cpus, pending_trials
from segtune.spec import StudySpec, validate
from segtune.training.device import precision_for, trial_device
from tests.conftest import SPACES, ray_node, segtune, stop_nodes
from tests.test_inspect_export_retrain import free_port

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_a_trial_uses_a_gpu_only_when_ray_gave_it_one() -> None:
    assert trial_device([], cuda_available=True) == CPU  # gpus_per_trial 0 on a GPU machine: not GPU 0
    assert trial_device(["0"], cuda_available=False) == CPU  # logical GPUs on a CPU host
    assert trial_device(["1"], cuda_available=True) == CUDA  # CUDA_VISIBLE_DEVICES maps it to cuda:0


@pytest.mark.parametrize(
    ("precision", "device", "bf16", "expected"),
    [
        ("auto", CUDA, True, ("bf16", torch.bfloat16, False)),  # A100, H100, RTX 30xx and newer
        ("auto", CUDA, False, ("fp16", torch.float16, True)),  # T4, V100: fp16 needs a GradScaler
        ("auto", CPU, False, ("fp32", None, False)),
        ("bf16", CPU, False, ("fp32", None, False)),  # mixed precision is a CUDA matter
        ("fp16", CUDA, True, ("fp16", torch.float16, True)),
        ("fp32", CUDA, True, ("fp32", None, False)),
    ],
)
def test_precision_fits_the_card(precision: str, device: torch.device, bf16: bool, expected: tuple) -> None:
    plan = precision_for(precision, device, bf16_supported=bf16)
    assert (plan.name, plan.dtype, plan.scaler) == expected


def test_cpus_per_trial_auto_shares_a_gpu_nodes_cpus_among_its_trials() -> None:
    assert cpu_share([(32.0, 8.0)], 0.25) == 1  # 32 trials fit on 8 GPUs: one core each
    assert cpu_share([(64.0, 4.0)], 0.5) == 8  # 8 trials: 8 cores each (7 loader workers)
    assert cpu_share([(64.0, 4.0), (16.0, 4.0)], 0.5) == 2  # the node with fewer cores sets the share
    assert cpu_share([(8.0, 0.0), (64.0, 4.0)], 1) == 16  # CPU-only nodes take no GPU trial
    assert cpu_share([(8.0, 0.0)], 0.0) == 1  # a CPU-only cluster: as before


def test_a_local_cluster_has_the_cpus_the_search_runs_at_once() -> None:
    def spec(search: dict, resources: dict | None = None) -> StudySpec:
        raw = {"study": "s", "dataset": {"name": "synthetic"}, "search": search, "resources": resources or {}}
        return validate(raw)

    cpu_only = {"gpus_per_trial": 0}
    assert local_cpus(spec({"trials": 12, "max_concurrent": 1}, cpu_only)) == 1
    assert local_cpus(spec({"trials": 1}, cpu_only)) == 1  # a one-trial run
    assert local_cpus(spec({"trials": 12, "max_concurrent": 2}, {**cpu_only, "cpus_per_trial": 2})) == 4
    assert local_cpus(spec({"trials": 500}, cpu_only)) == 500  # more than the machine has: connect_ray keeps its count
    assert local_cpus(spec({"trials": 4, "max_concurrent": 1}, {"gpus_per_trial": 0.5})) is None  # GPU trials


def test_tune_holds_a_waiting_trial_per_slot_during_its_search_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer waiting trials than slots stalls the warm workers for their patience (120 s): a second search in one
    process (a test worker) once took the first one's count and waited so."""
    monkeypatch.delenv(PENDING_ENV, raising=False)
    with pending_trials(4):
        assert os.environ[PENDING_ENV] == "4"
    assert PENDING_ENV not in os.environ  # the next search starts from the user's environment
    monkeypatch.setenv(PENDING_ENV, "1")
    with pending_trials(4):
        assert os.environ[PENDING_ENV] == "4"  # never fewer than the slots
    assert os.environ[PENDING_ENV] == "1"
    monkeypatch.setenv(PENDING_ENV, "16")
    with pending_trials(4):
        assert os.environ[PENDING_ENV] == "16"  # a larger one the user set stands


@pytest.fixture()
def logical_gpus(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """One real Ray node with 2 logical GPUs and 8 logical CPUs: its address, and what a driver needs to join."""
    port = free_port()
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    head = ["--head", "--port", str(port), "--include-dashboard", "false"]
    node = ray_node(head, tmp_path / "head.log", {**os.environ, **token}, cpus=8, gpus=2)
    try:
        yield f"127.0.0.1:{port}", token
    finally:
        stop_nodes([node])


def search(tmp: Path, cluster: tuple[str, dict[str, str]], *overrides: str, check: bool = True):  # noqa: ANN201
    address, env = cluster
    return segtune(
        "run",
        str(SPACES / "demo.yaml"),
        "--address",
        address,
        "--storage",
        f"sqlite:///{tmp / 'gpu.db'}",
        "--study",
        "gpu",
        "--set",
        "dataset={name: synthetic, num_images: 48, image_size: 64}",
        "--set",
        "space={arch: SmallUNet, augment: none, batch_size: 4}",
        "--set",
        "search.scheduler=none",
        "--set",
        "search.starting_points=[]",
        "--set",
        f"results_dir={tmp / 'runs'}",
        *overrides,
        cwd=tmp,
        check=check,
        env=env,
    )


@pytest.mark.e2e
def test_half_gpu_trials_pack_two_logical_gpus(logical_gpus: str, tmp_path: Path) -> None:
    # four trials, not eight quarter-GPU ones: the same fractional request (gpus_per_trial < 1) with half the worker
    # processes to start
    proc = search(
        tmp_path,
        logical_gpus,
        "--set",
        "search.trials=4",
        "--set",
        "search.max_epochs=4",
        "--set",
        "resources={gpus_per_trial: 0.5, cpus_per_trial: 1}",
    )
    assert "1 CPU / 0.5 GPU each" in proc.stdout
    trials = optuna.load_study(study_name="gpu", storage=f"sqlite:///{tmp_path / 'gpu.db'}").trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    spans = []
    for t in trials:
        ids = t.user_attrs["gpu_ids"]
        assert len(ids) == 1 and ids[0] in ("0", "1"), ids  # each trial was given one of the two GPUs
        assert t.user_attrs["device"] == "cpu"  # logical GPUs: the trial still trains on the CPU
        spans.append((t.user_attrs["train_started_at"], t.user_attrs["train_ended_at"], ids[0]))
    most, per_gpu = 0, defaultdict(int)
    for start, _, _ in spans:  # how many trials trained at each trial's start
        running = [gpu for s, e, gpu in spans if s <= start < e]
        most = max(most, len(running))
        for gpu in set(running):
            per_gpu[gpu] = max(per_gpu[gpu], running.count(gpu))
    # half-GPU trials share a card: more than the two whole-GPU trials at once (all 4 on an idle machine; a busy
    # one starts their workers less together), and never more than 2 on one card
    assert most > 2, f"{most} trials trained side by side"
    assert max(per_gpu.values()) <= 2, per_gpu
    assert any(n > 1 for n in per_gpu.values()), per_gpu  # a card held more than one trial at once


@pytest.mark.e2e
def test_a_gpu_request_no_node_can_meet_fails_at_once(logical_gpus: str, tmp_path: Path) -> None:
    proc = search(
        tmp_path, logical_gpus, "--set", "search.trials=1", "--set", "resources.gpus_per_trial=3", check=False
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "segtune: error: resources.gpus_per_trial: 3 but the largest Ray node has 2 GPUs"
    )
    assert not (tmp_path / "gpu.db").exists()
