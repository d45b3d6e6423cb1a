"""Training curves from a run record's `history`: one model, or models compared."""

from pathlib import Path

from pcam.core.errors import PCamError
from pcam.plots.common import model_colour, new_figure, save_figure

# (panel title, metric keys drawn in it, y-axis label)
_PANELS = (
    ("Loss", ("loss",), "binary cross-entropy"),
    ("Accuracy", ("accuracy",), "accuracy (threshold 0.5)"),
    ("Precision and recall", ("precision", "recall"), "value (threshold 0.5)"),
    ("F1", ("f1",), "F1 (threshold 0.5)"),
    ("ROC AUC", ("auc",), "AUC"),
    ("Learning rate", ("learning_rate",), "learning rate (log)"),
)
_COMPARE_PANELS = (("val_loss", "valid loss"), ("val_accuracy", "valid accuracy"),
                   ("val_f1", "valid F1"), ("val_auc", "valid ROC AUC"))
_PHASE_SHADES = {"head": "#fff2cc", "finetune": "#e2f0d9", "scratch": "#f2f2f2"}


def _history(record: dict) -> list[dict]:
    history = record.get("history") or []
    if not history:
        raise PCamError(
            f"run {record.get('run')!r} has no training history; train it first "
            "(`python -m pcam train ...`)"
        )
    return history


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    pairs = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _mark_phases(ax, history: list[dict], *, label: bool) -> None:
    """Shade each training phase and draw a line where a new one starts."""
    start = 0
    for i in range(1, len(history) + 1):
        if i < len(history) and history[i]["phase"] == history[start]["phase"]:
            continue
        phase = history[start]["phase"]
        lo, hi = history[start]["epoch"] - 0.5, history[i - 1]["epoch"] + 0.5
        ax.axvspan(lo, hi, color=_PHASE_SHADES.get(phase, "#eeeeee"), zorder=0, lw=0)
        if start > 0:
            ax.axvline(lo, color="grey", lw=1, ls="-.")
        if label:
            ax.text((lo + hi) / 2, 1.0, phase, transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8, color="dimgrey")
        start = i


def plot_training_curves(record: dict, path: str | Path | None = None):
    """Per-epoch train and valid curves of one run, with its phases marked.

    Panels: loss, accuracy, precision and recall, F1, ROC AUC and learning rate;
    train solid, valid dashed, on the same axes. The metrics are Keras' stateful
    ones over each epoch (threshold 0.5), as logged during training.

    Args:
        record: a run record (see DESIGN.md) with a non-empty `history`.
        path: PNG file to write, e.g. `images/mobilenet_curves.png`; None: do not save.

    Returns:
        The matplotlib `Figure`.
    """
    history = _history(record)
    colour = model_colour(record.get("model", ""))
    fig, axes = new_figure(3, 2, height=2.5)
    for ax, (title, keys, ylabel) in zip(axes.flat, _PANELS, strict=True):
        _mark_phases(ax, history, label=True)
        for key in keys:
            shade = 1.0 if key != "recall" else 0.55
            x, y = _series(history, key)
            if y:
                ax.plot(x, y, "-o", ms=3, color=colour, alpha=shade, label=f"train {key}")
            x, y = _series(history, f"val_{key}")
            if y:
                ax.plot(x, y, "--s", ms=3, color=colour, alpha=shade, label=f"valid {key}")
        if keys == ("learning_rate",) and ax.lines:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10, pad=12)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel, fontsize=8)
        if ax.lines:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", color="grey")
    fig.suptitle(f"Training curves: {record.get('model')} (run {record.get('run')})")
    fig.tight_layout()
    return save_figure(fig, path)


def _minutes(history: list[dict]) -> list[float] | None:
    """Training minutes at the end of each epoch, or None when an epoch has no timing."""
    seconds = [h.get("seconds") for h in history]
    if any(s is None for s in seconds):
        return None
    return [sum(seconds[: i + 1]) / 60 for i in range(len(seconds))]


def plot_compared_curves(records: list[dict], path: str | Path | None = None):
    """Validation curves of several runs against training minutes (one colour per model).

    Runs of different models cost different time an epoch, so the x axis is
    the training time at the end of each epoch (validation included), not
    the epoch; when a record lacks epoch timings, every run is drawn per epoch.

    Args:
        records: run records, each with a non-empty `history`.
        path: PNG file to write, e.g. `images/compare_curves.png`; None: do not save.

    Returns:
        The matplotlib `Figure`.
    """
    if not records:
        raise ValueError("records=[]: give at least one run record")
    timed = all(_minutes(_history(r)) is not None for r in records)
    fig, axes = new_figure(2, 2, height=2.8)
    for ax, (key, ylabel) in zip(axes.flat, _COMPARE_PANELS, strict=True):
        for record in records:
            history = _history(record)
            at = dict(zip((h["epoch"] for h in history), _minutes(history) or [], strict=False))
            epochs, y = _series(history, key)
            x = [at[e] for e in epochs] if timed else epochs
            ax.plot(x, y, "-o", ms=3, color=model_colour(record.get("model", "")),
                    label=f"{record.get('model')} ({record.get('run')})")
        ax.set_title(ylabel, fontsize=10)
        ax.set_xlabel("training minutes" if timed else "epoch")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Validation curves compared (against training time, threshold 0.5)" if timed
                 else "Validation curves compared (per epoch, threshold 0.5)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_learning_rate(learning_rate, steps_per_epoch: int, epochs: int,
                       path: str | Path | None = None):
    """The learning rate at every training step, as the optimizer will see it.

    Args:
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
        steps_per_epoch: training steps in one epoch, >= 1.
        epochs: epochs to draw, >= 1.
        path: PNG file to write; None: do not save.

    Returns:
        The matplotlib `Figure` (x: epoch, fractional within an epoch).
    """
    import keras
    import numpy as np

    total = max(1, steps_per_epoch * epochs)
    steps = np.unique(np.linspace(0, total - 1, min(total, 400)).astype(int))
    if callable(learning_rate):
        values = [float(keras.ops.convert_to_numpy(learning_rate(int(s)))) for s in steps]
    else:
        values = [float(learning_rate)] * len(steps)
    fig, axes = new_figure(height=2.6)
    ax = axes[0][0]
    ax.plot(steps / steps_per_epoch, values, color=model_colour("resnet50"))
    ax.set(xlabel="epoch", ylabel="learning rate", title="Learning-rate schedule", xlim=(0, epochs))
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
