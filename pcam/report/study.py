"""The recipe study's blocks: each arm as its paired difference to its baseline, on valid.

Pure text from `results/study/<arm>/record.json`, the arms' saved valid
predictions and `results/study/plan.json` (written by `pcam.study.experiments`), so it is
deterministic like the results table. An arm is its model's recipe with one
change, trained with each seed; its baseline is the recipe with the same seed
("baseline" for MobileNet, "scratch-baseline" for ResNet50, `<name>-seed<N>`
for seed N). For each seed the table gives the valid ROC AUC difference to the
baseline in AUC points, with a paired bootstrap 95% interval over the same
valid patches (over slides where the predictions carry them).

The verdict follows one rule (`RULE`): an effect is claimed only when the
paired interval excludes zero, in the same direction, for every seed (at
least two); otherwise "no difference detected at this budget". Test is not
shown: the study chooses recipes, and choices are made on valid only.
"""

import re
from pathlib import Path

from pcam.core.errors import PCamError
from pcam.evaluation.predictions import load_predictions, same_patches
from pcam.evaluation.stats import paired_auc_difference
from pcam.report.cells import DASH, percent_cell
from pcam.report.inputs import complete_arms, read_plan
from pcam.report.progress import end_notes, epochs_cell, minutes_cell, progress_cell
from pcam.report.provenance import dirty_runs, short_commit
from pcam.report.table import replace_block

START, END = "<!-- study:start -->", "<!-- study:end -->"
# The README's short form: one line per arm, its paired differences and verdict.
SUMMARY_START, SUMMARY_END = "<!-- study-summary:start -->", "<!-- study-summary:end -->"
PLAN = "plan.json"
STUDY_PAGE = "docs/study.md"  # where the full table is, from the README
N_BOOT, SEED = 1000, 0  # the paired bootstrap (fixed, so the README is stable)
BASELINES = {"mobilenet": "baseline", "resnet50": "scratch-baseline"}
RULE = ("an effect is claimed only when the paired 95% interval of the valid AUC difference "
        "excludes zero, in the same direction, for every seed (two at least); otherwise the "
        "table says *no difference detected at this budget*")
_SEED = re.compile(r"^(?P<arm>.+?)(?:-seed(?P<seed>\d+))?$")


def _split_name(arm: str) -> tuple[str, int]:
    match = _SEED.match(arm)
    return match["arm"], int(match["seed"] or 0)


def study_rows(folder: str | Path) -> list[dict]:
    """The complete arm runs in `folder` (results/study), MobileNet's first, each seed
    under its arm, baselines first, otherwise in the plan's order.

    Each row: `arm` (the run), `name` (the arm without its seed), `seed`, `what`,
    `record`, `baseline` (the run it is paired with, None for a baseline). An
    arm still training, or one whose record is missing, is left out (and counted
    by `pending_arms`).
    """
    folder = Path(folder)
    plan = _plan(folder)
    rows = []
    for arm, entry, record in complete_arms(folder, plan):
        name, seed = _split_name(arm)
        base = BASELINES.get(record.get("model"))
        baseline = None if name == base or base is None else (
            base + (f"-seed{seed}" if seed else ""))
        rows.append({"arm": arm, "name": name, "seed": seed, "what": entry.get("what", ""),
                     "record": record, "baseline": entry.get("baseline", baseline)})
    order = {}
    for row in rows:
        order.setdefault(row["name"], len(order))

    def key(row):
        return (row["record"]["model"] != "mobilenet", row["baseline"] is not None,
                order[row["name"]], row["seed"])

    return sorted(rows, key=key)


def pending_arms(folder: str | Path) -> list[str]:
    """Arms of the plan in `folder` that are not complete yet."""
    done = {row["arm"] for row in study_rows(folder)}
    return [arm for arm in _plan(Path(folder))["arms"] if arm not in done]


def _plan(folder: Path) -> dict:
    return read_plan(folder, "study", "python -m pcam study")


def paired_differences(folder: str | Path, rows: list[dict]) -> dict[str, dict | None]:
    """{arm: {"diff", "ci", "unit"} on valid (AUC, arm minus baseline)} for every arm
    with a baseline; None where either side's valid predictions are missing or the
    patches differ."""
    folder = Path(folder)
    by_arm = {row["arm"]: row for row in rows}
    found = {}
    for row in rows:
        base = by_arm.get(row["baseline"]) if row["baseline"] else None
        if base is None:
            continue
        a = load_predictions(folder / base["arm"], base["record"], "valid")
        b = load_predictions(folder / row["arm"], row["record"], "valid")
        if not same_patches(a, b):
            found[row["arm"]] = None
            continue
        slides = a.slides if a.slides is not None and b.slides is not None and (
            a.slides == b.slides).all() else None
        # the arm minus its baseline
        diff = paired_auc_difference(a.y_true, b.y_prob, a.y_prob, N_BOOT, SEED, groups=slides)
        found[row["arm"]] = None if diff["ci"] is None else {
            "diff": float(diff["diff"]), "ci": [float(v) for v in diff["ci"]],
            "unit": diff["unit"]}
    return found


def verdict(diffs: list[dict | None]) -> str:
    """The README's words for one arm's paired differences over its seeds (`RULE`)."""
    known = [d for d in diffs if d is not None]
    if len(known) < 2 or len(known) < len(diffs):
        return "one seed: not claimed" if len(known) == 1 else DASH
    if all(d["ci"][0] > 0 for d in known):
        return "better"
    if all(d["ci"][1] < 0 for d in known):
        return "worse"
    return "no difference detected at this budget"


def _diff_cell(found: dict | None) -> str:
    if found is None:
        return DASH
    low, high = (100 * v for v in found["ci"])
    return f"{100 * found['diff']:+.1f} [{low:+.1f}, {high:+.1f}]"


def _valid_auc(record: dict) -> str:
    single = (record.get("metrics") or {}).get("valid", {}).get("single") or {}
    return percent_cell(single.get("roc_auc"), (single.get("ci") or {}).get("roc_auc"))


def study_table(rows: list[dict], pending: list[str] = (),
                diffs: dict[str, dict | None] | None = None) -> str:
    """Markdown: the study table (one row per arm and seed) and the notes under it."""
    if not rows:
        return "No arm of the recipe study is complete yet (`python -m pcam study`)."
    diffs = diffs or {}
    seeds: dict[str, list[str]] = {}
    for row in rows:
        seeds.setdefault(row["name"], []).append(row["arm"])
    header = ("| arm | change | seed | epochs | minutes | end | valid AUC (%) | "
              "Δ valid AUC vs baseline (points, 95% CI) | verdict |")
    lines = [header, "|---|---|---:|---:|---:|---|---:|---:|---|"]
    shown = set()
    for row in rows:
        record = row["record"]
        first = row["name"] not in shown
        shown.add(row["name"])
        if row["baseline"] is None:
            words = "baseline" if first else ""
        else:
            words = verdict([diffs.get(arm) for arm in seeds[row["name"]]]) if first else ""
        what = re.sub(r", seed \d+$", "", row["what"]) if first else ""
        label = f"`{row['name']}`" if first else ""
        lines.append(
            f"| {label} | {what} | {row['seed']} | {epochs_cell(record)} | "
            f"{minutes_cell(record)} | {progress_cell(record)} | {_valid_auc(record)} | "
            f"{_diff_cell(diffs.get(row['arm'])) if row['baseline'] else ''} | {words} |")
    units = {d["unit"] for d in diffs.values() if d}
    unit = units.pop() if len(units) == 1 else "patches or slides"
    notes = [
        "",
        "Every arm is one change to its model's recipe, trained through its notebook on the "
        "PCam subset with the seeds shown, within a training-time budget "
        "(`pcam/experiments/study.toml`, "
        f"`results/study/plan.json`); {_stopping(rows)}, and the epoch with the best valid "
        "AUC is scored. *Δ* is the arm's valid ROC AUC "
        "minus its baseline's with the same seed, in AUC points, with a paired bootstrap 95% "
        f"interval over the same valid {unit} ({N_BOOT} resamples). *Verdict*: {RULE}. "
        "Only valid is shown: it is where recipes are chosen; test is read for the "
        "published runs and the curve points, never to choose.",
        "",
        end_notes([r["record"] for r in rows]),
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


def study_summary(rows: list[dict], diffs: dict[str, dict | None], link: str) -> str:
    """Markdown: the study in short, one line per arm that has a baseline (its change,
    its paired valid AUC difference for each seed, the verdict), then where the full
    table is (`link`)."""
    if not rows:
        return "No arm of the recipe study is complete yet (`python -m pcam study`)."
    seeds = sorted({row["seed"] for row in rows})
    arms: dict[str, list[dict]] = {}
    for row in rows:
        if row["baseline"] is not None:
            arms.setdefault(row["name"], []).append(row)
    lines = ["| arm | change | " + " | ".join(f"Δ valid AUC, seed {s}" for s in seeds)
             + " | verdict |", "|---|---|" + "---:|" * len(seeds) + "---|"]
    for name, runs in arms.items():
        by_seed = {row["seed"]: row["arm"] for row in runs}
        cells = [_diff_cell(diffs.get(by_seed[s])) if s in by_seed else DASH for s in seeds]
        what = re.sub(r", seed \d+$", "", runs[0]["what"])
        lines.append(f"| `{name}` | {what} | " + " | ".join(cells) + " | "
                     f"{verdict([diffs.get(row['arm']) for row in runs])} |")
    lines += ["", "Each arm is its model's recipe with one change, trained for the same "
              "budget; *Δ* is its valid ROC AUC minus its baseline's with the same seed, in "
              "AUC points, with a paired bootstrap 95% interval. *Verdict*: " + RULE + ". "
              f"Valid only; the full table, the budgets and the figure: [{link}]({link})."]
    return "\n".join(lines)


def _stopping(rows: list[dict]) -> str:
    """Whether early stopping could end an arm before its budget, as the records say."""
    patience = sorted({r["record"]["config"]["patience"] for r in rows
                       if r["record"]["config"]["patience"] < r["record"]["config"]["epochs"]})
    if not patience:
        return "early stopping is off, so every arm spends its budget"
    return (f"early stopping on valid AUC (patience {', '.join(map(str, patience))} epochs) "
            "may end an arm before its budget")


def _dirty_arms(rows: list[dict]) -> dict[str, list[str]]:
    """{short commit: [arms]} of the arms trained from a dirty tree, in table order."""
    found: dict[str, list[str]] = {}
    for record in dirty_runs([row["record"] for row in rows]):
        found.setdefault(short_commit(record), []).append(record["run"])
    return found


def _table(block: str) -> tuple[str, list[list[str]]]:
    """The header line of the Markdown table in `block` and its rows' cells (the
    `|---|` line, which starts with no space, is not a row)."""
    lines = [line for line in block.splitlines() if line.startswith("| ")]
    if not lines:
        return "", []
    return lines[0], [[c.strip() for c in line.strip().strip("|").split("|")]
                      for line in lines[1:]]


def shown_arms(block: str) -> set[str]:
    """The arm runs a study block lists: `name` on its first row, then one row per seed
    (`name-seed<N>`); in tables from before the seed column, the run in the first cell."""
    header, rows = _table(block)
    seeded = " seed |" in header
    found, name = set(), None
    for cells in rows:
        if cells[0].startswith("`"):
            name = cells[0].strip("`")
        if name is None:
            continue
        seed = cells[2] if seeded else "0"
        found.add(name if seed == "0" or not seeded else f"{name}-seed{seed}")
    return found


def summary_arms(block: str) -> set[str]:
    """The arm runs a study summary (`study_summary`) shows a difference for: each arm
    under each seed column whose cell is not a dash (`name`, `name-seed<N>`)."""
    header, rows = _table(block)
    seeds = [int(s) for s in re.findall(r"seed (\d+)", header)]
    found = set()
    for cells in rows:
        name = cells[0].strip("`")
        for seed, cell in zip(seeds, cells[2:], strict=False):
            if cell != DASH:
                found.add(name if seed == 0 else f"{name}-seed{seed}")
    return found


def update_study_block(text: str, folder: Path, images: Path, prefix: str,
                       name: str = "README.md") -> str:
    """`text` with its study blocks rebuilt from `folder` (results/study), when both exist:
    the full table (`START`/`END`, in docs/study.md) and the short form
    (`SUMMARY_START`/`SUMMARY_END`, in the README), whichever `text` has.

    Writes `images/study.png` with the full table. A text without the markers, or a
    results folder without a study, is returned unchanged. An arm the block
    shows now that is no longer complete in `folder` keeps the block as it is
    (`PCamError`): the report never shrinks what the README shows.
    """
    from pcam.plots.study import plot_study

    full, short = START in text, SUMMARY_START in text
    if not (full or short) or not (folder / PLAN).is_file():
        return text
    rows = study_rows(folder)
    shown = set()
    if full:
        shown |= shown_arms(text.split(START, 1)[1].split(END, 1)[0])
    if short:
        shown |= summary_arms(text.split(SUMMARY_START, 1)[1].split(SUMMARY_END, 1)[0])
    lost = sorted(shown - {row["arm"] for row in rows})
    if lost:
        raise PCamError(
            f"the study table of {name} shows {', '.join(lost)}, which {folder} no longer "
            "holds complete, so the study block was kept as it is; restore those arms' "
            "folders, or finish them with `python -m pcam study`")
    diffs = paired_differences(folder, rows)
    if full:
        block = study_table(rows, pending_arms(folder), diffs)
        if rows:
            plot_study(rows, diffs, images / "study.png")
            block += (f"\n\n![Recipe study: valid ROC AUC difference of each arm to its "
                      f"baseline, per seed]({prefix}/study.png)")
        text = replace_block(text, block, name=name, markers=(START, END),
                             what="recipe study's table")
    if short:
        text = replace_block(text, study_summary(rows, diffs, STUDY_PAGE), name=name,
                             markers=(SUMMARY_START, SUMMARY_END), what="recipe study's summary")
    return text
