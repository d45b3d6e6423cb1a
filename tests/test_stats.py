"""Bootstrap coverage, McNemar against a textbook table, paired AUC bootstrap, reliability curve."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from pcam.evaluation.calibration import reliability_curve
from pcam.evaluation.metrics import evaluate_predictions, expected_calibration_error
from pcam.evaluation.stats import (
    bootstrap_weights,
    mcnemar,
    paired_auc_contrast,
    paired_auc_difference,
    weighted_auc_ap,
)


def _binormal(n, seed, shift=1.0):
    """Scores N(shift * y, 1): true AUC Phi(shift / sqrt 2), true accuracy at 0 Phi(shift / 2)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, rng.normal(shift * y, 1.0)


def test_weighted_auc_ap_equals_sklearn_on_a_resample_with_ties():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 500), rng.random(500).round(1)  # many ties
    idx = rng.integers(0, 500, 500)
    auc, ap = weighted_auc_ap(np.bincount(idx, minlength=500), y, p)
    assert auc[0] == pytest.approx(roc_auc_score(y[idx], p[idx]))
    assert ap[0] == pytest.approx(average_precision_score(y[idx], p[idx]))


def test_bootstrap_weights_are_counts_and_reproducible():
    a = np.concatenate(list(bootstrap_weights(100, 50, seed=3, chunk=7)))
    b = np.concatenate(list(bootstrap_weights(100, 50, seed=3, chunk=7)))
    assert a.shape == (50, 100)
    assert np.all(a.sum(axis=1) == 100) and np.array_equal(a, b)
    assert not np.array_equal(a, np.concatenate(list(bootstrap_weights(100, 50, seed=4))))


def test_bootstrap_intervals_cover_the_true_value_at_the_nominal_rate():
    true_auc, true_acc = norm.cdf(1 / np.sqrt(2)), norm.cdf(0.5)
    hits_auc = hits_acc = 0
    for i in range(200):
        y, s = _binormal(300, seed=i)
        r = evaluate_predictions(y, norm.cdf(s - 0.5), 0.5, n_boot=300, seed=i)
        lo, hi = r["ci"]["roc_auc"]
        hits_auc += lo <= true_auc <= hi
        lo, hi = r["ci"]["at_0.5.accuracy"]
        hits_acc += lo <= true_acc <= hi
    assert 0.88 <= hits_auc / 200 <= 0.99
    assert 0.88 <= hits_acc / 200 <= 0.99


def _pairs(n11, n10, n01, n00):
    """Two correctness vectors from a 2x2 table (A right/wrong x B right/wrong)."""
    a = np.repeat([1, 1, 0, 0], [n11, n10, n01, n00]).astype(bool)
    b = np.repeat([1, 0, 1, 0], [n11, n10, n01, n00]).astype(bool)
    return a, b


def test_mcnemar_against_agresti_table():
    # Agresti, Categorical Data Analysis (2002), Table 10.1: approval of the
    # president in two surveys, 794 / 150 / 86 / 570; z^2 = 17.36, p < 0.001.
    a, b = _pairs(794, 150, 86, 570)
    r = mcnemar(a, b, correction=False)
    assert (r["b"], r["c"], r["n"]) == (150, 86, 1600)
    assert r["statistic"] == pytest.approx(64**2 / 236)
    assert r["statistic"] == pytest.approx(17.36, abs=0.01)
    assert r["p_value"] == pytest.approx(3.1e-5, rel=0.02)
    corrected = mcnemar(a, b)
    assert corrected["statistic"] == pytest.approx(63**2 / 236)
    assert "continuity" in corrected["method"]


def test_mcnemar_exact_for_few_discordant_pairs():
    r = mcnemar(*_pairs(40, 2, 8, 10))
    assert r["method"] == "exact binomial"
    assert r["p_value"] == pytest.approx(2 * (1 + 10 + 45) / 1024)  # 2 P(X <= 2), X ~ B(10, .5)
    assert mcnemar(*_pairs(5, 0, 0, 5))["p_value"] == 1.0
    with pytest.raises(ValueError, match="3 vs 2"):
        mcnemar([1, 0, 1], [1, 0])


def test_paired_auc_difference_identical_and_better_models():
    y, s = _binormal(2000, seed=1)
    same = paired_auc_difference(y, s, s.copy(), n_boot=300, seed=0)
    assert same["diff"] == 0.0 and same["ci"] == [0.0, 0.0] and same["p_value"] == 1.0

    noisy = s + np.random.default_rng(2).normal(0, 1.5, s.size)
    better = paired_auc_difference(y, s, noisy, n_boot=500, seed=0)
    assert better["diff"] > 0.05 and better["ci"][0] > 0 and better["p_value"] < 0.01
    assert better["auc_a"] == pytest.approx(roc_auc_score(y, s))


def test_paired_auc_contrast_is_the_difference_of_differences():
    y, s = _binormal(1500, seed=3)
    rng = np.random.default_rng(4)
    a1, b1, a2, b2 = (s + rng.normal(0, sd, s.size) for sd in (0.5, 2.0, 0.3, 1.0))
    change = paired_auc_contrast(y, [(1, a2), (-1, b2), (-1, a1), (1, b1)], n_boot=400)
    expected = (roc_auc_score(y, a2) - roc_auc_score(y, b2)) - (
        roc_auc_score(y, a1) - roc_auc_score(y, b1))
    assert change["value"] == pytest.approx(expected)
    assert change["ci"][0] < change["value"] < change["ci"][1]
    # two terms are the paired difference itself, resample for resample
    two = paired_auc_contrast(y, [(1, a1), (-1, b1)], n_boot=400, seed=5)
    diff = paired_auc_difference(y, a1, b1, n_boot=400, seed=5)
    assert two["value"] == pytest.approx(diff["diff"]) and two["ci"] == pytest.approx(diff["ci"])
    # a model against itself cancels in every resample
    assert paired_auc_contrast(y, [(1, a1), (-1, a1)], n_boot=50)["ci"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="length 1500"):
        paired_auc_contrast(y, [(1, a1[:10])])


def test_reliability_curve_hand_values_and_ece_agree():
    y = [0, 1, 1, 0, 1]
    p = [0.05, 0.15, 0.75, 0.72, 1.0]
    curve = reliability_curve(y, p, n_bins=4)
    assert curve["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve["count"] == [2, 0, 1, 2]
    assert curve["mean_predicted"] == pytest.approx([0.1, None, 0.72, 0.875])
    assert curve["fraction_positive"] == pytest.approx([0.5, None, 0.0, 1.0])
    gaps = [c * abs(f - m) for c, f, m in zip(curve["count"], curve["fraction_positive"],
                                               curve["mean_predicted"], strict=True) if c]
    assert expected_calibration_error(y, p, n_bins=4) == pytest.approx(sum(gaps) / 5)
