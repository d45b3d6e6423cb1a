"""Data and model figures: sample patches per class, augmentations, model diagrams."""

import shutil
import warnings
from pathlib import Path

import numpy as np
from matplotlib.patches import Rectangle

from pcam.data.spec import CENTER_SIZE, PATCH_SHAPE
from pcam.plots.common import CLASS_NAMES, new_figure, save_figure


def draw_center_box(ax, *, colour: str = "yellow") -> None:
    """Outline the central 32x32 region (the one the label is about) on a patch axis."""
    lo = (PATCH_SHAPE[0] - CENTER_SIZE) / 2 - 0.5
    ax.add_patch(Rectangle((lo, lo), CENTER_SIZE, CENTER_SIZE, fill=False, ec=colour,
                           lw=1, ls="--"))


def _show_patch(ax, image, title: str | None = None, *, box: bool = True) -> None:
    ax.imshow(np.asarray(image, dtype=np.uint8))
    if box:
        draw_center_box(ax)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def plot_sample_grid(images, labels, path: str | Path | None = None, *, per_class: int = 8,
                     seed: int = 0):
    """A grid of random patches: one row per class, central 32x32 outlined.

    Args:
        images: uint8 array (N, 96, 96, 3).
        labels: array (N,) of 0/1.
        path: PNG file to write, e.g. `images/mobilenet_samples.png`; None: do not save.
        per_class: patches shown per class (fewer when the class has fewer).
        seed: seed of the random choice.

    Returns:
        The matplotlib `Figure`.
    """
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"images {images.shape} and labels {labels.shape} do not match")
    rng = np.random.default_rng(seed)
    fig, axes = new_figure(2, per_class, height=7.0 / per_class + 0.3)
    for label, row in enumerate(axes):
        index = np.flatnonzero(labels == label)
        chosen = np.sort(rng.choice(index, min(per_class, len(index)), replace=False))
        for col, ax in enumerate(row):
            if col < len(chosen):
                _show_patch(ax, images[chosen[col]])
            else:
                ax.axis("off")
        row[0].set_ylabel(CLASS_NAMES[label], fontsize=7)
    fig.suptitle("Sample patches per class (dashed: central 32x32 that defines the label)",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_augmentations(patch, path: str | Path | None = None, *, seed: int = 0):
    """One patch under each training augmentation (`pcam.data.augment.augmentation_examples`).

    Args:
        patch: uint8 array (96, 96, 3).
        path: PNG file to write, e.g. `images/augmentations.png`; None: do not save.
        seed: seed passed to the augmentations.

    Returns:
        The matplotlib `Figure`.
    """
    from pcam.data.augment import augmentation_examples

    examples = augmentation_examples(np.asarray(patch), seed)
    items = list(examples.items()) if isinstance(examples, dict) else list(examples)
    if not items or items[0][0] != "original":
        items.insert(0, ("original", patch))
    ncols = min(len(items), 6)
    nrows = -(-len(items) // ncols)
    fig, axes = new_figure(nrows, ncols, height=7.0 / ncols + 0.4)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, image) in zip(axes.flat, items, strict=False):
        ax.axis("on")
        _show_patch(ax, np.asarray(image), name)
    fig.suptitle("One patch under each augmentation (dashed: central 32x32)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _graphviz_problem() -> str | None:
    try:
        import pydot  # noqa: F401
    except ImportError:
        return "pydot is not installed (`pip install pydot`)"
    if shutil.which("dot") is None:
        return "graphviz's `dot` is not on PATH (`apt-get install graphviz`)"
    return None


def plot_model_diagram(model, path: str | Path, *, expand_nested: bool = False,
                       dpi: int = 96) -> Path | None:
    """Draw `model` with `keras.utils.plot_model` (layer names and shapes).

    Without pydot or graphviz this warns and returns None instead of failing,
    so a notebook still runs on a machine without them.

    Args:
        model: a built Keras model.
        path: PNG file to write, e.g. `images/mobilenet_model.png`.
        expand_nested: also draw the layers inside the nested "backbone" model.
        dpi: resolution of the PNG.

    Returns:
        The written path, or None when the diagram could not be drawn.
    """
    import keras

    problem = _graphviz_problem()
    if problem is None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            keras.utils.plot_model(model, to_file=str(path), show_shapes=True,
                                   show_layer_names=True, expand_nested=expand_nested, dpi=dpi)
        except (ImportError, OSError) as error:
            problem = str(error)
    if problem is not None or not Path(path).exists():
        warnings.warn(f"model diagram skipped: {problem or 'plot_model wrote nothing'}",
                      stacklevel=2)
        return None
    return Path(path)
