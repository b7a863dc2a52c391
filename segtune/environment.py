"""What a segtune command sets for its process while it runs, and gives back when it ends.

Importing segtune sets nothing: a notebook that imports it keeps its environment, its loggers' levels and its
warning filters (Hugging Face downloads work there as before). A command (:func:`segtune.cli.main`) and a search
started from Python (:func:`segtune.search.run.run_study`) run inside :func:`command_environment`, which sets:

- ``HF_HUB_OFFLINE=1``: pretrained weights come from the local caches; a search must never stall on a download in
  every trial at once. ``SEGTUNE_DOWNLOAD_WEIGHTS=1`` (e.g. for one ``segtune check`` with network) lifts it. The
  Hugging Face Hub reads it when it is first imported, so it holds for what the command imports; Ray's trial
  workers get it with the cluster (``search/nodes/cluster.py``: :func:`for_workers`).
- ``NO_ALBUMENTATIONS_UPDATE=1``: albumentations asks the network for a newer version when it is imported.
- Optuna's verbosity at WARNING (a line per trial would bury segtune's own), and two warnings segtune has answered:
  Optuna's ExperimentalWarning (segtune uses its artifacts API on purpose) and the repeated step a resumed trial
  reports once more (search/trial/trainable.py: Optuna keeps the first value of a step, by design).

A variable the user set stands (nothing is overwritten); everything is restored when the block ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping

DOWNLOAD_ENV = "SEGTUNE_DOWNLOAD_WEIGHTS"
# A trial that goes on from its state reports its state's epoch once more (the state is saved before that epoch's
# report, which may not have landed: search/trial/trainable.py), and Optuna keeps the first value of a step.
REPEATED_STEP = r"The reported value is ignored because this `step=\d+` is already reported"


def command_variables() -> dict[str, str]:
    """The environment variables a command sets where the user has not."""
    wanted = {"NO_ALBUMENTATIONS_UPDATE": "1"}
    if os.environ.get(DOWNLOAD_ENV) != "1":
        wanted["HF_HUB_OFFLINE"] = "1"
    return wanted


# what a trial reads from its environment, passed on from the driver's (search/nodes/quiet.py: the node's costs)
TRIAL_VARIABLES = (
    "NO_ALBUMENTATIONS_UPDATE",
    "HF_HUB_OFFLINE",
    "SEGTUNE_QUIET_WAIT_S",
    "SEGTUNE_COST_TTL_S",
    "SEGTUNE_COST_REFRESH",
)


def for_workers() -> dict[str, str]:
    """The variables trials read, as the driver has them now, for the trial workers of a cluster it joins (a local
    cluster inherits the driver's environment; a remote one does not)."""
    return {name: os.environ[name] for name in TRIAL_VARIABLES if name in os.environ}


@contextlib.contextmanager
def variables(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` where they are not set, for the block; what was there before, after it."""
    before = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def logger_levels(levels: Mapping[str, int]) -> Iterator[None]:
    """Loggers at ``levels`` for the block, at their own levels after it."""
    before = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def command_environment() -> Iterator[None]:
    """The process as a segtune command wants it (the module's docstring), restored when the block ends. Nests."""
    with variables(command_variables()):
        import optuna  # after the variables: nothing it imports reads them, but its first import sets its verbosity

        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            with warnings.catch_warnings():  # the filters as they were, after the block
                warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
                warnings.filterwarnings("ignore", message=REPEATED_STEP)
                yield
        finally:
            optuna.logging.set_verbosity(verbosity)
