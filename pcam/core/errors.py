"""The one exception type for mistakes a user can fix, and the line printed for one."""


class PCamError(Exception):
    """A user error: bad data, a bad setting, a missing file.

    The message names the file or value and says what to do. The command line
    prints it without a traceback and exits with status 2.
    """


def user_message(error: BaseException) -> str | None:
    """The one line to print for `error` when a user can fix its cause, else None.

    A `PCamError`; an `OSError` (a full disk, permissions: its cause and file);
    or a `PCamError` that TensorFlow wrapped: one raised inside the input
    pipeline's `tf.numpy_function` (a corrupt chunk met by `fit` or `predict`)
    comes back as `tf.errors.UnknownError` whose text holds "PCamError: <message>".
    """
    if isinstance(error, PCamError):
        return str(error)
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror or error}{where}; fix it and rerun"
    # A notebook's exception as papermill reports it: judged by its own value, never by
    # the traceback text, whose source lines (docstrings) may mention "PCamError: ...".
    evalue = getattr(error, "evalue", None)
    return wrapped_message(evalue if isinstance(evalue, str) else str(error))


def wrapped_message(text: str) -> str | None:
    """The `PCamError` message inside another error's text (see `user_message`), or None."""
    import re

    found = re.search(r"PCamError: (.+)", text)
    return found.group(1).strip() if found else None
