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
  store holds a file of its own: a reflink (the filesystem shares the blocks until either file is written) where the
  filesystem has them, else a copy (:class:`FolderStore`).
- retried like the study store's writes; an upload that finally fails makes the trial FAIL, with the reason.
- checked: the model's sha256 is recorded on the trial when it is uploaded (:data:`SHA256_ATTR`), and every read of
  a trial's model, from its run folder or from the store, is compared with it (:func:`verify`).
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta, upload_artifact

from segtune.errors import SegtuneError, StoreError
from segtune.search import store

ENV = "SEGTUNE_ARTIFACTS"
MODEL = "model.pt"
OVERLAY = "overlay.png"
ATTR = "artifacts"  # the study attr holding where its artifacts are
SHA256_ATTR = "model_sha256"  # the trial attr holding the sha256 of the model uploaded at its end
FICLONE = 0x40049409  # Linux's ioctl: the target file shares the source's blocks, copied when either is written


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
    """Optuna's folder store (same layout, so optuna-dashboard reads it), holding every uploaded file as a file of its
    own, never the run folder's: a ``torch.save`` over a run folder's ``model.pt`` truncates and rewrites that file,
    and a store that held it as a hard link (the same file) changed with it, without a word. Where the filesystem
    has reflinks (XFS, Btrfs, bcachefs) the stored file shares the run folder's blocks until either is written, which
    costs no disk; elsewhere (ext4, overlayfs, tmpfs) it is a copy: every trial's model on disk twice (README, "Where
    models go"). Written whole or not at all."""

    def __init__(self, folder: Path):
        super().__init__(folder)
        self.folder = folder

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if Path(artifact_id).name != artifact_id or artifact_id in {"", ".", ".."}:
            super().write(artifact_id, content_body)  # Optuna's own check refuses it
            return
        target = self.folder / artifact_id
        partial = target.with_name(f"{artifact_id}.partial")
        with open(partial, "wb") as f:
            if not _reflink(content_body, f):
                content_body.seek(0)
                shutil.copyfileobj(content_body, f, length=16 << 20)
        os.replace(partial, target)


def _reflink(source: BinaryIO, target: BinaryIO) -> bool:
    """``target`` made to share ``source``'s blocks (copy-on-write); False where the filesystem cannot."""
    try:
        fcntl.ioctl(target.fileno(), FICLONE, source.fileno())
    except (OSError, ValueError, AttributeError):  # no reflinks here, another filesystem, no file behind the stream
        return False
    return True


def sha256(path: Path) -> str:
    """The file's sha256, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def record_hash(study: optuna.Study, number: int, digest: str) -> None:
    """Trial ``number``'s model, as uploaded: what every later read of it is compared with."""
    store.trial_handle(study, number).set_user_attr(SHA256_ATTR, digest)


def stored_file(study: optuna.Study, number: int, where: str | None) -> str | None:
    """Trial ``number``'s stored model, named: a folder store's path, an ``s3://`` key; None where none is stored."""
    artifact_id = files_of(study, number).get(MODEL) if where is not None else None
    return f"{where.rstrip('/')}/{artifact_id}" if where is not None and artifact_id is not None else None


def verify(study: optuna.Study, number: int, path: Path, other: str) -> None:
    """Refuses ``path`` as trial ``number``'s model unless it is the model uploaded at the trial's end (the sha256
    recorded then); ``other`` (a clause) names the other file. A trial stored before hashes were recorded has none
    to compare with."""
    recorded = study.trials[number].user_attrs.get(SHA256_ATTR)
    if recorded is None:
        return
    found = sha256(path)
    if found != recorded:
        raise StoreError(
            f"trial {number}'s model {path} is not the model stored at the trial's end (its sha256 {found[:16]}, "
            f"recorded {recorded[:16]}); {other}"
        )


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
