"""The matplotlib backend: `MPLBACKEND` checked before any command runs.

pcam chooses no backend (figures show inline in a notebook, and are written as
PNG files by Agg elsewhere); a `MPLBACKEND` set in the environment is used, so
it is checked like any other setting, where the command line starts.
"""

import io
import os
import sys

from pcam.core.errors import PCamError

# Backends that write PNG files with matplotlib alone (others are tried on a figure first).
_PNG_BACKENDS = ("agg", "svg", "pdf", "ps", "template", "inline",
                 "module://matplotlib_inline.backend_inline")


def check_mplbackend() -> None:
    """Refuse a `MPLBACKEND` matplotlib cannot draw a PNG with, before any command runs.

    matplotlib reads it when first imported and fails there with a traceback
    (`MPLBACKEND=nosuch`), or later at the first figure (a backend whose library
    is missing); pcam writes figures as PNG files, so that is what is tried.
    """
    name = os.environ.get("MPLBACKEND", "")
    if not name or name.lower() in _PNG_BACKENDS:
        return
    fresh = "matplotlib" not in sys.modules  # else this process has chosen its backend
    if fresh:  # import it without the setting, then apply the setting once checked
        del os.environ["MPLBACKEND"]
        try:
            import matplotlib
        finally:
            os.environ["MPLBACKEND"] = name
    import matplotlib
    from matplotlib import rcsetup

    try:
        rcsetup.validate_backend(name)
    except ValueError:
        from matplotlib.backends.registry import backend_registry

        raise PCamError(f"MPLBACKEND={name!r} is not a matplotlib backend; unset it (pcam draws "
                        "with Agg) or use one of "
                        f"{', '.join(backend_registry.list_builtin())}") from None
    try:
        if fresh:  # the backend's library may be missing: draw one figure with it
            matplotlib.rcParams["backend"] = name
            import matplotlib.pyplot as plt

            figure = plt.figure(figsize=(1, 1))
            try:
                figure.savefig(io.BytesIO(), format="png")
            finally:
                plt.close(figure)
    except Exception as error:  # any failure to draw: the setting is what to change
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PCamError(f"MPLBACKEND={name!r} is no matplotlib backend that can write a PNG "
                        f"here ({reason[:160]}); unset it (pcam draws with Agg) or use agg"
                        ) from None
