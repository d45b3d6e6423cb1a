"""The one exception type for mistakes a user can fix."""


class PCamError(Exception):
    """A user error: bad data, a bad setting, a missing file.

    The message names the file or value and says what to do. The command line
    prints it without a traceback and exits with status 2.
    """
