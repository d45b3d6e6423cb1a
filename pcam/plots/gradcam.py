"""Grad-CAM overlays: where each model found evidence, for TP, FP, FN and TN patches."""

from pathlib import Path

import matplotlib
import numpy as np

from pcam.evaluation.gradcam import CASE_TITLES, CASES, gradcam
from pcam.plots.common import new_figure, save_figure
from pcam.plots.data import draw_center_box


def plot_gradcam_grid(model, images, y_prob, cases: dict[str, np.ndarray],
                      path: str | Path | None = None, *, title: str = "Grad-CAM",
                      alpha: float = 0.6):
    """Grad-CAM overlays in a grid: one row per case (TP, FP, FN, TN).

    Args:
        model: the Keras model the maps are computed for.
        images: patches indexable by the indices in `cases` (array or dict).
        y_prob: the model's probabilities, indexable the same way.
        cases: output of `select_cases`.
        path: PNG file to write, e.g. `images/mobilenet_gradcam.png`; None: do not save.
        title: figure title (e.g. the model and split).
        alpha: opacity of the heat map where it peaks (it fades to clear at 0).

    Returns:
        The matplotlib `Figure`.
    """
    ncols = max(1, max(len(cases.get(c, ())) for c in CASES))
    fig, axes = new_figure(len(CASES), ncols, height=7.0 / ncols + 0.35)
    for row, case in zip(axes, CASES, strict=True):
        index = list(cases.get(case, ()))
        batch = np.stack([np.asarray(images[i]) for i in index]) if index else None
        maps = gradcam(model, batch) if index else []
        for col, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(index):
                ax.axis("off")
                continue
            ax.imshow(batch[col])
            # opacity follows the map, so patches without evidence stay readable
            overlay = matplotlib.colormaps["jet"](maps[col])
            overlay[..., 3] = alpha * maps[col]
            ax.imshow(overlay)
            draw_center_box(ax, colour="white")
            ax.set_title(f"p={float(y_prob[index[col]]):.2f}", fontsize=7)
        row[0].axis("on")
        if not index:
            row[0].text(0.5, 0.5, "none", transform=row[0].transAxes, ha="center",
                        color="grey")
        row[0].set_ylabel(f"{case}\n{CASE_TITLES[case]}", fontsize=7)
    fig.suptitle(f"{title} (red: evidence for tumour; dashed: central 32x32)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
