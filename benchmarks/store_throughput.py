"""How fast the driver can write a study's truth into the store: the figure behind the README's sizing section.

Only the driver writes to the store (trials report to it through Ray), once per trial epoch: one
intermediate value and one user attr, the writes StoreRecorder makes. This measures those writes per
second, and a whole trial's life (ask, 8 user attrs, N epochs, tell), on SQLite and PostgreSQL.

    python benchmarks/store_throughput.py --storage sqlite:///bench.db
    python benchmarks/store_throughput.py --storage postgresql+psycopg://user:pw@127.0.0.1/db
"""

from __future__ import annotations

import argparse
import time
import uuid

import optuna

from segtune.search import store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()
    storage = store.open_storage(args.storage)
    study = optuna.create_study(study_name=f"bench-{uuid.uuid4().hex[:8]}", storage=storage, direction="maximize")
    epoch_writes, epoch_s, started = 0, 0.0, time.perf_counter()
    for i in range(args.trials):
        trial = study.ask()
        for key in ("run_id", "driver_host", "driver_pid", "ray_trial_id", "config", "node_id", "node_ip", "pid"):
            trial.set_user_attr(key, f"{key}-{i}")
        handle = store.trial_handle(study, trial.number)
        t0 = time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            handle.report(0.01 * epoch, step=epoch)
            handle.set_user_attr("epochs_run", epoch)
        epoch_s += time.perf_counter() - t0
        epoch_writes += args.epochs
        study.tell(trial.number, 0.5)
    total = time.perf_counter() - started
    print(f"store: {store.redact(args.storage)}")
    print(f"epoch reports per second (one value + one attr): {epoch_writes / epoch_s:,.0f}")
    print(f"trials per second, whole life ({args.epochs} epochs each): {args.trials / total:,.1f}")
    optuna.delete_study(study_name=study.study_name, storage=storage)


if __name__ == "__main__":
    main()
