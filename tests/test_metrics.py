"""Metrics: hand-computed values, whole-split vs batch-averaged F1, ECE, Keras training metrics."""


import numpy as np
import pytest
from sklearn import metrics as skm

from pcam.evaluation.metrics import (
    THRESHOLD_RULE,
    choose_threshold,
    classification_metrics,
    evaluate_predictions,
    expected_calibration_error,
    training_metrics,
)

# 6 positives, 4 negatives. At 0.5: tp=4 (0,1,2,5), fn=2 (3,4), fp=1 (6), tn=3.
Y = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
P = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.65, 0.6, 0.2, 0.1, 0.45])


def _random_predictions(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * (2 * y - 1))))
    return y, p


def test_classification_metrics_hand_values():
    m = classification_metrics(Y, P, 0.5)
    assert m["confusion_matrix"] == [[3, 1], [2, 4]]
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["precision"] == pytest.approx(0.8)
    assert m["recall"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(8 / 11)
    assert m["specificity"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((4 / 6 + 0.75) / 2)
    assert m["threshold"] == 0.5


def test_evaluate_hand_values():
    r = evaluate_predictions(Y, P, 0.5, n_boot=200)
    assert (r["n"], r["positives"]) == (10, 6)
    assert r["roc_auc"] == pytest.approx(20 / 24)  # 20 of 24 (pos, neg) pairs ordered
    assert r["pr_auc"] == pytest.approx((4 + 5 / 7 + 6 / 8) / 6)
    assert r["brier"] == pytest.approx(np.mean((P - Y) ** 2))
    assert r["nll"] == pytest.approx(-np.mean(Y * np.log(P) + (1 - Y) * np.log(1 - P)))


def test_whole_split_f1_differs_from_batch_average():
    # batches of 5: the second holds one positive and one false positive
    batch_f1 = [skm.f1_score(Y[i:i + 5], P[i:i + 5] >= 0.5, zero_division=0) for i in (0, 5)]
    ours = classification_metrics(Y, P, 0.5)["f1"]
    assert ours == pytest.approx(8 / 11)
    assert np.mean(batch_f1) != pytest.approx(ours, abs=0.01)


def test_evaluate_matches_sklearn_and_is_consistent():
    y, p = _random_predictions()
    r = evaluate_predictions(y, p, 0.4, n_boot=100)
    assert r["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert r["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert r["nll"] == pytest.approx(skm.log_loss(y, p))
    assert r["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    for key, t in (("at_0.5", 0.5), ("at_chosen", 0.4)):
        m, pred = r[key], p >= t
        assert m["threshold"] == t
        assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
        (tn, fp), (fn, tp) = m["confusion_matrix"]
        assert m["accuracy"] == pytest.approx((tn + tp) / len(y))
        assert m["f1"] == pytest.approx(2 * m["precision"] * m["recall"]
                                        / (m["precision"] + m["recall"]))
        assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))


def test_ci_keys_and_order():
    y, p = _random_predictions()
    r = evaluate_predictions(y, p, 0.5, n_boot=200, seed=1)
    scalars = ["accuracy", "precision", "recall", "f1", "balanced_accuracy", "specificity"]
    expected = {"roc_auc", "pr_auc", "nll", "brier", "ece"} | {
        f"{t}.{k}" for t in ("at_0.5", "at_chosen") for k in scalars}
    assert set(r["ci"]) == expected
    for key, (lo, hi) in r["ci"].items():
        group, _, name = key.rpartition(".")
        point = r[group][name] if group else r[name]
        assert lo <= point <= hi, key
        assert hi - lo < 0.1, key
    assert r["ci"] == evaluate_predictions(y, p, 0.5, n_boot=200, seed=1)["ci"]


def test_one_class_split_does_not_crash():
    r = evaluate_predictions(np.zeros(50), np.linspace(0.0, 0.4, 50), 0.5, n_boot=50)
    assert r["roc_auc"] is None and r["pr_auc"] is None
    assert r["ci"]["roc_auc"] is None
    assert "ROC-AUC undefined" in r["notes"][0]
    # no positive predictions: precision is 0, not an error
    assert r["at_0.5"]["precision"] == 0.0
    assert r["at_0.5"]["accuracy"] == 1.0


def test_bad_inputs_raise_with_values():
    with pytest.raises(ValueError, match="differ in length: 3 vs 2"):
        classification_metrics([0, 1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate_predictions([0, 1], [0.2, 1.3])
    with pytest.raises(ValueError, match="0/1 labels"):
        evaluate_predictions([0, 2], [0.2, 0.3])


def test_choose_threshold_separates_and_handles_one_class():
    y = np.array([0, 0, 0, 1, 1, 1])
    t = choose_threshold(y, np.array([0.1, 0.2, 0.7, 0.8, 0.85, 0.9]))
    assert t == pytest.approx(0.75)  # midway between the last negative and first positive
    assert "Youden" in THRESHOLD_RULE
    with pytest.warns(UserWarning, match="one class"):
        assert choose_threshold(np.ones(4), np.full(4, 0.3)) == 0.5


def test_ece_function_gives_the_records_ece():
    for seed, n_bins in ((0, 10), (1, 15), (2, 4)):
        y, p = _random_predictions(3000, seed)
        p = p.astype(np.float32)  # as saved predictions are
        p[:5] = [0.0, 1.0, 0.5, 0.25, 0.999]  # bin edges and the closed end
        record = evaluate_predictions(y, p, 0.5, n_boot=0, n_bins=n_bins)
        assert expected_calibration_error(y, p, n_bins) == record["ece"]
    with pytest.raises(ValueError, match="no predictions"):
        expected_calibration_error([], [])


def test_ece_small_when_calibrated_large_when_overconfident():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    logit = np.log(p / (1 - p))
    overconfident = 1 / (1 + np.exp(-4 * logit))
    assert expected_calibration_error(y, overconfident) > 0.1


def test_bootstrap_weights_in_chunks_are_the_same_resamples():
    """A large split is resampled in chunks (a full PCam split: 8 of 128, the last 104):
    every chunk's rows sum to n, and chunking does not change the resamples."""
    from pcam.evaluation.stats import bootstrap_weights

    chunks = list(bootstrap_weights(50, 10, seed=3, chunk=3))
    assert [c.shape for c in chunks] == [(3, 50), (3, 50), (3, 50), (1, 50)]
    assert all((c.sum(axis=1) == 50).all() for c in chunks)
    whole = next(bootstrap_weights(50, 10, seed=3, chunk=10))
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_keras_training_metrics_are_whole_split():
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype("float32")
    y = (x[:, 0] + rng.normal(size=200) > 0).astype("float32")[:, None]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy", metrics=training_metrics())
    hist = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert {"accuracy", "precision", "recall", "f1", "auc"} <= set(hist.history)
    assert np.ndim(hist.history["f1"][0]) == 0

    got = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    pred = model.predict(x, batch_size=16, verbose=0)[:, 0] > 0.5
    assert got["f1"] == pytest.approx(skm.f1_score(y[:, 0], pred), abs=1e-5)
    assert got["precision"] == pytest.approx(skm.precision_score(y[:, 0], pred), abs=1e-5)
    assert got["recall"] == pytest.approx(skm.recall_score(y[:, 0], pred), abs=1e-5)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y[:, 0], pred), abs=1e-5)
    batch_mean = np.mean([skm.f1_score(y[i:i + 16, 0], pred[i:i + 16], zero_division=0)
                          for i in range(0, 200, 16)])
    assert batch_mean != pytest.approx(got["f1"], abs=1e-4)
