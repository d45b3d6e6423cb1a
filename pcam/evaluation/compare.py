"""Two runs on the same patches: McNemar's test (or its slide-level replacement) and
the paired AUC difference.

Without slide ids the resampling unit is the patch: McNemar's test on correctness
and a paired bootstrap of the AUC difference over patches, both assuming patches
are independent. With the slide of every patch (both runs' predictions carry
the same `slides`, at least `stats.MIN_SLIDES` of them), McNemar's test is left
out (its p-value would treat the patches of one slide as independent evidence)
and both differences, accuracy and AUC, come from one paired bootstrap over slides.
"""

import numpy as np

from pcam.evaluation.stats import (
    enough_slides,
    mcnemar,
    paired_accuracy_difference,
    paired_auc_difference,
)


def paired_comparison(preds: list, *, n_boot: int = 1000, seed: int = 0) -> dict | None:
    """Paired tests of two runs' predictions on the same patches.

    Args:
        preds: two `Predictions` on the same split.
        n_boot: bootstrap resamples; seed: their seed (fixed, so the README is stable).

    Returns:
        {"split", "models", "n", "unit" ("slides" or "patches"), "n_boot", "seed",
        "auc_difference", "auc_ci"} plus, over patches, "mcnemar_p", or, over
        slides, "n_slides", "accuracy_difference", "accuracy_ci", "accuracy_p";
        {"note": why not} when the patches differ or hold one class; None for
        fewer than two runs.
    """
    if len(preds) != 2:
        return None
    a, b = preds
    if a.y_true.shape != b.y_true.shape or (a.y_true != b.y_true).any():
        return {"note": f"not computed: {a.run} and {b.run} were evaluated on different patches."}
    slides = _shared_slides(a, b)
    correct_a = (a.y_prob >= a.threshold) == a.y_true.astype(bool)
    correct_b = (b.y_prob >= b.threshold) == b.y_true.astype(bool)
    diff = paired_auc_difference(a.y_true, a.y_prob, b.y_prob, n_boot, seed, groups=slides)
    if diff["ci"] is None:
        return {"note": f"not computed: the {a.split} split holds one class only."}
    out = {"split": a.split, "models": [a.model, b.model], "n": int(a.y_true.size),
           "unit": diff["unit"], "n_boot": int(n_boot), "seed": int(seed),
           "auc_difference": float(diff["diff"]), "auc_ci": [float(v) for v in diff["ci"]]}
    if slides is None:
        out["mcnemar_p"] = float(mcnemar(correct_a, correct_b)["p_value"])
        return out
    acc = paired_accuracy_difference(correct_a, correct_b, n_boot, seed, groups=slides)
    out.update(n_slides=len(np.unique(slides)), accuracy_difference=float(acc["diff"]),
               accuracy_ci=[float(v) for v in acc["ci"]], accuracy_p=float(acc["p_value"]))
    return out


def _shared_slides(a, b) -> np.ndarray | None:
    """The slide ids both runs' predictions carry, when they agree and are enough
    (`stats.MIN_SLIDES`); else None (patches)."""
    sa, sb = getattr(a, "slides", None), getattr(b, "slides", None)
    if sa is None or sb is None or sa.shape != sb.shape or (sa != sb).any():
        return None
    return sa if enough_slides(sa) else None
