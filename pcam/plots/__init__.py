"""All figures of the project, in one namespace for the notebooks and the report.

Each function returns a matplotlib `Figure` (or a path for model diagrams) and
writes a PNG when given a path. The code lives in small modules:
`training` (curves, learning-rate schedule), `evaluation` (ROC/PR, confusion,
calibration), `data` (patches, augmentations, model diagrams), `gradcam` and
`study` (the recipe study's arms).
"""

from pcam.plots.common import MODEL_COLOURS, model_colour, save_figure, slug
from pcam.plots.data import (
    draw_center_box,
    plot_augmentations,
    plot_model_diagram,
    plot_sample_grid,
)
from pcam.plots.evaluation import plot_confusion, plot_reliability, plot_roc_pr
from pcam.plots.gradcam import plot_gradcam_grid
from pcam.plots.study import plot_study
from pcam.plots.training import plot_compared_curves, plot_learning_rate, plot_training_curves

__all__ = [
    "MODEL_COLOURS",
    "draw_center_box",
    "model_colour",
    "plot_augmentations",
    "plot_compared_curves",
    "plot_confusion",
    "plot_gradcam_grid",
    "plot_learning_rate",
    "plot_model_diagram",
    "plot_reliability",
    "plot_roc_pr",
    "plot_sample_grid",
    "plot_study",
    "plot_training_curves",
    "save_figure",
    "slug",
]
