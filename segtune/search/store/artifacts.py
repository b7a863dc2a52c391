"""The artifact store: every trial's best weights (and its validation overlay), reachable from anywhere.

The study store's companion, through Optuna's artifacts (``optuna.artifacts``), so optuna-dashboard lists and
previews a trial's files beside it:

- where: ``--artifacts URL``, else ``$SEGTUNE_ARTIFACTS``, else the spec's ``artifacts``, else a folder beside the
  SQLite file (``segtune.db`` -> ``segtune-artifacts/``); ``s3://bucket/prefix`` for S3-compatible object storage
  (Optuna's ``Boto3ArtifactStore``; endpoint and credentials from the usual AWS variables, never stored or printed).
  Optuna's Boto3 store writes at the top of its bucket, so a prefix is added here (:class:`PrefixedStore`).
- who writes: the driver, at a trial's end (search/store/recorder.py through the writer thread): it reads the trial's
  files where it can (its own disk, or a disk it shares with the trial's node), else a task on that node sends
  them through Ray; then it uploads them and links them to the trial. Trials never connect to a store. A folder
  store on the run folder's filesystem holds a hard link, not a second copy (:class:`FolderStore`).
- retried like the study store's writes; an upload that finally fails makes the trial FAIL, with the reason.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta, upload_artifact

from segtune.errors import SegtuneError, StoreError
from segtune.search import store
from segtune.search.nodes.files import link_atomic

ENV = "SEGTUNE_ARTIFACTS"
MODEL = "model.pt"
OVERLAY = "overlay.png"
ATTR = "artifacts"  # the study attr holding where its artifacts are


def default_location(storage_url: str) -> str:
    """A folder beside the SQLite file; for a server store (PostgreSQL), ``segtune-artifacts`` here."""
    db = store.sqlite_path(storage_url)
    if db is not None:
        return str(db.with_name(f"{db.stem}-artifacts"))
    return str(Path("segtune-artifacts").resolve())


def location(given: str | None, spec_value: str | None, storage_url: str) -> str:
    """Where a run's artifacts go: ``--artifacts``, ``$SEGTUNE_ARTIFACTS``, the spec's, the default."""
    chosen = given or os.environ.get(ENV) or spec_value or default_location(storage_url)
    return chosen if chosen.startswith("s3://") else str(Path(chosen).expanduser().resolve())


def study_location(study: optuna.Study, given: str | None = None) -> str | None:
    """Where a study's artifacts are: ``--artifacts`` / ``$SEGTUNE_ARTIFACTS``, else what its run recorded."""
    return given or os.environ.get(ENV) or study.user_attrs.get(ATTR)


class PrefixedStore:
    """An artifact store whose ids live under a key prefix: ``s3://bucket/team/st`` -> keys ``team/st/ID``."""

    def __init__(self, inner: Any, prefix: str):
        self.inner, self.prefix = inner, prefix.strip("/")

    def _key(self, artifact_id: str) -> str:
        return f"{self.prefix}/{artifact_id}" if self.prefix else artifact_id

    def open_reader(self, artifact_id: str) -> Any:
        return self.inner.open_reader(self._key(artifact_id))

    def write(self, artifact_id: str, content_body: Any) -> None:
        self.inner.write(self._key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(self._key(artifact_id))


def open_store(where: str) -> Any:
    """The artifact store at ``where``: a folder, or ``s3://bucket/prefix``."""
    if where.startswith("s3://"):
        bucket, _, prefix = where.removeprefix("s3://").partition("/")
        if not bucket:
            raise StoreError(f"--artifacts: {where!r} names no bucket (s3://bucket/prefix)")
        try:
            import boto3
            from optuna.artifacts import Boto3ArtifactStore
        except ImportError:
            raise SegtuneError('--artifacts: an s3:// store needs boto3: pip install "segtune[s3]"') from None
        return PrefixedStore(Boto3ArtifactStore(bucket, client=boto3.client("s3")), prefix)
    folder = Path(where)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"--artifacts: cannot make folder {folder}: {e.strerror or e}") from None
    return FolderStore(folder)


class FolderStore(FileSystemArtifactStore):
    """Optuna's folder store (same layout, so optuna-dashboard reads it), keeping an uploaded file once on disk: a
    hard link to it when it is on the store's filesystem (``search.files.link_atomic``), else a copy. Every trial's
    model stays in its run folder too, and the two copies doubled a search's disk (6.2 GB for a 61-trial search of
    ResNet-34 and EfficientNet-B0 models). Deleting the run folder leaves the stored file whole."""

    def __init__(self, folder: Path):
        super().__init__(folder)
        self.folder = folder

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        source = getattr(content_body, "name", None)  # upload_artifact passes the file it opened
        named = Path(artifact_id).name == artifact_id and artifact_id not in {"", ".", ".."}
        if isinstance(source, str) and named and link_atomic(Path(source), self.folder / artifact_id):
            return
        super().write(artifact_id, content_body)  # a copy


def _transient(error: BaseException) -> bool:
    """An artifact store that did not answer (a dropped connection, a server restarting): worth another try."""
    names = {type(e).__name__ for e in (error, error.__cause__, error.__context__) if e is not None}
    return bool(names & {"EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError"})


def upload(study: optuna.Study, number: int, path: Path, artifact_store: Any) -> str:
    """``path`` into the artifact store, linked to trial ``number`` (retried like the study store's writes)."""
    handle = store.trial_handle(study, number)
    mimetype = "image/png" if path.suffix == ".png" else "application/octet-stream"

    def call(attempt: int) -> str:
        return upload_artifact(
            artifact_store=artifact_store, file_path=str(path), study_or_trial=handle, mimetype=mimetype
        )

    try:
        return store.with_retries(
            f"upload of {path.name}", call, transient=lambda e: _transient(e) or store.transient(e)
        )
    except store.StoreUnavailable as e:
        if store.transient(e.__cause__ or e):
            raise  # the study store is down: the search stops (exit 75) and --resume goes on
        raise StoreError(f"the artifact store did not answer: {e}") from None


def files_of(study: optuna.Study, number: int) -> dict[str, str]:
    """The files linked to trial ``number``: name -> artifact id (the latest, if one was uploaded twice)."""
    metas = get_all_artifact_meta(store.trial_handle(study, number))
    return {m.filename: m.artifact_id for m in metas}


def fetch(study: optuna.Study, number: int, name: str, artifact_store: Any, folder: Path | None = None) -> Path:
    """Trial ``number``'s file ``name`` from the artifact store, downloaded into ``folder``, else into a temporary
    folder that goes when the process ends (the caller reads the file until then; a model is tens of MB, and every
    `predict STUDY` left one behind)."""
    ids = files_of(study, number)
    if name not in ids:
        raise StoreError(f"trial {number} of study {study.study_name!r} has no {name} in the artifact store")
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix=f"segtune-{study.study_name}-{number}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    target = folder / name
    if target.exists():
        target.unlink()
    try:
        download_artifact(artifact_store=artifact_store, file_path=str(target), artifact_id=ids[name])
    except Exception as e:  # noqa: BLE001 - a store's errors come in many types; all mean "not fetched"
        raise StoreError(f"trial {number}: cannot fetch {name} from the artifact store: {str(e)[:200]}") from None
    return target
