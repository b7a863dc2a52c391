"""`segtune dashboard`: optuna-dashboard on the study store, bound to loopback unless told otherwise."""

from __future__ import annotations

import sys
from typing import Any

from segtune import store


def serve(storage_url: str, host: str = "127.0.0.1", port: int = 8080, out: Any = None) -> None:
    from optuna_dashboard import run_server

    out = out or sys.stdout
    storage = store.open_storage(storage_url, must_exist=True)
    print(f"optuna-dashboard for {store.redact(storage_url)} on http://{host}:{port}/ (Ctrl-C stops it)",
          file=out, flush=True)  # fmt: skip
    try:
        run_server(storage, host=host, port=port)
    except KeyboardInterrupt:
        pass
    except OSError as e:
        from segtune.errors import SegtuneError

        raise SegtuneError(f"--port: cannot listen on {host}:{port}: {e.strerror or e}") from None
    print("dashboard stopped", file=out, flush=True)
