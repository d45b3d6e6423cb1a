"""Calibration: the equal-width probability bins and the reliability curve.

A model is calibrated when, among patches given probability p, a fraction p is
tumour. `pcam.evaluation.metrics` computes the expected calibration error (ECE)
on the same bins (`bin_index`), so the ECE is the count-weighted gap that the
reliability diagram shows.
"""

import numpy as np


def bin_index(y_prob: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Equal-width bin of each probability, in `[0, n_bins)`.

    Args:
        y_prob: predicted probabilities in [0, 1].
        n_bins: number of bins, >= 1.

    Returns:
        Integer array of the same length; p = 1.0 falls in the last bin.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins!r}")
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    return np.clip(np.floor(p * n_bins).astype(np.int64), 0, n_bins - 1)


def reliability_curve(y_true, y_prob, n_bins: int = 10) -> dict:
    """Mean predicted probability and fraction of positives per bin.

    Args:
        y_true: labels in {0, 1}, shape (N,).
        y_prob: predicted probabilities of class 1, shape (N,).
        n_bins: number of equal-width bins on [0, 1], >= 1. Default 10.

    Returns:
        JSON-ready dict of lists, one entry per bin: `"edges"` (n_bins + 1
        bin edges), `"mean_predicted"`, `"fraction_positive"` (None for an
        empty bin) and `"count"`.

    Reference:
        Niculescu-Mizil & Caruana, "Predicting good probabilities with
        supervised learning", ICML 2005.
    """
    y, p = _check(y_true, y_prob)
    idx = bin_index(p, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)

    def per_bin(total):
        return [float(t / c) if c else None for t, c in zip(total, count, strict=True)]

    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "mean_predicted": per_bin(sum_p),
        "fraction_positive": per_bin(sum_y),
        "count": count.tolist(),
    }


def _check(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true and y_prob differ in length: {y.shape[0]} vs {p.shape[0]}")
    return y, p
