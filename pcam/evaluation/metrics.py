"""Metrics computed right: stateful during training, once per split afterwards.

Batch-averaged precision, recall and F1 are wrong (the mean of per-batch
ratios is not the ratio over the split), so training uses stateful
`keras.metrics` and the reported numbers come from `evaluate_predictions` on
a whole split's predictions, with bootstrap 95% intervals. The expected
calibration error (ECE) is computed here only, on the bins of the reliability
diagram (`pcam.evaluation.calibration`).
"""

import warnings

import numpy as np

from pcam.evaluation import calibration, stats

THRESHOLD_RULE = (
    "maximise Youden's J (sensitivity + specificity - 1) on the validation split; "
    "threshold placed midway between the two adjacent distinct predicted probabilities; "
    "among tied maxima of J, the threshold nearest 0.5 (then the lower one)"
)
# Ties: J is compared in exact integer counts (tp * negatives - fp * positives), so
# equal maxima are found whatever the float rounding (both published subset runs
# had two tied maxima). Tied thresholds have the same balanced accuracy on valid, so
# valid cannot choose between them; nearest 0.5 (the accuracy-optimal cut of a
# calibrated model on balanced classes) moves no further from the default than
# valid asks. The rule before, numpy's first argmax, took the highest tied one.
BOOTSTRAP_SEED = 0  # every record's intervals use it (stored as bootstrap_seed)
N_BOOT = 1000
_EPS = 1e-7  # float32 sigmoid outputs can be exactly 0 or 1


def training_metrics() -> list:
    """Stateful Keras metrics for `model.compile`, all at threshold 0.5.

    Returns:
        List of metrics named "accuracy", "precision", "recall", "f1", "auc"
        (ROC). Labels float [B, 1], predictions one sigmoid [B, 1]. F1 gets an
        explicit threshold: with the default `threshold=None`, `F1Score` takes
        an argmax, which on a single output marks every patch positive.
    """
    import keras

    return [
        keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.5),
        keras.metrics.Precision(name="precision", thresholds=0.5),
        keras.metrics.Recall(name="recall", thresholds=0.5),
        keras.metrics.F1Score(name="f1", threshold=0.5, average="micro"),
        keras.metrics.AUC(name="auc", curve="ROC", num_thresholds=1000),
    ]


def classification_metrics(y_true, y_prob, threshold: float = 0.5) -> dict:
    """Threshold metrics over a whole split; a patch is positive when p >= threshold.

    Args:
        y_true: labels in {0, 1}, shape (N,).
        y_prob: predicted probabilities of class 1, shape (N,).
        threshold: decision threshold in [0, 1]. Default 0.5.

    Returns:
        dict: accuracy, precision, recall (sensitivity), f1, balanced_accuracy,
        specificity, confusion_matrix [[tn, fp], [fn, tp]], threshold. A ratio
        with a zero denominator is 0 (sklearn's `zero_division=0`).
    """
    y, p = _check(y_true, y_prob)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    pred = p >= threshold
    tp, fp = int(np.sum(pred & (y == 1))), int(np.sum(pred & (y == 0)))
    fn, tn = int(np.sum(~pred & (y == 1))), int(np.sum(~pred & (y == 0)))
    counts = np.array([[tp], [fp], [fn], [tn]], dtype=np.float64)
    out = {k: float(v[0]) for k, v in _from_counts(*counts).items()}
    out["confusion_matrix"] = [[tn, fp], [fn, tp]]
    out["threshold"] = float(threshold)
    return out


def choose_threshold(y_true, y_prob) -> float:
    """Decision threshold chosen on the validation split (see `THRESHOLD_RULE`).

    Args:
        y_true: validation labels in {0, 1}, shape (N,).
        y_prob: validation probabilities, shape (N,).

    Returns:
        Threshold in [0, 1], to apply unchanged to the test split; of several
        with the same J, the one nearest 0.5 (then the lower). 0.5, with a
        warning, when the split holds a single class.
    """
    from sklearn.metrics import roc_curve

    y, p = _check(y_true, y_prob)
    if y.min() == y.max():
        warnings.warn("choose_threshold: one class only, keeping 0.5", stacklevel=2)
        return 0.5
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    thr = np.minimum(thr, 1.0)  # sklearn's first threshold is inf (nothing positive)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    tp, fp = np.rint(tpr * n_pos).astype(np.int64), np.rint(fpr * n_neg).astype(np.int64)
    j = tp * n_neg - fp * n_pos  # J * positives * negatives, exact
    placed = (thr + np.r_[thr[1:], 0.0]) / 2.0  # midway to the next distinct probability
    tied = np.flatnonzero(j == j.max())
    # nearest 0.5, then the lower threshold: lexsort's last key is the primary one
    best = tied[np.lexsort((placed[tied], np.abs(placed[tied] - 0.5)))[0]]
    return float(np.clip(placed[best], 0.0, 1.0))


def evaluate_predictions(y_true, y_prob, threshold: float = 0.5, *, n_boot: int = N_BOOT,
                         seed: int = BOOTSTRAP_SEED, n_bins: int = 10, slides=None) -> dict:
    """Every reported metric of one split, with bootstrap 95% intervals.

    Args:
        y_true: labels in {0, 1}, shape (N,), in the same order as y_prob.
        y_prob: predicted probabilities of class 1, shape (N,).
        threshold: the threshold chosen on valid (`choose_threshold`).
        n_boot: bootstrap replicates, >= 1; 0 skips the intervals. Default 1000.
        seed: bootstrap seed. Default 0 (`BOOTSTRAP_SEED`).
        n_bins: bins for the ECE (`expected_calibration_error`). Default 10.
        slides: the slide of each patch, shape (N,): the bootstrap then resamples
            slides (cluster bootstrap); None (default) resamples patches, as it
            does, with a note, for fewer than `stats.MIN_SLIDES` slides.

    Returns:
        dict: n, positives, roc_auc, pr_auc (average precision), nll (log loss,
        probabilities clipped to [1e-7, 1 - 1e-7]), brier, ece, "at_0.5" and
        "at_chosen" (`classification_metrics`), "ci" ({"roc_auc": [lo, hi],
        "at_0.5.accuracy": [lo, hi], ...}, percentile intervals; None where
        undefined), n_boot, bootstrap_unit ("slides" or "patches"),
        bootstrap_seed, n_slides (with slides), notes (list of strings, e.g.
        why AUC is None).
    """
    y, p = _check(y_true, y_prob)
    n = len(y)
    if n == 0:
        raise ValueError("evaluate_predictions got no predictions")
    if slides is not None and np.asarray(slides).size != n:
        raise ValueError(f"slides has {np.asarray(slides).size} entries for {n} predictions")
    notes = []
    if slides is not None and not stats.enough_slides(slides):
        notes.append(f"only {len(np.unique(np.asarray(slides)))} slides, too few to resample: "
                     "the bootstrap resampled patches, so ci is likely too narrow")
        slides = None
    design = _Design(y, p, threshold, n_bins)
    point = {k: v[0] for k, v in design(np.ones((1, n))).items()}
    if y.min() == y.max():
        notes.append(f"only class {int(y[0])} present: ROC-AUC undefined"
                     + ("" if y[0] else ", PR-AUC undefined"))
    out = {"n": n, "positives": int(y.sum())}
    for k in ("roc_auc", "pr_auc", "nll", "brier", "ece"):
        out[k] = _num(point[k])
    out["at_0.5"] = classification_metrics(y, p, 0.5)
    out["at_chosen"] = classification_metrics(y, p, threshold)
    reps: dict[str, list] = {k: [] for k in point}
    for w in (stats.bootstrap_weights(n, n_boot, seed, groups=slides) if n_boot > 0 else ()):
        for k, v in design(w).items():
            reps[k].append(v)
    out["ci"] = {k: stats.percentile_interval(np.concatenate(v)) if v else None
                 for k, v in reps.items()}
    out["n_boot"] = int(n_boot)
    out["bootstrap_unit"] = "patches" if slides is None else "slides"
    out["bootstrap_seed"] = int(seed)
    if slides is not None:
        out["n_slides"] = len(np.unique(np.asarray(slides)))
    out["notes"] = notes
    return out


def expected_calibration_error(y_true, y_prob, n_bins: int = 10) -> float:
    """Count-weighted mean |fraction positive - mean predicted| over probability bins.

    The same number as `evaluate_predictions(...)["ece"]`, for predictions that
    have no record; the bins are those of the reliability diagram
    (`pcam.evaluation.calibration.bin_index`).

    Args:
        y_true: labels in {0, 1}, shape (N,), N >= 1.
        y_prob: predicted probabilities of class 1, shape (N,).
        n_bins: number of equal-width bins on [0, 1], >= 1. Default 10.

    Returns:
        ECE in [0, 1]; 0 for a perfectly calibrated model.

    Reference:
        Guo et al., "On calibration of modern neural networks", ICML 2017.
    """
    y, p = _check(y_true, y_prob)
    if len(y) == 0:
        raise ValueError("expected_calibration_error got no predictions")
    return float(_ece(np.ones((1, len(y))), _calibration_gaps(y, p, n_bins))[0])


class _Design:
    """Per-sample columns whose weighted sums give every count-based metric and the ECE."""

    def __init__(self, y, p, threshold, n_bins):
        self.y, self.p = y, p
        pc = np.clip(p, _EPS, 1 - _EPS)
        nll = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
        self.gaps = _calibration_gaps(y, p, n_bins)
        cols = [nll, (p - y) ** 2]
        for t in (0.5, threshold):
            pred = (p >= t).astype(np.float64)
            cols += [y * pred, (1 - y) * pred, y * (1 - pred), (1 - y) * (1 - pred)]
        self.matrix = np.column_stack(cols)

    def __call__(self, w) -> dict:
        w = np.atleast_2d(w)
        auc, ap = stats.weighted_auc_ap(w, self.y, self.p)
        sums = w @ self.matrix  # one matrix product: nll, brier, confusion counts
        n = w.sum(axis=1)  # the patches drawn: n, except when whole slides are resampled
        out = {"roc_auc": auc, "pr_auc": ap, "nll": sums[:, 0] / n, "brier": sums[:, 1] / n,
               "ece": _ece(w, self.gaps)}
        for i, name in enumerate(("at_0.5", "at_chosen")):
            counts = sums[:, 2 + 4 * i:6 + 4 * i].T
            out.update({f"{name}.{k}": v for k, v in _from_counts(*counts).items()})
        return out


def _calibration_gaps(y, p, n_bins) -> np.ndarray:
    """(N, n_bins) columns: y - p in the column of each sample's bin, 0 elsewhere."""
    # a bin's sum of (y - p) is count * (fraction positive - mean predicted)
    return np.eye(n_bins)[calibration.bin_index(p, n_bins)] * (y - p)[:, None]


def _ece(w, gaps) -> np.ndarray:
    """ECE for each row of sample weights w (k, N); shared by records and plots."""
    return np.abs(w @ gaps).sum(axis=1) / w.sum(axis=1)


def _from_counts(tp, fp, fn, tn) -> dict:
    """Threshold metrics from confusion counts (arrays), zero_division=0."""
    def ratio(a, b):
        return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)

    precision, recall, spec = ratio(tp, tp + fp), ratio(tp, tp + fn), ratio(tn, tn + fp)
    return {"accuracy": ratio(tp + tn, tp + fp + fn + tn), "precision": precision,
            "recall": recall, "f1": ratio(2 * tp, 2 * tp + fp + fn),
            # like sklearn: the mean recall over the classes present
            "balanced_accuracy": ratio(recall * (tp + fn > 0) + spec * (tn + fp > 0),
                                       (tp + fn > 0) * 1.0 + (tn + fp > 0)),
            "specificity": spec}


def _num(x) -> float | None:
    return float(x) if np.isfinite(x) else None


def _check(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true and y_prob differ in length: {y.size} vs {p.size}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must hold 0/1 labels, got values {np.unique(y)[:5]}")
    if y.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1 or np.isnan(p).any()):
        raise ValueError(f"y_prob must be probabilities in [0, 1], got range "
                         f"[{np.nanmin(p)}, {np.nanmax(p)}] (NaN: {np.isnan(p).any()})")
    return y.astype(np.float64), p
