"""Where native (C++) log lines go: TensorFlow's start-up lines off the terminal.

TensorFlow and its CUDA probe write to file descriptor 2 from C++ (`I0000 ...`,
`E0000 ... failed call to cuInit`) before any Python setting can silence them;
`TF_CPP_MIN_LOG_LEVEL` does not reach all of them. `stderr_fd_to` points fd 2
at a file while a command runs, and can keep Python's own `sys.stderr` (our
one-line errors, warnings, tracebacks) on the terminal.
"""

import contextlib
import os
import sys
from typing import BinaryIO

SHOW_ENV = "PCAM_TF_LOGS"  # set to 1: native log lines stay on the terminal


@contextlib.contextmanager
def stderr_fd_to(log: BinaryIO | str | os.PathLike | None, *, keep_python: bool = False):
    """Send fd 2 (this process's and its children's native stderr) to `log` meanwhile.

    Args:
        log: a file opened for binary writing, or a path to append to; None
            leaves fd 2 alone.
        keep_python: Python's `sys.stderr` keeps writing to the terminal.
    """
    if log is None:
        yield
        return
    if not hasattr(log, "fileno"):
        with open(log, "ab") as file, stderr_fd_to(file, keep_python=keep_python):
            yield
        return
    sys.stderr.flush()
    saved, python_stderr = os.dup(2), sys.stderr
    try:
        os.dup2(log.fileno(), 2)
        if keep_python:
            sys.stderr = open(os.dup(saved), "w", buffering=1,  # noqa: SIM115 (closed below)
                              encoding=python_stderr.encoding, errors="backslashreplace")
        try:
            yield
        finally:
            if sys.stderr is not python_stderr:
                sys.stderr.close()
                sys.stderr = python_stderr
            python_stderr.flush()
            os.dup2(saved, 2)
    finally:
        os.close(saved)


def hidden() -> bool:
    """Whether a command should keep native log lines off the terminal.

    Not when `$PCAM_TF_LOGS` is set, nor when `sys.stderr` is not the process's
    own (pytest's capture, a notebook): there fd 2 is not what a person reads.
    """
    return not os.environ.get(SHOW_ENV) and sys.stderr is sys.__stderr__


def tail(log: BinaryIO, lines: int = 20) -> str:
    """The last `lines` lines written to `log` (to show beside an unexpected error)."""
    log.flush()
    log.seek(0)
    return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])
