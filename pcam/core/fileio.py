"""File chores shared by every layer: atomic writes and file digests.

Every file the project writes whole (records, checkpoints, predictions, HDF5
splits, the README block, download stamps) goes through `atomic_path`: the content is
written to a temporary file in the destination's folder, flushed to disk
(fsync), and renamed over the destination (`os.replace`, atomic on POSIX and
Windows). A crash, a kill or a full disk leaves either the old file or the new
one, never half of one, and the temporary file is removed on any failure.
Files that grow as a run goes (Keras' `history.csv`, TensorBoard events, the
kernel log, a resumable `.part` download) are appended in place on purpose;
docs/DESIGN.md lists them.
"""

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from pcam.core.errors import PCamError

_CHUNK = 1 << 22  # 4 MiB reads: hashing runs at disk speed


def temp_name(path: Path) -> Path:
    """The temporary sibling `atomic_path` writes first, e.g. `.best.keras.1a2b3c.tmp.keras`.

    The destination's suffix is kept at the end: Keras and h5py choose the
    format from it.
    """
    return path.with_name(f".{path.name}.{secrets.token_hex(3)}.tmp{path.suffix}")


def stale_temps(path: str | os.PathLike) -> list[Path]:
    """Temporary files of `path` left behind by a killed process (safe to delete)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp{path.suffix}"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` atomically.

    Args:
        path: the destination file; its folder must exist.

    Yields:
        A path in the same folder (same file system, so the rename is atomic),
        ending in the destination's suffix.

    Raises:
        PCamError: naming `path`, when writing, syncing or renaming fails with
            an `OSError` (full disk, permissions); the previous version of
            `path` is kept and the temporary file removed. Other exceptions
            propagate unchanged, also after removing the temporary file.

    Example:
        >>> with atomic_path("results/run/checkpoints/best.keras") as temp:
        ...     model.save(temp)
    """
    if os.path.islink(path):  # replace the file the link names, not the link
        path = os.path.realpath(path)
    path = Path(path)
    temp = temp_name(path)
    try:
        yield temp
        _fsync(temp)
        os.replace(temp, path)
        _fsync(path.parent)
    except BaseException as error:
        temp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            reason = error.strerror or str(error)
            raise PCamError(f"could not write {path} ({reason}); the previous version is kept "
                            "(if there was one). Free space or fix the folder's permissions, "
                            "then rerun") from error
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_path`); returns `path`."""
    with atomic_path(path) as temp:
        temp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_path`); returns `path`."""
    return write_bytes(path, text.encode("utf-8"))


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 4 MiB chunks ("md5", "sha256", ...)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    # Folders too, so that the rename itself survives a power cut (not on Windows).
    if path.is_dir() and os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
