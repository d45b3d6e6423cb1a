"""The README results block: table of metrics and the protocol under it.

Pure text from run records (no TensorFlow), so it is deterministic:
percentages with one decimal, "± h" the half-width of the bootstrap 95% CI,
timings to two significant figures (`pcam.report.cells`).
"""

from collections import Counter

from pcam.core.errors import PCamError
from pcam.report.cells import DASH, percent_cell, round_sig

START, END = "<!-- results:start -->", "<!-- results:end -->"
# (row label, key in record metrics / history, kind)
METRIC_ROWS = (
    ("accuracy (%)", "accuracy", "chosen"),
    ("precision (%)", "precision", "chosen"),
    ("recall (%)", "recall", "chosen"),
    ("F1 (%)", "f1", "chosen"),
    ("ROC AUC (%)", "roc_auc", "plain"),
)
_HISTORY_KEYS = {"roc_auc": "auc"}
CI_ROW = "± (95% CI) over"  # the bootstrap's unit per column: slides or patches


def epochs_per_phase(record: dict) -> dict[str, int]:
    """Epochs actually run in each phase ("head", "finetune", "scratch"), in order."""
    return dict(Counter(h["phase"] for h in record.get("history") or []))


def best_epoch(record: dict) -> dict | None:
    """The history entry with the highest validation AUC (the "best" checkpoint)."""
    history = [h for h in record.get("history") or [] if h.get("val_auc") is not None]
    if not history:
        return (record.get("history") or [None])[-1]
    return max(history, key=lambda h: (h["val_auc"], -h["epoch"]))


def _columns(records: list[dict]) -> list[tuple[str, str]]:
    """(split, variant) columns shown for every model."""
    columns = [("train", "single"), ("valid", "single"), ("test", "single")]
    if any("tta" in (r.get("metrics") or {}).get("test", {}) for r in records):
        columns.append(("test", "tta"))
    return columns


def ci_unit(record: dict, split: str, variant: str = "single") -> str | None:
    """What the bootstrap behind a column's ± resampled: "slides" or "patches".

    None where the column has no interval (train from Keras' running metrics, a
    split not scored, no replicates). Records older than `bootstrap_unit`
    resampled patches.
    """
    numbers = (record.get("metrics") or {}).get(split, {}).get(variant)
    if not numbers or not numbers.get("n_boot"):
        return None
    return numbers.get("bootstrap_unit", "patches")


def metric_cell(record: dict, split: str, variant: str, key: str, kind: str) -> str:
    if split == "train" and "train" not in (record.get("metrics") or {}):
        entry = best_epoch(record)  # running Keras metrics, threshold 0.5, no CI
        return percent_cell(entry.get(_HISTORY_KEYS.get(key, key))) if entry else DASH
    numbers = (record.get("metrics") or {}).get(split, {}).get(variant)
    if not numbers:
        return DASH
    if kind == "chosen":
        ci = numbers.get("ci", {}).get(f"at_chosen.{key}")
        return percent_cell(numbers["at_chosen"][key], ci)
    return percent_cell(numbers[key], numbers.get("ci", {}).get(key))


TRAIN_MINUTES, END_ROW = "train minutes (planned / realised)", "end of training"


def _time_cell(record: dict, split: str, variant: str, row: str) -> str:
    from pcam.report.progress import minutes_cell, progress_cell

    if row in (TRAIN_MINUTES, END_ROW):
        if split != "train":
            return ""
        return minutes_cell(record) if row == TRAIN_MINUTES else progress_cell(record)
    inference = (record.get("metrics") or {}).get(split, {}).get("inference")
    if not inference:
        return "" if split == "train" else DASH
    prefix = "tta_" if variant == "tta" else ""
    if row == "inference time (s)":
        value = inference.get(f"{prefix}seconds")
        return DASH if value is None else round_sig(value)
    value = inference.get(f"{prefix}images_per_s")
    return DASH if value is None else round_sig(value)


def results_table(records: list[dict]) -> str:
    """Markdown table in the lab report's shape: metrics x (train/valid/test per model).

    Args:
        records: the published run records, one per model, in display order.

    Returns:
        The table as Markdown (no trailing newline).
    """
    if not records:
        raise ValueError("records=[]: no published run to tabulate")
    columns = _columns(records)
    header = ["metric"] + [
        f"{r['model']} {split}{' TTA' if variant == 'tta' else ''}"
        for r in records for split, variant in columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for label, key, kind in METRIC_ROWS:
        cells = [metric_cell(r, s, v, key, kind) for r in records for s, v in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = [ci_unit(r, s, v) or "" for r in records for s, v in columns]
    lines.append(f"| {CI_ROW} | " + " | ".join(cells) + " |")
    for label in ("inference time (s)", "inference speed (patches/s)", TRAIN_MINUTES, END_ROW):
        cells = [_time_cell(r, s, v, label) for r in records for s, v in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_block(text: str, block: str, *, name: str = "README",
                  markers: tuple[str, str] = (START, END), what: str = "results table") -> str:
    """`text` with everything between `markers` (default the results markers) replaced by `block`.

    Raises:
        PCamError: the markers are missing, repeated or out of order.
    """
    start, end = markers
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise PCamError(
            f"{name} needs exactly one `{start}` line followed by one `{end}` line; "
            f"add them where the {what} should go"
        )
    head, rest = text.split(start)
    tail = rest.split(end)[1]
    return f"{head}{start}\n{block.strip()}\n{end}{tail}"
