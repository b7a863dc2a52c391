"""docker/ as files: what the compose stack and the Dockerfile promise users (docker/smoke.sh runs them for real)."""

from __future__ import annotations

import re

import yaml

from tests.conftest import REPO

DOCKER = REPO / "docker"


def test_compose_wires_store_head_workers_driver_and_dashboard() -> None:
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    assert set(services) == {"postgres", "ray-head", "ray-worker", "driver", "dashboard"}
    pg = services["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"]) and pg["volumes"][0].startswith("pgdata:")
    assert "--num-cpus=0" in services["ray-head"]["command"]  # the head schedules; trials land on workers
    worker = services["ray-worker"]
    assert "--address=ray-head:6379" in worker["command"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "replicas" not in worker.get("deploy", {})  # --scale ray-worker=N decides
    driver = services["driver"]
    assert driver["command"][:2] == ["segtune", "run"] and {"--resume", "--address"} <= set(driver["command"])
    for name in ("driver", "dashboard"):  # the store's URL with its password comes from the environment
        assert "SEGTUNE_STORAGE" in services[name]["environment"]
        assert not any("postgresql" in str(arg) for arg in services[name]["command"])
    assert services["dashboard"]["ports"] == ["127.0.0.1:8080:8080"]
    assert "change-me" not in (DOCKER / "compose.yaml").read_text()  # secrets come from .env


def test_overrides_give_cpu_workers_and_local_images() -> None:
    cpu = yaml.safe_load((DOCKER / "compose.cpu.yaml").read_text())["services"]
    assert set(cpu) == {"ray-worker-cpu"} and "deploy" not in cpu["ray-worker-cpu"]
    assert "--address=ray-head:6379" in cpu["ray-worker-cpu"]["command"]
    local = yaml.safe_load((DOCKER / "compose.local.yaml").read_text())["services"]
    assert local["postgres"]["build"]["context"] == "postgres"
    entrypoint = (DOCKER / "postgres" / "entrypoint.sh").read_text()
    for variable in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "PGDATA"):
        assert variable in entrypoint


def test_dockerfile_is_cuda_based_non_root_and_copies_what_exists() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=nvidia/cuda:\S+-runtime", text, re.M) and re.search(r"^FROM \$\{BASE\}", text, re.M)
    assert re.search(r"^USER segtune$", text, re.M)
    torch = re.search(r"ARG TORCH=(\S+)", text).group(1)
    vision = re.search(r"ARG TORCHVISION=(\S+)", text).group(1)
    major, minor = (int(x) for x in torch.split(".")[:2])
    assert vision.split(".")[:2] == ["0", str(minor + 15)] and major == 2  # torchvision 0.(N+15) pairs torch 2.N
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for src in line.split()[:-1]:
            assert (REPO / src).exists(), src


def test_the_image_users_build_has_the_torch_every_test_runs() -> None:
    """The Dockerfile's default torch / torchvision pair is the one installed here (what CI's tests and
    docker/smoke.sh run); the CUDA-index build is an override, and smoke.sh builds the default."""
    from importlib import metadata

    dockerfile = (DOCKER / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(.*)$", dockerfile, flags=re.M))
    installed = {name: metadata.version(name).split("+")[0] for name in ("torch", "torchvision")}
    assert (args["TORCH"], args["TORCHVISION"]) == (installed["torch"], installed["torchvision"])
    assert args["TORCH_INDEX"] in ("", "''", '""')  # PyPI
    assert "--build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128" in dockerfile  # the documented override
    smoke = (DOCKER / "smoke.sh").read_text()
    assert "TORCH_INDEX" not in smoke and not re.search(r"SMOKE_TORCH:-", smoke)  # no pair of its own
