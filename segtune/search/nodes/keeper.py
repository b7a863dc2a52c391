"""Where a trial's resumable state lives: on the driver's disk, whichever node trained it.

A trial saves its state (search/trial/trainable.py: weights, optimizer, scheduler, scaler, its best epoch and history,
from ``training.loop.snapshot``) every ``train.checkpoint_every`` epochs. A node can be lost with everything on its
disk, so the state goes where the driver is: straight into the run's ``states/`` folder when the trial's node
shares the driver's disk (a token the driver wrote there says so, see :func:`shared_with_driver`), else as bytes
through Ray to the :class:`StateKeeper`, an actor that lives on the driver's node and writes them there. When
Tune restarts the trial on another node (its node was lost), or ``--resume`` re-runs a trial a dead driver left,
the trial asks the keeper for the state and goes on from it.
"""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from segtune.search.nodes.files import link_atomic, write_atomic

TOKEN_FILE = ".segtune-driver-token"
STATES = "states"  # the run folder's subfolder of resumable states (on the driver's disk)


def write_token(folder: Path) -> str:
    """A token only this run's driver knows, in ``folder``: a trial that reads it back shares the driver's disk
    (a folder of the same name on a worker's own disk holds no such token)."""
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    (folder / TOKEN_FILE).write_text(token)
    return token


def shared_with_driver(folder: Path, token: str) -> bool:
    try:
        return (Path(folder) / TOKEN_FILE).read_text() == token
    except OSError:
        return False


def dumps(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def loads(data: bytes) -> dict[str, Any]:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


@ray.remote(num_cpus=0)
class StateKeeper:
    """On the driver's node: writes the states trials send, and hands them back (to a trial restarted elsewhere)."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def save(self, number: int, epoch: int, data: bytes, files: dict[str, bytes] | None = None) -> str:
        for name, content in (files or {}).items():  # its best epoch's files, when they changed
            write_atomic(self.folder / f"trial_{number:04d}.{name}", content)
        path = self.folder / f"trial_{number:04d}.e{epoch:04d}.state"
        write_atomic(path, data)
        for old in self.folder.glob(f"trial_{number:04d}.e*.state"):
            if old != path:
                old.unlink(missing_ok=True)
        return str(path)

    def save_files(self, number: int, files: dict[str, bytes]) -> None:
        """The best epoch's files without a state: those of a trial's last epoch (:meth:`StateSaver.send_best`)."""
        for name, content in files.items():
            write_atomic(self.folder / f"trial_{number:04d}.{name}", content)

    def latest(self, number: int) -> tuple[bytes, dict[str, bytes]] | None:
        found = latest_state(self.folder, number)
        return (found[1].read_bytes(), best_files(self.folder, number)) if found else None

    def load(self, path: str) -> tuple[bytes, dict[str, bytes]] | None:
        """The state at ``path`` on the driver's disk (for ``--resume``, a dead driver's), and the best epoch's files
        its trial sent beside it."""
        try:
            return Path(path).read_bytes(), files_beside(Path(path))
        except OSError:
            return None


def start_keeper(folder: Path) -> Any:
    """The keeper, pinned to the driver's own node (a driver that joined as a node without CPUs included)."""
    here = ray.get_runtime_context().get_node_id()
    strategy = NodeAffinitySchedulingStrategy(node_id=here, soft=False)
    return StateKeeper.options(scheduling_strategy=strategy).remote(str(folder))


BEST_FILES = ("model.pt", "overlay.png")  # a trial's best epoch: what its end uploads


def best_files(folder: Path, number: int) -> dict[str, bytes]:
    """The best epoch's files a trial sent beside its states."""
    out = {}
    for name in BEST_FILES:
        path = Path(folder) / f"trial_{number:04d}.{name}"
        if path.is_file():
            out[name] = path.read_bytes()
    return out


def files_beside(state: Path) -> dict[str, bytes]:
    """The best epoch's files of the trial whose state is at ``state`` (``trial_0007.e0003.state``)."""
    try:
        number = int(state.name.split(".")[0].removeprefix("trial_"))
    except ValueError:
        return {}
    return best_files(state.parent, number)


def latest_state(folder: Path, number: int) -> tuple[int, Path] | None:
    """The newest state of trial ``number`` in ``folder`` (its epoch is in its name), if there is one."""
    found = []
    for path in Path(folder).glob(f"trial_{number:04d}.e*.state"):
        try:
            found.append((int(path.name.split(".e")[1].split(".")[0]), path))
        except (IndexError, ValueError):
            continue
    return max(found) if found else None


class StateSaver:
    """A trial's side: each state written in the background (training goes on), to the driver's disk, the newest
    kept, with the files of the trial's best epoch when they changed (a trial restarted on another node has them
    back). Straight into the run's ``states/`` folder when the trial shares the driver's disk, else through the
    keeper. One save at a time: a new one waits for the last."""

    def __init__(self, folder: Path, number: int, keeper: Any, shared: bool, best: Path):
        self.folder, self.number, self.keeper, self.shared = Path(folder), number, keeper, shared
        self.best = Path(best)  # the trial's folder, where its best epoch's files are
        self._thread: threading.Thread | None = None
        self._sent: dict[str, float] = {}  # file name -> the modification time last sent
        self.error: BaseException | None = None
        self.seconds = 0.0  # spent writing states (in the background)
        self.saved_epoch = 0

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(epoch, state), daemon=True)
        self._thread.start()

    def _changed(self) -> list[str]:
        """The best epoch's files that changed since they were last sent."""
        out = []
        for name in BEST_FILES:
            path = self.best / name
            if path.is_file() and self._sent.get(name) != path.stat().st_mtime:
                self._sent[name] = path.stat().st_mtime
                out.append(name)
        return out

    def _read(self, names: list[str]) -> dict[str, bytes]:
        return {name: (self.best / name).read_bytes() for name in names}

    def _write(self, epoch: int, state: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            changed = self._changed()
            name = f"trial_{self.number:04d}.e{epoch:04d}.state"
            if self.shared:  # straight to the file: no second copy of a few hundred MB in memory
                for file_name in changed:  # a link to the trial's own file where one can be made: no second copy
                    source, kept = self.best / file_name, self.folder / f"trial_{self.number:04d}.{file_name}"
                    if not link_atomic(source, kept):
                        write_atomic(kept, source.read_bytes())
                partial = self.folder / f"{name}.partial"
                self.folder.mkdir(parents=True, exist_ok=True)
                torch.save(state, partial)
                os.replace(partial, self.folder / name)
                for old in self.folder.glob(f"trial_{self.number:04d}.e*.state"):
                    if old.name != name:
                        old.unlink(missing_ok=True)
            else:
                ray.get(self.keeper.save.remote(self.number, epoch, dumps(state), self._read(changed)))
            self.saved_epoch = epoch
        except BaseException as e:  # noqa: BLE001 - a lost state costs a restart from an older one, not the trial
            self.error = e
        finally:
            self.seconds += time.perf_counter() - started

    def send_best(self) -> None:
        """At the trial's last epoch, before its last report: its best epoch's files, if they changed since the last
        state, to the keeper. No state follows a last epoch, and the driver fetches the model from the trial's node
        only after that report: a node lost in between would otherwise take an improvement made in the last epoch
        with it. A trial on the driver's disk has nothing to send (the driver reads its folder)."""
        self.wait()
        if self.shared:
            return
        try:
            changed = self._changed()
            if changed:
                ray.get(self.keeper.save_files.remote(self.number, self._read(changed)))
        except Exception as e:  # noqa: BLE001 - the model is still on the node; only the fallback copy is missing
            self.error = e

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def load_state(
    folder: Path, number: int, keeper: Any, shared: bool, best: Path, path: str | None = None
) -> dict[str, Any] | None:
    """The state a trial goes on from: ``path`` (a dead driver's trial, for ``--resume``), else the newest this
    run saved for trial ``number`` (Tune restarted it after its node was lost, or a rung promoted it); None when
    there is none. The best epoch's files that came with it are put back into ``best`` (the trial's folder)."""
    files: dict[str, bytes] = {}
    if path is None:
        if shared:
            found = latest_state(folder, number)
            data = found[1].read_bytes() if found else None
            files = best_files(folder, number) if found else {}
        else:
            got = ray.get(keeper.latest.remote(number))
            data, files = got if got is not None else (None, {})
    elif shared and Path(path).is_file():
        data, files = Path(path).read_bytes(), files_beside(Path(path))
    else:
        got = ray.get(keeper.load.remote(path))
        if got is None:
            raise FileNotFoundError(f"the state to resume from, {path}, is not on the driver's disk")
        data, files = got
    if data is None:
        return None
    for name, content in files.items():
        if not (Path(best) / name).is_file():
            write_atomic(Path(best) / name, content)
    return loads(data)


def kept_best_files(folder: Path, number: int, best_epoch: int) -> dict[str, bytes] | None:
    """The best epoch's files trial ``number`` sent beside its states (:class:`StateSaver`), when they are those of
    ``best_epoch``; None when none came or they are of an earlier best (the state before its best epoch came last)."""
    files = best_files(folder, number)
    if "model.pt" not in files:
        return None
    epoch = torch.load(io.BytesIO(files["model.pt"]), map_location="cpu", weights_only=True).get("epoch")
    return files if epoch == best_epoch else None
