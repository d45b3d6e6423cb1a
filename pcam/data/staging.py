"""All-or-nothing writes of several files into a data folder.

A data folder is up to three splits (x, y and meta CSV each) and `dataset.json`
describing them; replaced one file at a time, an interruption would leave a mix
(new train beside old valid, `dataset.json` naming neither). So `pcam
synthetic` and `pcam import-images` write every new file into a staging folder
inside the data folder, `.pcam-write-<id>` (the same file system, so moving a
file in is a rename), and then commit:

1. `.commit.json` goes into the staging folder (atomically, fsynced): the files
   to move in and the old files to delete. It is the switch: before it the old
   files are untouched, after it the write counts as done.
2. The old files are deleted and the new ones renamed into place
   (`dataset.json` first), the data folder is fsynced and the staging folder
   removed. SIGINT and SIGTERM wait until this step ends (main thread).

The writer holds an exclusive `flock` on its staging folder from creation to
the end. `finish_interrupted_writes`, which the readers (`pcam.data.h5read`) and
writers call before they look at a folder, finishes any staging folder whose
lock is free (its writer died: SIGKILL, power loss): one without `.commit.json`
is deleted (the old files were never touched), one with it is committed again
(each step can be repeated). So nobody reads a half-committed folder, and the
leftovers of an interrupted write never block a rerun. Without `fcntl`
(Windows) there is no lock: run one writer per folder at a time.
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pcam.core.errors import PCamError
from pcam.core.fileio import write_text
from pcam.data.names import shown
from pcam.data.spec import DATASET_INFO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

PREFIX = ".pcam-write-"
COMMIT = ".commit.json"
_BORN = ".new"  # suffix of a staging folder whose writer is taking its lock
_WAIT_S = 60  # for another process finishing its commit (a few renames)


@dataclass(frozen=True)
class Stage:
    """A write in progress: put the new files in `path`; `write_id` tags them."""

    folder: Path  # the data folder
    path: Path  # the staging folder inside it
    write_id: str  # the writer's, else the staging folder's random id


@contextlib.contextmanager
def staged_write(folder: str | os.PathLike, delete: Iterable[str] = (),
                 write_id: str | None = None) -> Iterator[Stage]:
    """Write files into a staging folder; on a normal exit, swap them all in at once.

    Args:
        folder: the data folder; it must exist.
        delete: names of files in `folder` that the new data replace or make
            obsolete: deleted at the commit unless a file of that name was
            staged (then it is replaced).
        write_id: what `Stage.write_id` says; a writer whose output is fixed by
            its arguments derives it from them, so that the same arguments give
            the same bytes. Default: a random id.

    Yields:
        A `Stage`. Every regular file in `stage.path` whose name does not start
        with "." moves into `folder` at the commit.

    Raises:
        PCamError: the staging folder cannot be created, or the commit cannot
            be finished (it is then finished by the next reader). An exception
            in the block deletes the staging folder and leaves `folder` as it was.
    """
    folder = Path(folder)
    finish_interrupted_writes(folder)
    path, fd = _new_stage(folder)
    try:
        yield Stage(folder, path, write_id or path.name[len(PREFIX):])
        staged = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
        plan = {"move": sorted(staged, key=lambda name: name != DATASET_INFO),
                "delete": sorted(set(delete) - set(staged))}
        write_text(path / COMMIT, json.dumps(plan) + "\n")
        with _signals_deferred():
            _apply(folder, path)
    except BaseException as error:
        if (path / COMMIT).exists():
            raise  # committed: finished by the next reader
        shutil.rmtree(path, ignore_errors=True)
        if isinstance(error, PCamError) and str(path) in str(error):
            # "could not write <stage>/<name>": name the file the user knows
            raise PCamError(str(error).replace(str(path), str(folder))) from error.__cause__
        raise
    finally:
        _unlock(fd)


def finish_interrupted_writes(folder: str | os.PathLike) -> None:
    """Finish or drop the staging folders that dead writers left in `folder`.

    A committed one is moved in (one printed line), an uncommitted one deleted
    (one printed line); one whose writer still runs is left alone, or waited
    for when it is committing. Cheap when there is none (one directory scan).

    Raises:
        PCamError: a committed write cannot be finished (permissions, a full
            disk), naming the staging folder and what to do.
    """
    folder = Path(folder)
    try:
        leftovers = sorted(p for p in folder.iterdir() if p.name.startswith(PREFIX))
    except OSError:  # no folder yet, or unreadable: the caller's own access says so
        return
    for path in leftovers:
        try:
            fd = _open(path)
        except OSError:  # finished meanwhile, or not ours to open
            continue
        try:
            if not _lock(fd, wait=(path / COMMIT).exists()):
                continue  # its writer is alive and has not committed: old files intact
            if not path.is_dir() or (path.name.endswith(_BORN) and _age(path) < _WAIT_S):
                continue
            if (path / COMMIT).exists():
                _apply(folder, path)
                print(f"finished an interrupted write in {shown(folder)}: its new files are "
                      "in place", flush=True)
            else:
                shutil.rmtree(path)
                print(f"removed {shown(path)}, left by an interrupted write (the data "
                      "beside it were not changed)", flush=True)
        except OSError:
            if (path / COMMIT).exists():
                raise
            # An uncommitted leftover we may not delete (a read-only folder) is harmless.
        finally:
            _unlock(fd)


def _new_stage(folder: Path) -> tuple[Path, int | None]:
    """A new staging folder and the descriptor holding its lock."""
    born = folder / f"{PREFIX}{secrets.token_hex(6)}{_BORN}"
    try:
        born.mkdir()
        fd = _open(born)
    except OSError as error:
        raise PCamError(f"cannot create a staging folder in {shown(folder)} "
                        f"({error.strerror or error}); fix the folder's permissions or choose "
                        "another --data-dir") from None
    path = born.with_name(born.name[:-len(_BORN)])
    try:
        _lock(fd, wait=True)
        os.rename(born, path)  # the lock stays with the folder, whatever its name
    except BaseException:
        _unlock(fd)
        shutil.rmtree(born, ignore_errors=True)
        raise
    return path, fd


def _apply(folder: Path, stage: Path) -> None:
    """Carry out the commit in `stage` (again, if it was cut short)."""
    try:
        plan = json.loads((stage / COMMIT).read_text())
        names = [*plan["delete"], *plan["move"]]
        if any(not isinstance(n, str) or Path(n).name != n or n.startswith(".") for n in names):
            raise ValueError(f"unexpected file names {names!r}")
        for name in plan["delete"]:
            (folder / name).unlink(missing_ok=True)
        for name in plan["move"]:
            if (stage / name).exists():  # else moved before the interruption
                os.replace(stage / name, folder / name)
        if os.name != "nt":  # the renames survive a power cut
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        shutil.rmtree(stage)
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise PCamError(
            f"could not finish writing {shown(folder)} ({reason}); its new files wait in "
            f"{shown(stage)} and are moved in by the next pcam command that reads the folder: "
            "fix the cause (permissions, free space) and run `python -m pcam check "
            f"--data-dir {shown(folder)}`") from None


def _open(folder: Path) -> int | None:
    """A descriptor of `folder` to lock, None without `fcntl` (Windows opens no folders)."""
    return os.open(folder, os.O_RDONLY) if fcntl is not None else None


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # releases the lock


def _lock(fd: int | None, wait: bool) -> bool:
    """Take the exclusive lock on `fd`; False when another holds it (after `_WAIT_S` if `wait`)."""
    if fd is None:
        return True
    deadline = time.monotonic() + (_WAIT_S if wait else 0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                if wait:
                    raise PCamError("another process has been committing a write to this data "
                                    f"folder for {_WAIT_S} s; wait for it and rerun") from None
                return False
            time.sleep(0.05)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver the first one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught, previous = [], {}
    for number in (signal.SIGINT, signal.SIGTERM):
        previous[number] = signal.signal(number, lambda got, frame: caught.append(got))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])
