"""Two runs on the same patches: McNemar's test and the paired AUC difference."""

from pcam.evaluation.stats import mcnemar, paired_auc_difference


def paired_comparison(preds: list, *, n_boot: int = 1000, seed: int = 0) -> dict | None:
    """McNemar's test and the paired-bootstrap AUC difference of two runs' predictions.

    Args:
        preds: two `Predictions` on the same split.
        n_boot: bootstrap resamples; seed: their seed (fixed, so the README is stable).

    Returns:
        {"split", "models", "n", "mcnemar_p", "auc_difference", "auc_ci"}, or
        {"note": why not} when the patches differ or hold one class; None for
        fewer than two runs.
    """
    if len(preds) != 2:
        return None
    a, b = preds
    if a.y_true.shape != b.y_true.shape or (a.y_true != b.y_true).any():
        return {"note": f"not computed: {a.run} and {b.run} were evaluated on different patches."}
    correct_a = (a.y_prob >= a.threshold) == a.y_true.astype(bool)
    correct_b = (b.y_prob >= b.threshold) == b.y_true.astype(bool)
    test = mcnemar(correct_a, correct_b)
    diff = paired_auc_difference(a.y_true, a.y_prob, b.y_prob, n_boot, seed)
    if diff["ci"] is None:
        return {"note": f"not computed: the {a.split} split holds one class only."}
    return {"split": a.split, "models": [a.model, b.model], "n": int(a.y_true.size),
            "mcnemar_p": float(test["p_value"]), "auc_difference": float(diff["diff"]),
            "auc_ci": [float(v) for v in diff["ci"]]}
