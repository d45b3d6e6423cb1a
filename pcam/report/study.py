"""The recipe study's README block: one row per arm, from the arms' records.

Pure text from `results/study/<arm>/record.json` and `results/study/plan.json`
(written by `pcam.study`), so it is deterministic like the results table. Each
row: what the arm changes, the epochs it ran within the budget, the training
minutes it took, and valid and test scores with 95% bootstrap intervals.
"""

import json
import re
from pathlib import Path

from pcam.errors import PCamError
from pcam.records import load_record_file
from pcam.report.provenance import dirty_runs, short_commit
from pcam.report.table import best_epoch, metric_cell, replace_block

START, END = "<!-- study:start -->", "<!-- study:end -->"
PLAN = "plan.json"
# The score columns: (split, variant, metric), after arm, change, epochs, train min.
_SCORES = (("valid", "single", "roc_auc"), ("test", "single", "roc_auc"),
           ("test", "tta", "roc_auc"), ("test", "single", "accuracy"), ("test", "tta", "accuracy"))


def study_rows(folder: str | Path) -> list[dict]:
    """The complete arms in `folder` (results/study): MobileNet's, then the from-scratch
    ones, each in the plan's order but for `<arm>-seed<N>`, which follows `<arm>`.

    Each row: `arm`, `what`, `record`. An arm still training, or one whose
    record is missing, is left out (and counted by `pending_arms`).
    """
    folder = Path(folder)
    plan = _plan(folder)
    rows = []
    for arm, entry in plan["arms"].items():
        path = folder / arm / "record.json"
        record = load_record_file(path) if path.is_file() else None
        if record is not None and record["status"] == "complete":
            rows.append({"arm": arm, "what": entry["what"], "record": record})
    order = {row["arm"]: rank for rank, row in enumerate(rows)}

    def key(row):
        parent = re.sub(r"-seed\d+$", "", row["arm"])
        return (row["record"]["model"] != "mobilenet", order.get(parent, order[row["arm"]]),
                row["arm"] != parent, order[row["arm"]])

    return sorted(rows, key=key)


def pending_arms(folder: str | Path) -> list[str]:
    """Arms of the plan in `folder` that are not complete yet."""
    done = {row["arm"] for row in study_rows(folder)}
    return [arm for arm in _plan(Path(folder))["arms"] if arm not in done]


def _plan(folder: Path) -> dict:
    path = folder / PLAN
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PCamError(f"cannot read the study plan {path} ({error}); rerun "
                        "`python -m pcam study` to write it") from None


def _cell(record: dict, split: str, variant: str, key: str) -> str:
    """One percentage cell, as the results table writes it (accuracy at the chosen threshold)."""
    return metric_cell(record, split, variant, key, "chosen" if key == "accuracy" else "plain")


def _unit(rows: list[dict]) -> str:
    """What the bootstrap resampled ("patches" or "slides"), as the records say."""
    units = {((r["record"]["metrics"].get("test") or {}).get("single") or {}).get(
        "bootstrap_unit", "patches") for r in rows}
    return units.pop() if len(units) == 1 else "slides or patches (see each record)"


def _dirty_arms(rows: list[dict]) -> dict[str, list[str]]:
    """{short commit: [arms]} of the arms trained from a dirty tree, in table order."""
    found: dict[str, list[str]] = {}
    for record in dirty_runs([row["record"] for row in rows]):
        found.setdefault(short_commit(record), []).append(record["run"])
    return found


def study_table(rows: list[dict], pending: list[str] = ()) -> str:
    """Markdown: the study table and the notes under it."""
    if not rows:
        return "No arm of the recipe study is complete yet (`python -m pcam study`)."
    header = ("| arm | change | epochs | patches an epoch | train min | valid AUC (%) | "
              "test AUC (%) | test AUC TTA (%) | test acc (%) | test acc TTA (%) |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        record = row["record"]
        history = record["history"]
        best = best_epoch(record)
        still = "*" if best and history and best["epoch"] == history[-1]["epoch"] else ""
        minutes = record["timings"]["train_seconds"] / 60
        scores = [_cell(record, split, variant, key) for split, variant, key in _SCORES]
        patches = record["config"].get("max_samples")
        patches = f"{patches:,}" if patches else "all"
        lines.append(f"| `{row['arm']}` | {row['what']} | {len(history)}{still} | {patches} | "
                     f"{minutes:.0f} | " + " | ".join(scores) + " |")
    notes = [
        "",
        "Every arm is one change to a recipe, trained through its notebook on the PCam "
        "subset with the same training-time budget: the MobileNet arms change the transfer "
        "recipe (notebook 01), the `scratch-*` arms ResNet50 from scratch (notebook 02, "
        "scored without TTA: eight ResNet50 passes over test cost minutes here). What a "
        "training patch costs under the arm's settings was measured on this machine first, "
        "and the arm got as many epochs over every training patch (in whole batches) as fit "
        "the budget, or, where its planned epochs did not fit, fewer patches an epoch "
        "(`pcam.study`, "
        "`results/study/plan.json`). *epochs*: epochs run (early stopping on valid AUC may "
        "end an arm before its budget); `*`: the best valid AUC came in the last epoch, so "
        "the arm was still improving. *train min*: measured (the machine was shared, so "
        "expect up to 2x between runs). Accuracy is at the threshold chosen on valid; "
        f"± is the half-width of a bootstrap 95% interval over {_unit(rows)}. Choices are made on "
        "valid only; test is reported, never used to choose.",
    ]
    dirty = _dirty_arms(rows)
    if dirty:
        notes.append("")
        notes.append("**Dirty tree:** " + "; ".join(
            f"{', '.join(f'`{a}`' for a in arms)} (commit {commit})"
            for commit, arms in dirty.items()) + " trained with uncommitted changes in the "
            "tree, which the records do not store: they trace to that commit only up to "
            "those changes.")
    if pending:
        notes.append("")
        notes.append(f"Not complete yet: {', '.join(f'`{a}`' for a in pending)}.")
    return "\n".join(lines + notes)


def update_study_block(text: str, folder: Path, images: Path, prefix: str,
                       name: str = "README.md") -> str:
    """`text` with its study block rebuilt from `folder` (results/study), when both exist.

    Writes `images/study.png`. A README without the study markers, or a
    results folder without a study, is returned unchanged.
    """
    from pcam.plots.study import plot_study

    if START not in text or not (folder / PLAN).is_file():
        return text
    rows = study_rows(folder)
    block = study_table(rows, pending_arms(folder))
    if rows:
        plot_study(rows, images / "study.png")
        block += f"\n\n![Recipe study: valid and test ROC AUC per arm]({prefix}/study.png)"
    return replace_block(text, block, name=name, markers=(START, END),
                         what="recipe study's table")
