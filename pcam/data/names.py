"""How the data layer names files in its one-line messages.

`shown` quotes a name only when printing it raw would mislead: a newline or
other control character would split the `error:` line, and surrounding blanks
would vanish. `not_a_file` tells a regular file from things that only look like
one in a listing (a folder, a FIFO, a socket, a device, a broken link): opening
a FIFO blocks forever, so every reader asks first.
"""

import os
import stat


def shown(name) -> str:
    """`name` (a path or string) as written in a message: as is, or `repr` when not plain."""
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    if text.isprintable() and text == text.strip():
        return text
    return repr(text)


def not_a_file(path) -> str | None:
    """What `path` is when it is there but is not a regular file (or a link to one), else None.

    Returns:
        None for a regular file or when nothing is there; otherwise "a folder",
        "a FIFO (named pipe)", "a socket", "a device" or "a broken link".
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken link" if os.path.islink(path) else None
    except OSError:
        return None  # unreadable: the open that follows says why
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"
