"""One process at a time per run folder: the lock file `results/<run>/.lock`.

`acquire_lock` creates the file with O_EXCL and writes its holder into it (pid,
host, process start time, since, what it does); `release_lock` removes it, and
so does interpreter exit. A lock whose pid is gone, is a zombie, or has been
reused by another process on this host is stale and taken over; another host's
lock is never guessed at and can only be deleted by hand.
"""

import atexit
import json
import os
import socket
import time
from pathlib import Path

from pcam.errors import PCamError

LOCK = ".lock"
_HELD: set[Path] = set()


def acquire_lock(folder: str | os.PathLike, doing: str = "trained") -> Path:
    """Take `folder/.lock` for this process (`doing`: "trained", "evaluated"); its path.

    Raises:
        PCamError: a live process holds it (its pid, host, since when, and the
            file to delete if that process is gone).
    """
    path = Path(folder) / LOCK
    if (holder := lock_holder(path)) is None:
        path.unlink(missing_ok=True)  # none, or a stale one
        me = {"pid": os.getpid(), "host": socket.gethostname(), "doing": doing,
              "start": _start(os.getpid()), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                  time.gmtime())}
        try:
            with os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), "w") as f:
                json.dump(me, f)
        except FileExistsError:  # another process took it meanwhile
            holder = lock_holder(path) or {"pid": "?", "host": "?", "since": "just now"}
        except OSError as error:
            raise PCamError(f"cannot create {path} ({error.strerror or error}); "
                            "free space or fix the folder's permissions") from error
        else:
            if not _HELD:
                atexit.register(lambda: [release_lock(p) for p in list(_HELD)])
            _HELD.add(path)
            return path
    raise PCamError(
        f"run {path.parent.name} is being {holder.get('doing', 'trained')} by pid "
        f"{holder.get('pid')} on {holder.get('host')} (since {holder.get('since')}); wait for "
        f"it to finish or stop it. If no such process runs any more, delete {path}")


def release_lock(path: str | os.PathLike) -> None:
    """Remove the lock `path` when this process holds it; another holder's stays."""
    _HELD.discard(path := Path(path))
    holder = _read_lock(path) or {}
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def lock_holder(path: str | os.PathLike) -> dict | None:
    """The live holder of the lock file `path`, else None (no lock, or a stale one).

    This process's own lock counts as stale (an earlier run object that did not
    finish); an unreadable one as held for 30 s (it may be being written).
    """
    if (holder := _read_lock(path := Path(path))) is None:
        try:
            young = time.time() - path.stat().st_mtime < 30
        except OSError:
            return None
        return {"pid": "?", "host": "?", "since": "just now"} if young else None
    if holder.get("host") != socket.gethostname():
        return holder  # another machine's processes cannot be checked
    pid = holder.get("pid")
    start = _start(pid) if isinstance(pid, int) and pid != os.getpid() else False
    if start is False or (start and holder.get("start") and start != holder["start"]):
        return None  # gone, a zombie, this very process, or its pid now another's
    return holder


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
