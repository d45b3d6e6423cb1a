"""A model card per published run (`results/<run>/MODEL_CARD.md`), written from its record.

What a reader needs before using the model elsewhere: what it is for and not for,
the data it learnt from and the limits of that data, its metrics with 95%
intervals, the decision threshold and how it was chosen, and how to load and run
it. Every number comes from the run's record (`pcam report` rewrites the card).

Reference: Mitchell et al., "Model Cards for Model Reporting", FAT* 2019.
"""

from pathlib import Path

from pcam.core.fileio import write_text
from pcam.core.paths import display_path
from pcam.report.cells import DASH, percent_cell
from pcam.report.table import epochs_per_phase

CARD = "MODEL_CARD.md"
_ROWS = (("ROC AUC", "roc_auc", None), ("accuracy", "accuracy", "at"),
         ("precision", "precision", "at"), ("recall (sensitivity)", "recall", "at"),
         ("specificity", "specificity", "at"), ("F1", "f1", "at"))


def model_card(record: dict, run_dir: Path, results: Path | None = None) -> str:
    """The card of the run in `run_dir` (Markdown), from `record` alone.

    Paths in it are relative to the project (`results/demo/mobilenet-demo`); a
    run outside the project is named as the project would hold it
    (`results/<run>`, relative to `results`, the records folder, when given), so
    a card reads the same wherever a copy of the folder sits.
    """
    run, model = record.get("run", Path(run_dir).name), record.get("model", "?")
    where = display_path(run_dir)
    if where.startswith("<external>") and results is not None:
        where = f"results/{Path(run_dir).relative_to(results).as_posix()}"
    config, backbone = record.get("config") or {}, record.get("backbone") or {}
    data = record.get("data") or {}
    info = data.get("info") or {}
    threshold = record.get("threshold") or {}
    recipe = backbone.get("recipe")
    if recipe == "transfer":
        what = (f"MobileNet v1 (width {config.get('alpha')}) pretrained on ImageNet "
                f"(`{backbone.get('weights_file')}`), with a new dense head "
                f"({_units(config)}), fine-tuned on PCam patches")
    else:
        what = (f"{model} trained from random weights on PCam patches, with a dense head "
                f"({_units(config)})")
    phases = ", ".join(f"{n} {phase}" for phase, n in epochs_per_phase(record).items())
    lines = [
        f"# Model card: {run}",
        "",
        f"Written by `python -m pcam report` from `{where}/record.json`; do not edit.",
        "",
        "## Model",
        "",
        f"- **What**: {what}.",
        "- **Input**: RGB patches of 96x96 pixels, 8 bits per channel (uint8, 0-255), "
        "H&E-stained lymph-node tissue at 10x; the model rescales them itself "
        f"({backbone.get('preprocessing')}).",
        "- **Output**: the probability that the centre 32x32 pixels of the patch hold metastatic "
        "tumour tissue (PCam's label; tumour only outside the centre does not count).",
        f"- **Training**: {phases or 'no epochs recorded'} epochs, "
        f"batch {config.get('batch_size')}, seed {config.get('seed')}; git commit "
        f"`{((record.get('environment') or {}).get('git') or {}).get('commit', '?')}`.",
        "",
        "## Intended use",
        "",
        "Research and teaching: comparing transfer learning with training from scratch on "
        "PatchCamelyon, and trying the model on other PCam-style patches. **Not for diagnosis** "
        "or any clinical decision: it was not validated for that, on any population or scanner.",
        "",
        "## Data and its limits",
        "",
        *_data_lines(data, info),
        "",
        "## Metrics",
        "",
        *_metric_lines(record, threshold),
        "",
        "## Decision threshold",
        "",
        *_threshold_lines(threshold),
        "",
        "## How to use it",
        "",
        "```bash",
        f"python -m pcam predict --run {where} FOLDER_OF_PATCHES --out predictions.csv",
        f"python -m pcam export --run {where} --format onnx --out {run}.onnx",
        "```",
        "",
        "```python",
        "import keras",
        f'model = keras.models.load_model("{where}/inference.keras", compile=False)',
        "# patches: a uint8 array (n, 96, 96, 3) of RGB values 0-255",
        "probability = model.predict(patches)[:, 0]",
        f"label = probability >= {_number(threshold.get('value'))}",
        "```",
        "",
        f"`{where}/inference.keras` is the model without its optimizer; where a clone does not "
        "have it (only small models are committed), train the run again from its settings "
        f"(`python -m pcam settings --run {where} --out {run}.toml`, then "
        f"`python -m pcam train --config {run}.toml`): the commands above then use its "
        "`checkpoints/best.keras`.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(record: dict, run_dir: Path, results: Path | None = None) -> Path:
    """Write `run_dir/MODEL_CARD.md` atomically (see `model_card`); return its path."""
    return write_text(Path(run_dir) / CARD, model_card(record, run_dir, results))


def _units(config: dict) -> str:
    units = config.get("head_units") or []
    return " -> ".join(str(u) for u in units) + " -> 1" if units else "one sigmoid unit"


def _number(value) -> str:
    return DASH if not isinstance(value, int | float) else f"{value:.3f}"


def _data_lines(data: dict, info: dict) -> list[str]:
    splits = data.get("splits") or {}
    counts = ", ".join(f"{split} {splits[split]['n']:,} ({splits[split]['positives']:,} positive)"
                       for split in ("train", "valid", "test")
                       if isinstance((splits.get(split) or {}).get("n"), int)
                       and isinstance(splits[split].get("positives"), int))
    synthetic = data.get("synthetic") or info.get("synthetic")
    source = info.get("label") or ("synthetic patches (not tissue)" if synthetic else "PCam")
    lines = [f"- **Source**: {source}; {counts or 'split sizes not recorded'}."]
    mapping = info.get("mapping") or {}
    if mapping:
        lines.append("- **Splits**: " + "; ".join(f"{k}: {v}" for k, v in mapping.items()) + ".")
    lines += [
        "- **Limits**: PCam's patches come from the lymph-node sections of Camelyon16, scanned "
        "at two Dutch centres; a model trained on them has not seen other scanners, stains, "
        "tissues or centres, and a small subset holds few slides, so patches of one slide are "
        "alike. Labels are per patch (the centre 32x32), not per slide or patient.",
    ]
    if info.get("source") == "images":
        lines.append("- The patches were re-encoded as JPEG by their source, so they are not "
                     "bit-identical to PCam's HDF5 files.")
    return lines


def _metric_lines(record: dict, threshold: dict) -> list[str]:
    metrics = record.get("metrics") or {}
    splits = [s for s in ("valid", "test") if (metrics.get(s) or {}).get("single")]
    if not splits:
        return ["No metrics recorded yet (`python -m pcam evaluate --run RUN`)."]
    at = f"at the threshold {_number(threshold.get('value'))}"
    lines = [f"Percentages with the half-width of the bootstrap 95% interval; the rates are {at}.",
             "", "| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for label, key, where in _ROWS:
        cells = []
        for split in splits:
            single = metrics[split]["single"]
            found = (single.get("at_chosen") or {}) if where else single
            ci = (single.get("ci") or {}).get(f"at_chosen.{key}" if where else key)
            cells.append(percent_cell(found.get(key), ci))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    n = " and ".join(f"{metrics[s]['single'].get('n', '?'):,} {s}" for s in splits
                     if isinstance(metrics[s]["single"].get("n"), int))
    if n:
        lines += ["", f"Scored on {n} patches."]
    return lines


def _threshold_lines(threshold: dict) -> list[str]:
    if not threshold:
        return ["None recorded yet (`python -m pcam evaluate --run RUN` chooses it)."]
    return [f"{_number(threshold.get('value'))}, chosen on the {threshold.get('split', '?')} "
            f"split: {threshold.get('rule', 'rule not recorded')}. Test never chose it. "
            "Where a use needs another balance of missed tumour and false alarms, choose "
            "a threshold for it on labelled patches of its own."]
