"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class SegtuneError(Exception):
    """Base of every error that is the user's input, not a bug: printed without a traceback.

    The message is one line; ``details`` are lines printed before it (each bad file of a dataset, say).
    """

    details: list[str] = []
    exit_code: int = 2


class SpecError(SegtuneError):
    """The study spec is invalid; the message starts with the YAML path of the bad field."""


class DataError(SegtuneError):
    """A dataset cannot be found or read; the message names the file or folder."""


class StoreError(SegtuneError):
    """The study store cannot be opened or does not hold what was asked for."""
