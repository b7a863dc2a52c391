"""`segtune dashboard`: optuna-dashboard on the study store, bound to loopback unless told otherwise."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
from typing import Any

from segtune.errors import SegtuneError
from segtune.search import store
from segtune.search.store import artifacts


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise SegtuneError(f"--port: cannot listen on {host}:{port}: {e.strerror or e}") from None


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: whatever it resolves to, it is not known to be loopback
        return False


def artifact_location(storage_url: str, storage: Any, given: str | None) -> str:
    """The artifact store to show beside the trials: ``--artifacts`` / ``$SEGTUNE_ARTIFACTS``, else the one the
    store's studies recorded when they all agree, else the default beside the SQLite file."""
    recorded = {s.user_attrs.get(artifacts.ATTR) for s in storage.get_all_studies()} - {None}
    chosen = given or os.environ.get(artifacts.ENV) or (recorded.pop() if len(recorded) == 1 else None)
    return chosen or artifacts.default_location(storage_url)


def serve(
    storage_url: str, host: str = "127.0.0.1", port: int = 8080, out: Any = None, artifacts_url: str | None = None
) -> None:
    """Serve until Ctrl-C. The server runs in a daemon thread and the main thread only waits, so
    Ctrl-C stops it at once even when it lands while the server is answering a request (wsgiref
    would swallow a KeyboardInterrupt raised inside a request handler and keep serving)."""
    from optuna_dashboard import run_server

    out = out or sys.stdout
    storage = store.open_storage(storage_url, must_exist=True)
    where = artifact_location(storage_url, storage, artifacts_url)
    artifact_store = artifacts.open_store(where)
    _check_port(host, port)
    if not is_loopback(host):
        print(
            f"warning: --host {host} is not a loopback address: anyone who can reach port {port} can read and "
            "delete the studies in this store (optuna-dashboard has no login). Inside a container published "
            "only on the host's loopback (127.0.0.1:PORT:PORT, as docker/compose.yaml does), that is this "
            "machine alone.",
            file=sys.stderr,
            flush=True,
        )
    kwargs = {"host": host, "port": port, "artifact_store": artifact_store}  # each trial's model and overlay
    server = threading.Thread(target=run_server, args=(storage,), kwargs=kwargs, daemon=True)
    server.start()
    print(
        f"optuna-dashboard for {store.redact(storage_url)} (artifacts: {where}) on http://{host}:{port}/ "
        "(Ctrl-C stops it)",
        file=out,
        flush=True,
    )
    try:
        while server.is_alive():
            server.join(0.5)
    except KeyboardInterrupt:
        pass
    print("dashboard stopped", file=out, flush=True)
