"""Uncertainty and paired comparison: bootstrap intervals, McNemar, paired AUC.

The bootstrap works on resampling *counts*: replicate r gives sample i the
weight w[r, i] (how often it was drawn), so every count-based metric of a
batch of replicates is one matrix product, and AUC / average precision come
from one sort of the scores shared by all replicates. Paired comparisons use
the same weights for both models.

With `groups` (the slide of each patch) the bootstrap resamples whole slides
(a cluster bootstrap): patches of one slide are correlated, so drawing them
one by one understates the variance. Every patch then gets its slide's count,
and rows no longer sum to n. McNemar's test assumes independent patches; with
slides, `paired_accuracy_difference` is the slide-level paired test instead.

Reference:
    Field & Welsh, "Bootstrapping clustered data", JRSS B 69(3), 2007.
"""

from collections.abc import Iterator

import numpy as np
from scipy import stats as _st

# Fewer slides than this are too few to resample (one slide gives a zero-width
# interval); callers then resample patches and say so.
MIN_SLIDES = 10


def enough_slides(slides) -> bool:
    """Whether `slides` (one id per patch, or None) has at least `MIN_SLIDES` distinct ids."""
    return slides is not None and len(np.unique(np.asarray(slides))) >= MIN_SLIDES


def bootstrap_weights(n: int, n_boot: int, seed: int = 0, chunk: int | None = None,
                      groups=None) -> Iterator[np.ndarray]:
    """Yield bootstrap count matrices of shape (k, n), k <= chunk, n_boot rows in all.

    Args:
        n: number of samples, >= 1.
        n_boot: number of bootstrap replicates, >= 1.
        seed: seed of the resampling; the same seed gives the same replicates.
        chunk: replicates per yielded matrix; default keeps a matrix ~32 MB.
        groups: None (default) resamples samples; else the cluster (slide) of
            each sample, shape (n,), any hashable labels: each replicate draws
            as many clusters as there are, with replacement, and each sample
            gets the count of its cluster.

    Returns:
        Iterator of float32 arrays (exact counts); each row sums to n without
        groups, to the patches of the drawn clusters with them.
    """
    if n < 1 or n_boot < 1:
        raise ValueError(f"need n >= 1 and n_boot >= 1, got n={n!r}, n_boot={n_boot!r}")
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, 2**22 // n)
    codes, m = (None, n) if groups is None else _cluster_codes(groups, n)
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        idx = rng.integers(0, m, size=(k, m)) + (np.arange(k) * m)[:, None]
        counts = np.bincount(idx.ravel(), minlength=k * m).reshape(k, m).astype(np.float32)
        yield counts if codes is None else counts[:, codes]


def _cluster_codes(groups, n: int) -> tuple[np.ndarray, int]:
    """(cluster index of each sample, number of clusters) for `groups` of length n."""
    groups = np.asarray(groups).reshape(-1)
    if groups.size != n:
        raise ValueError(f"groups has {groups.size} entries for {n} samples")
    names, codes = np.unique(groups, return_inverse=True)
    return codes.reshape(-1), len(names)


def weighted_auc_ap(w: np.ndarray, y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and average precision for each row of sample weights.

    Ties count one half for AUC; average precision is sklearn's step-wise
    sum over distinct thresholds. With w = ones both equal
    `roc_auc_score` and `average_precision_score`.

    Args:
        w: weights, shape (k, n) (or (n,)).
        y: labels in {0, 1}, shape (n,).
        p: scores, shape (n,).

    Returns:
        (auc, ap), each shape (k,); NaN where a replicate lacks a class.
    """
    w = np.atleast_2d(w)
    order = np.argsort(p, kind="stable")
    ps, ys = p[order], y[order].astype(np.float32)
    ws = np.take(w, order, axis=1).astype(np.float32, copy=False)  # counts: exact in float32
    pos, tot = ws * ys, ws
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    if starts.size < ps.size:  # tied scores: one group per distinct score
        pos, tot = np.add.reduceat(pos, starts, axis=1), np.add.reduceat(tot, starts, axis=1)
    neg = tot - pos
    cum_pos, cum_neg = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    n_pos, n_neg = cum_pos[:, -1].astype(np.float64), cum_neg[:, -1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # AUC: each positive beats the negatives below it, ties count one half
        auc = np.einsum("ij,ij->i", pos, cum_neg - 0.5 * neg, dtype=np.float64) / (n_pos * n_neg)
        # AP: precision at each distinct threshold, counting scores >= it
        tp = n_pos[:, None] - cum_pos + pos
        fp = n_neg[:, None] - cum_neg + neg
        prec = np.where(pos > 0, tp / np.maximum(tp + fp, 1), 0.0)
        ap = np.einsum("ij,ij->i", pos, prec, dtype=np.float64) / n_pos
    bad = (n_pos == 0) | (n_neg == 0)
    return np.where(bad, np.nan, auc), np.where(n_pos == 0, np.nan, ap)


def percentile_interval(values, alpha: float = 0.05) -> list[float] | None:
    """Percentile interval of bootstrap replicates, ignoring NaN; None if none are finite."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return [float(lo), float(hi)]


def mcnemar(correct_a, correct_b, *, exact: bool | None = None, correction: bool = True) -> dict:
    """McNemar's test: do two classifiers err on the same patches at different rates?

    Args:
        correct_a: booleans, model A right on each patch, shape (N,).
        correct_b: booleans, model B right on the same patches.
        exact: exact binomial test on the discordant pairs; None (default)
            uses it when b + c < 25, the usual rule.
        correction: continuity correction for the chi-square form. Default True.

    Returns:
        dict: `b` (A right, B wrong), `c` (A wrong, B right), `n`,
        `statistic` (chi-square, or min(b, c) for the exact test),
        `p_value` (two-sided), `method`.

    Reference:
        Agresti, "Categorical Data Analysis", 2nd ed., section 10.1.
    """
    a = np.asarray(correct_a, dtype=bool).ravel()
    b_ = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b_.shape:
        raise ValueError(f"correct_a and correct_b differ in length: {a.size} vs {b_.size}")
    b, c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    if exact is None:
        exact = b + c < 25
    if b + c == 0:
        stat, p, method = 0.0, 1.0, "no discordant pairs"
    elif exact:
        stat = float(min(b, c))
        p = min(1.0, 2.0 * _st.binom.cdf(min(b, c), b + c, 0.5))
        method = "exact binomial"
    else:
        stat = (max(abs(b - c) - int(correction), 0)) ** 2 / (b + c)
        p = float(_st.chi2.sf(stat, 1))
        method = "chi-square" + (" with continuity correction" if correction else "")
    return {"b": b, "c": c, "n": int(a.size), "statistic": float(stat),
            "p_value": float(p), "method": method}


def paired_auc_difference(y_true, p_a, p_b, n_boot: int = 1000, seed: int = 0,
                          alpha: float = 0.05, groups=None) -> dict:
    """Paired bootstrap of AUC(A) - AUC(B): both models see the same resamples.

    Args:
        y_true: labels in {0, 1}, shape (N,).
        p_a: scores of model A, shape (N,).
        p_b: scores of model B on the same patches.
        n_boot: number of replicates, >= 1. Default 1000.
        seed: resampling seed. Default 0.
        alpha: 1 - confidence level. Default 0.05.
        groups: the slide of each patch, to resample slides; None resamples patches.

    Returns:
        dict: `auc_a`, `auc_b`, `diff`, `ci` ([lo, hi]), `p_value` (two-sided,
        from the share of replicates on either side of 0), `n_boot` (finite
        replicates), `unit` ("slides" or "patches"), `method`.
    """
    y = np.asarray(y_true).ravel()
    pa, pb = np.asarray(p_a, dtype=np.float64).ravel(), np.asarray(p_b, dtype=np.float64).ravel()
    if not y.shape == pa.shape == pb.shape:
        raise ValueError(f"lengths differ: y_true {y.size}, p_a {pa.size}, p_b {pb.size}")
    ones = np.ones(y.size)
    auc_a, auc_b = weighted_auc_ap(ones, y, pa)[0][0], weighted_auc_ap(ones, y, pb)[0][0]
    contrast = paired_auc_contrast(y, [(1, pa), (-1, pb)], n_boot, seed, alpha, groups)
    del contrast["value"]  # = diff
    return {"auc_a": float(auc_a), "auc_b": float(auc_b), "diff": float(auc_a - auc_b),
            **contrast}


def paired_auc_contrast(y_true, terms, n_boot: int = 1000, seed: int = 0,
                        alpha: float = 0.05, groups=None) -> dict:
    """Paired bootstrap of a weighted sum of AUCs of several models on the same patches.

    A difference of differences, for example how much the gap between two
    models changes from one budget to another: (AUC(A2) - AUC(B2)) -
    (AUC(A1) - AUC(B1)) is `terms` [(1, a2), (-1, b2), (-1, a1), (1, b1)].
    Every model sees the same resamples, so what they share cancels.

    Args:
        y_true: labels in {0, 1}, shape (N,).
        terms: (weight, scores) pairs, scores of shape (N,) on the same patches.
        n_boot, seed, alpha, groups: as in `paired_auc_difference`.

    Returns:
        dict: `value` (the contrast on all patches), `ci`, `p_value`, `n_boot`,
        `unit`, `method`, as `paired_auc_difference`.
    """
    y = np.asarray(y_true).ravel()
    scored = [(float(w), np.asarray(p, dtype=np.float64).ravel()) for w, p in terms]
    if not scored or any(p.shape != y.shape for _, p in scored):
        raise ValueError(f"every term needs scores of y_true's length {y.size}: "
                         f"{[p.size for _, p in scored]}")
    ones = np.ones(y.size)
    value = sum(w * weighted_auc_ap(ones, y, p)[0][0] for w, p in scored)
    reps = np.concatenate([sum(w * weighted_auc_ap(weights, y, p)[0] for w, p in scored)
                           for weights in bootstrap_weights(y.size, n_boot, seed,
                                                            groups=groups)])
    return {"value": float(value), **_paired_summary(reps, alpha, groups)}


def paired_accuracy_difference(correct_a, correct_b, n_boot: int = 1000, seed: int = 0,
                               alpha: float = 0.05, groups=None) -> dict:
    """Paired bootstrap of accuracy(A) - accuracy(B), over slides when `groups` is given.

    The slide-level replacement for McNemar's test, which assumes independent
    patches: both models see the same resampled slides.

    Args:
        correct_a: booleans, model A right on each patch, shape (N,).
        correct_b: booleans, model B right on the same patches.
        n_boot, seed, alpha, groups: as in `paired_auc_difference`.

    Returns:
        dict: `accuracy_a`, `accuracy_b`, `diff`, `ci`, `p_value`, `n_boot`,
        `unit`, `method`, as `paired_auc_difference`.
    """
    a = np.asarray(correct_a, dtype=np.float64).ravel()
    b = np.asarray(correct_b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"correct_a and correct_b need the same length >= 1: {a.size}, {b.size}")
    diffs = np.concatenate([(w @ (a - b)) / w.sum(axis=1)
                            for w in bootstrap_weights(a.size, n_boot, seed, groups=groups)])
    return {"accuracy_a": float(a.mean()), "accuracy_b": float(b.mean()),
            "diff": float(a.mean() - b.mean()), **_paired_summary(diffs, alpha, groups)}


def _paired_summary(diffs: np.ndarray, alpha: float, groups) -> dict:
    """CI, two-sided bootstrap p-value, replicates and unit of paired differences."""
    d = diffs[np.isfinite(diffs)]
    tail = min(np.sum(d <= 0), np.sum(d >= 0))
    p = min(1.0, 2.0 * (tail + 1) / (d.size + 1))
    unit = "patches" if groups is None else "slides"
    return {"ci": percentile_interval(d, alpha), "p_value": float(p), "n_boot": int(d.size),
            "unit": unit, "method": f"paired bootstrap over {unit}"}

