"""Evaluation figures from saved predictions: ROC and PR, confusion, calibration."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

from pcam.evaluation.calibration import reliability_curve
from pcam.evaluation.metrics import expected_calibration_error
from pcam.evaluation.predictions import Predictions
from pcam.plots.common import CLASS_NAMES, model_colour, new_figure, save_figure


def _variants(p: Predictions):
    """(label suffix, probabilities, record metrics) for single pass and TTA."""
    yield "", p.y_prob, p.metrics.get("single", {})
    if p.y_prob_tta is not None:
        yield " + TTA", p.y_prob_tta, p.metrics.get("tta", {})


def _check(preds: Sequence[Predictions]) -> None:
    if not preds:
        raise ValueError("preds=[]: give the predictions of at least one run")


def plot_roc_pr(preds: Sequence[Predictions], path: str | Path | None = None):
    """ROC and precision-recall curves of several runs on shared axes.

    TTA curves (when saved) are drawn dotted in the model's colour. The AUCs in
    the legend are the record's when present (else computed here).

    Args:
        preds: `Predictions` of each run on the same split.
        path: PNG file to write, e.g. `images/compare_roc_pr.png`; None: do not save.

    Returns:
        The matplotlib `Figure`.
    """
    _check(preds)
    fig, axes = new_figure(1, 2, height=3.6)
    ax_roc, ax_pr = axes[0]
    for p in preds:
        colour = model_colour(p.model)
        for suffix, prob, numbers in _variants(p):
            style = ":" if suffix else "-"
            fpr, tpr, _ = roc_curve(p.y_true, prob)
            roc_auc = numbers.get("roc_auc") or auc(fpr, tpr)
            ax_roc.plot(fpr, tpr, style, color=colour, label=f"{p.model}{suffix} AUC {roc_auc:.3f}")
            precision, recall, _ = precision_recall_curve(p.y_true, prob)
            pr_auc = numbers.get("pr_auc") or average_precision_score(p.y_true, prob)
            ax_pr.plot(recall, precision, style, color=colour,
                       label=f"{p.model}{suffix} AP {pr_auc:.3f}")
    ax_roc.plot([0, 1], [0, 1], color="lightgrey", lw=1, label="chance")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    base = float(np.mean(preds[0].y_true))
    ax_pr.axhline(base, color="lightgrey", lw=1, label=f"chance ({base:.2f})")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    for ax in (ax_roc, ax_pr):
        ax.legend(fontsize=7, loc="lower right" if ax is ax_roc else "lower left")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{preds[0].split} split, N = {len(preds[0].y_true):,}")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(records: Sequence[dict], split: str = "test",
                   path: str | Path | None = None):
    """Confusion matrices side by side, counts and % of the split.

    Uses each record's `metrics[split]["single"]["at_chosen"]` (threshold chosen
    on valid), so the figure shows exactly the numbers in the table.

    Args:
        records: run records evaluated on `split`.
        split: "valid" or "test".
        path: PNG file to write, e.g. `images/compare_confusion.png`; None: do not save.

    Returns:
        The matplotlib `Figure`.
    """
    rows = [(r, r.get("metrics", {}).get(split, {}).get("single", {}).get("at_chosen"))
            for r in records]
    rows = [(r, m) for r, m in rows if m]
    if not rows:
        raise ValueError(f"no record in {[r.get('run') for r in records]} has {split} metrics")
    fig, axes = new_figure(1, len(rows), height=3.4, width=3.5 * len(rows))
    for ax, (record, numbers) in zip(axes[0], rows, strict=True):
        matrix = np.asarray(numbers["confusion_matrix"], dtype=float)
        ax.imshow(matrix / matrix.sum(), cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(matrix):
            share = count / matrix.sum()
            ax.text(j, i, f"{int(count):,}\n{100 * share:.1f}%", ha="center", va="center",
                    color="white" if share > 0.5 else "black", fontsize=9)
        ax.set_xticks([0, 1], [f"pred {n}" for n in CLASS_NAMES], fontsize=7)
        ax.set_yticks([0, 1], [f"true {n}" for n in CLASS_NAMES], fontsize=7, rotation=90,
                      va="center")
        ax.set_title(f"{record.get('model')}, threshold {numbers['threshold']:.2f}", fontsize=9)
    fig.suptitle(f"Confusion matrices, {split} split (counts, % of split)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_reliability(preds: Sequence[Predictions], path: str | Path | None = None,
                     *, n_bins: int = 10):
    """Reliability diagrams (single pass) of several runs, with the ECE in the legend.

    Bins as in `pcam.evaluation.calibration.bin_index`. The ECE is the record's;
    predictions without one get `pcam.evaluation.metrics.expected_calibration_error`,
    the same number on the same bins.

    Args:
        preds: `Predictions` of each run on the same split.
        path: PNG file to write, e.g. `images/compare_reliability.png`; None: do not save.
        n_bins: equal-width probability bins.

    Returns:
        The matplotlib `Figure`.
    """
    _check(preds)
    fig, axes = new_figure(1, 2, height=3.4)
    ax, ax_hist = axes[0]
    ax.plot([0, 1], [0, 1], color="lightgrey", lw=1, label="perfect calibration")
    for p in preds:
        colour = model_colour(p.model)
        curve = reliability_curve(p.y_true, p.y_prob, n_bins)
        pairs = [(m, f) for m, f in zip(curve["mean_predicted"], curve["fraction_positive"],
                                        strict=True) if m is not None]
        mean_prob, rate = zip(*pairs, strict=True)
        ece = p.metrics.get("single", {}).get("ece")
        if ece is None:
            ece = expected_calibration_error(p.y_true, p.y_prob, n_bins)
        ax.plot(mean_prob, rate, "-o", ms=4, color=colour, label=f"{p.model} ECE {ece:.3f}")
        ax_hist.hist(p.y_prob, bins=n_bins, range=(0, 1), histtype="step", lw=1.5,
                     color=colour, label=p.model)
    ax.set(xlabel="mean predicted probability", ylabel="fraction of positives",
           title="Reliability", xlim=(0, 1), ylim=(0, 1))
    # log counts: a trained model piles most patches near 0 and 1
    ax_hist.set(xlabel="predicted probability", ylabel="patches (log scale)",
                title="Predictions", yscale="log")
    ax_hist.set_ylim(bottom=0.8)
    for a in (ax, ax_hist):
        a.legend(fontsize=7, loc="upper left" if a is ax else "upper center")
        a.grid(alpha=0.3)
    fig.suptitle(f"Calibration, {preds[0].split} split, {n_bins} bins")
    fig.tight_layout()
    return save_figure(fig, path)
