"""Shared plotting helpers: one colour per model, stable file names, saving.

Every figure function in `pcam.plots` returns its `Figure` (so a notebook can
show it) and, when given a path, writes a PNG sized for a README (~800 px wide).
No backend is chosen here: matplotlib picks the notebook's inline backend, or
Agg on a machine without a display.
"""

import re
from pathlib import Path

import matplotlib.pyplot as plt

DPI = 120
WIDTH_IN = 7.0  # 7 in x 120 dpi = 840 px: legible at README width
# Fixed colours per known model so every figure agrees; others cycle below.
MODEL_COLOURS = {"mobilenet": "#1f77b4", "resnet50": "#d62728"}
_EXTRA_COLOURS = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
CLASS_NAMES = ("normal (0)", "tumour in centre (1)")


def model_colour(model: str) -> str:
    """The colour used for `model` in every figure.

    Args:
        model: backbone name, e.g. "mobilenet".

    Returns:
        A matplotlib colour string; stable for a given name.
    """
    if model in MODEL_COLOURS:
        return MODEL_COLOURS[model]
    return _EXTRA_COLOURS[sum(map(ord, model)) % len(_EXTRA_COLOURS)]


def slug(name: str) -> str:
    """`name` reduced to lowercase letters, digits, `-` and `_`, for file names."""
    text = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")
    if not text:
        raise ValueError(f"name={name!r} has no usable characters for a file name")
    return text


def new_figure(nrows: int = 1, ncols: int = 1, *, height: float = 3.2, width: float = WIDTH_IN,
               **kwargs):
    """A figure and its axes at README width; `height` is per row, in inches."""
    return plt.subplots(nrows, ncols, figsize=(width, height * nrows), squeeze=False, **kwargs)


def save_figure(fig, path: str | Path | None, *, dpi: int = DPI):
    """Write `fig` as a PNG when given a path, close it in pyplot, return it.

    Args:
        fig: the matplotlib `Figure`.
        path: PNG file to write (parent folders are created); None: do not save.
        dpi: resolution of the PNG. Default `DPI` (120).

    Returns:
        `fig` itself, for a notebook to display (e.g. as a cell's last value).
        It is closed in pyplot, so loops over many figures do not keep them open.
    """
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, facecolor="white")
    plt.close(fig)
    return fig
