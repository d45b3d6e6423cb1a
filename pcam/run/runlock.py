"""One process at a time per run folder: the lock file `results/<run>/.lock`.

`claim_folder` creates the run folder when needed and takes its lock before
anything in it is read, written or removed; `acquire_lock` creates the file
with O_EXCL (under a `flock` of the folder, so two processes that both find a
stale lock cannot both take it over) and writes its holder into it (pid, host,
process start time, since, what it does); `release_lock` removes it, and so
does interpreter exit. A lock whose pid is gone, is a zombie, or has been
reused by another process on this host is stale and taken over; another
host's lock is never guessed at and can only be deleted by hand.

A command that runs a notebook holds the lock for its kernel: it names the
lock in `$PCAM_RUN_LOCK` ("<pid>:<lock path>"), and the kernel's
`acquire_lock` of that folder joins the lock (as a helper, listed in it)
instead of refusing it.
"""

import atexit
import contextlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

from pcam.core.errors import PCamError

LOCK = ".lock"
INHERITED = "PCAM_RUN_LOCK"  # "<pid>:<lock path>": a lock held for this process by its parent
_HELD: set[Path] = set()


def claim_folder(folder: str | os.PathLike, doing: str = "trained") -> tuple[Path, bool]:
    """Create `folder` if needed and take its lock; (lock path, whether this call made it).

    Nothing in the folder is read or written before the lock is held. A folder
    this call made but could not lock holds another process's lock: leave it.

    Raises:
        PCamError: the folder cannot be made (names it), or a live process
            holds its lock (see `acquire_lock`).
    """
    folder = Path(folder)
    for _ in range(3):  # the folder can vanish between mkdir and lock (a failed run removed)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = error.strerror or error
            raise PCamError(f"cannot write to the results folder {folder} ({reason}); free "
                            "space or choose another folder with PCAM_RESULTS_DIR") from error
        try:
            folder.mkdir()
            created = True
        except FileExistsError:
            created = False
            if not folder.is_dir():
                if folder.exists() or folder.is_symlink():
                    raise PCamError(f"{folder} is in the way of the run folder (not a folder); "
                                    "move it, or choose another --run name") from None
                continue  # removed meanwhile: make it again
        except OSError as error:
            raise PCamError(f"cannot create the run folder {folder} ({error.strerror or error}); "
                            "free space, fix the permissions or choose another results folder "
                            "(--results or PCAM_RESULTS_DIR)") from error
        try:
            return acquire_lock(folder, doing), created
        except PCamError:
            if folder.exists() or folder.is_symlink():
                raise
    raise PCamError(f"{folder} was removed and made again by other processes while this one "
                    "tried to lock it; wait for them to finish, then rerun")


def remove_claimed(folder: str | os.PathLike, lock: str | os.PathLike) -> None:
    """Delete `folder`, whose lock `lock` this process holds: its files, the lock, the folder.

    The folder itself stays when another process has locked it meanwhile.
    """
    folder = Path(folder)
    for child in folder.iterdir() if folder.is_dir() else ():
        if child.name == LOCK:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    release_lock(lock)
    with contextlib.suppress(OSError):  # not empty: someone else's lock
        folder.rmdir()


def acquire_lock(folder: str | os.PathLike, doing: str = "trained") -> Path:
    """Take `folder/.lock` for this process (`doing`: "trained", "evaluated"); its path.

    A lock its parent holds for it (`$PCAM_RUN_LOCK`) is joined, not refused.

    Raises:
        PCamError: a live process holds it (its pid, host, since when, and the
            file to delete if that process is gone).
    """
    path = Path(folder) / LOCK
    try:
        with _folder_mutex(path.parent):
            if _join_inherited(path):
                return path
            if (holder := lock_holder(path)) is None:
                path.unlink(missing_ok=True)  # none, or a stale one
                me = {"pid": os.getpid(), "host": socket.gethostname(), "doing": doing,
                      "start": _start(os.getpid()),
                      "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                with os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644),
                               "w") as f:
                    json.dump(me, f)
                if not _HELD:
                    atexit.register(lambda: [release_lock(p) for p in list(_HELD)])
                _HELD.add(path)
                return path
    except FileExistsError:  # another process took it meanwhile (one not using the mutex)
        holder = lock_holder(path) or {"pid": "?", "host": "?", "since": "just now"}
    except OSError as error:
        raise PCamError(f"cannot create {path} ({error.strerror or error}); "
                        "free space or fix the folder's permissions") from error
    raise _held(path, holder)


def refuse_if_locked(folder: str | os.PathLike) -> None:
    """Raise what `acquire_lock` would when a live process holds `folder/.lock`; take nothing.

    For checks made before a long job starts (every run of `pcam notebooks`
    before the first trains); the lock itself is taken when its run starts.
    """
    path = Path(folder) / LOCK
    if path.parent.is_dir() and (holder := lock_holder(path)) is not None:
        raise _held(path, holder)


def _held(path: Path, holder: dict) -> PCamError:
    return PCamError(
        f"run {path.parent.name} is being {holder.get('doing', 'trained')} by pid "
        f"{holder.get('pid')} on {holder.get('host')} (since {holder.get('since')}); wait for "
        f"it to finish or stop it. If no such process runs any more, delete {path}")


def inherited_by_children(lock: str | os.PathLike) -> dict[str, str]:
    """The environment that lets this process's children join its lock `lock`."""
    return {INHERITED: f"{os.getpid()}:{Path(lock).resolve()}"}


def release_lock(path: str | os.PathLike) -> None:
    """Remove the lock `path` when this process holds it; another holder's stays."""
    _HELD.discard(path := Path(path))
    holder = _read_lock(path) or {}
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def lock_holder(path: str | os.PathLike) -> dict | None:
    """The live holder of the lock file `path`, else None (no lock, or a stale one).

    This process's own lock counts as stale (an earlier run object that did not
    finish); an unreadable one as held for 30 s (it may be being written). A
    lock whose holder is gone but whose helper (a notebook's kernel) still runs
    is held by that helper.
    """
    if (holder := _read_lock(path := Path(path))) is None:
        try:
            young = time.time() - path.stat().st_mtime < 30
        except OSError:
            return None
        return {"pid": "?", "host": "?", "since": "just now"} if young else None
    if holder.get("host") != socket.gethostname():
        return holder  # another machine's processes cannot be checked
    for who in (holder, *(h for h in holder.get("helpers", []) if isinstance(h, dict))):
        if _alive(who.get("pid"), who.get("start")):
            return {**holder, "pid": who["pid"]}
    return None  # gone, zombies, this very process, or pids now another's


def _alive(pid, start) -> bool:
    found = _start(pid) if isinstance(pid, int) and pid != os.getpid() else False
    return not (found is False or (found and start and found != start))


def _join_inherited(path: Path) -> bool:
    """Whether `path` is the lock this process's parent holds for it; if so, join it."""
    pid, _, held = os.environ.get(INHERITED, "").partition(":")
    if not held or Path(held) != path.resolve():
        return False
    holder = _read_lock(path)
    if (holder is None or str(holder.get("pid")) != pid
            or holder.get("host") != socket.gethostname()
            or not _alive(holder["pid"], holder.get("start"))):
        return False
    helpers = [h for h in holder.get("helpers", []) if isinstance(h, dict)
               and h.get("pid") != os.getpid()]
    holder["helpers"] = [*helpers, {"pid": os.getpid(), "start": _start(os.getpid())}]
    temp = path.with_name(f"{LOCK}.{os.getpid()}.joining")
    temp.write_text(json.dumps(holder))
    os.replace(temp, path)  # readers see the old lock or the new, never half of one
    return True


@contextlib.contextmanager
def _folder_mutex(folder: Path):
    """Exclusive `flock` of `folder` while a lock is checked and taken (where flock works)."""
    try:
        import fcntl
    except ImportError:  # Windows: O_EXCL alone
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # a file system without flock: O_EXCL alone
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_lock(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _start(pid: int) -> int | bool | None:
    """Start of live `pid` (clock ticks since boot); False: none or a zombie; None: unknown."""
    if Path("/proc/self/stat").exists():  # Linux
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return False
        return False if fields[0] in ("Z", "X") else int(fields[19])
    try:
        if os.name != "nt":  # there os.kill would end the process
            os.kill(pid, 0)  # signal 0: only checks that it exists
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return None
