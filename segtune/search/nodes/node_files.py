"""Files on another node's disk, brought to the driver through Ray (a trial's model, once the trial ended).

Its own module, importing nothing of segtune's: the task that reads the files runs in a fresh worker process on that
node, which imports the module the task is defined in. Defined beside torch and smp (search/nodes/keeper.py) it took 8 s
and more to start on a node whose trials keep its cores busy, and the node could be lost in that window.
"""

from __future__ import annotations

from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

FETCH_TIMEOUT_S = 300


@ray.remote(num_cpus=0)
def _read(paths: list[str]) -> dict[str, bytes]:
    return {Path(p).name: Path(p).read_bytes() for p in paths if Path(p).is_file()}


def fetch_files(node_id: str, paths: list[str]) -> dict[str, bytes]:
    """The files at ``paths`` on node ``node_id``, read by a task pinned to that node (it asks for no CPU, so it
    never waits for a trial slot). Raises when the node is gone."""
    strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    return ray.get(_read.options(scheduling_strategy=strategy).remote(paths), timeout=FETCH_TIMEOUT_S)


def node_alive(node_id: str) -> bool:
    """Ray still counts the node as a live member of the cluster."""
    return any(n.get("NodeID") == node_id and n.get("Alive") for n in ray.nodes())
