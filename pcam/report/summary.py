"""What the notebooks print after a run, written from its record.

The notebooks' conclusions must not hold typed numbers: they call
`conclusion()`, which reads every figure from the run record, and
`comparison()` for the paired test of two runs.
"""

from pathlib import Path

from pcam.evaluation.compare import paired_comparison
from pcam.evaluation.predictions import load_predictions
from pcam.report.cells import round_sig
from pcam.report.inputs import common_split
from pcam.report.protocol import comparison_text, data_label
from pcam.report.table import best_epoch, epochs_per_phase
from pcam.run.records import read_record, run_path


def evaluation_split(record: dict) -> str:
    """The split a run is judged on: test when it was evaluated, else valid."""
    return "test" if "test" in (record.get("metrics") or {}) else "valid"


def _pct(numbers: dict, key: str) -> str:
    """"85.1% (95% CI 83.9-86.3)" for a key such as "roc_auc" or "at_chosen.accuracy"."""
    value = numbers
    for part in key.split("."):  # only "at_chosen.*" and top-level keys are asked for
        value = value[part]
    if value is None:
        return "n/a"
    ci = (numbers.get("ci") or {}).get(key)
    text = f"{100 * value:.1f}%"
    return text + (f" (95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f})" if ci else "")


def conclusion(record: dict) -> str:
    """A Markdown paragraph of a run's outcome; every number comes from `record`."""
    split = evaluation_split(record)
    metrics = record["metrics"][split]
    single = metrics["single"]
    config = record["config"]
    phases = ", ".join(f"{phase} {n}" for phase, n in epochs_per_phase(record).items())
    best = best_epoch(record) or {}
    threshold = record.get("threshold") or {}
    minutes = (record.get("timings") or {}).get("train_seconds", 0) / 60
    lines = [
        f"**{record['run']}** ({record['model']}, weights: {config.get('weights') or 'random'}) "
        f"trained {len(record.get('history', []))} epochs ({phases}) in {round_sig(minutes)} "
        f"min on {data_label(record)}; the best validation AUC came at epoch "
        f"{best.get('epoch', '?')}.",
        "",
        f"On the **{split}** split ({single['n']:,} patches), at the threshold "
        f"{threshold.get('value', 0.5):.3f} chosen on valid: accuracy "
        f"{_pct(single, 'at_chosen.accuracy')}, precision {_pct(single, 'at_chosen.precision')}, "
        f"recall {_pct(single, 'at_chosen.recall')}, F1 {_pct(single, 'at_chosen.f1')}; "
        f"ROC AUC {_pct(single, 'roc_auc')}, PR AUC {_pct(single, 'pr_auc')}, "
        f"ECE {single['ece']:.3f}.",
    ]
    if "tta" in metrics:
        tta = metrics["tta"]
        gain = 100 * (tta["roc_auc"] - single["roc_auc"])
        lines += ["", f"With 8-fold dihedral test-time augmentation: accuracy "
                  f"{_pct(tta, 'at_chosen.accuracy')}, ROC AUC {_pct(tta, 'roc_auc')} "
                  f"({gain:+.1f} points of AUC over a single pass)."]
    if record.get("data", {}).get("synthetic"):
        lines += ["", "These patches are synthetic: the numbers check the pipeline, "
                  "not the science."]
    return "\n".join(lines)


def comparison(run_a: str, run_b: str, results: str | Path | None = None) -> str:
    """Markdown: McNemar's test and the paired AUC difference of two runs on their common split.

    Args:
        run_a, run_b: run names or folders.
        results: records folder; default `$PCAM_RESULTS_DIR` or `results/`.
    """
    records = [read_record(run, results) for run in (run_a, run_b)]
    split = common_split(records)
    if split is None:
        return "No split with predictions from both runs; nothing to compare."
    preds = [load_predictions(run_path(run, results), record, split)
             for run, record in zip((run_a, run_b), records, strict=True)]
    return comparison_text(paired_comparison(preds))
