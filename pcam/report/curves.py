"""The budget and data curves' README block: both models at several budgets and data sizes.

Pure text from `results/curves/<point>/record.json`, their saved test
predictions and `results/curves/plan.json` (written by `pcam study
--experiment curves`). A point is one model's recipe trained within one budget
on some number of training patches; the gap table pairs the two models at
each (budget, patches) and gives MobileNet's test ROC AUC minus ResNet50's,
with a paired bootstrap 95% interval over the same test patches.
"""

from pathlib import Path

from pcam.core.errors import PCamError
from pcam.evaluation.predictions import load_predictions
from pcam.evaluation.stats import paired_auc_difference
from pcam.report.cells import DASH, percent_cell
from pcam.report.inputs import complete_arms, read_plan
from pcam.report.progress import RULE_TEXT, budget_text, minutes_cell, progress_cell
from pcam.report.provenance import dirty_runs, short_commit
from pcam.report.table import replace_block

START, END = "<!-- curves:start -->", "<!-- curves:end -->"
PLAN = "plan.json"
N_BOOT, SEED = 1000, 0
TRANSFER, SCRATCH = "mobilenet", "resnet50"


def curve_points(folder: str | Path) -> list[dict]:
    """The complete points in `folder` (results/curves), by model, budget, then patches.

    Each: `run`, `model`, `budget` (planned minutes of the arm), `patches`
    (training patches used), `record`.
    """
    folder = Path(folder)
    plan = _plan(folder)
    points = []
    for run, entry, record in complete_arms(folder, plan):
        points.append({"run": run, "model": record["model"],
                       "budget": float(entry.get("budget_minutes") or 0),
                       "patches": int(record["data"]["splits"]["train"]["n"]),
                       "record": record})
    return sorted(points, key=lambda p: (p["model"] != TRANSFER, p["budget"], p["patches"]))


def pending_points(folder: str | Path) -> list[str]:
    done = {p["run"] for p in curve_points(folder)}
    return [run for run in _plan(Path(folder))["arms"] if run not in done]


def _plan(folder: Path) -> dict:
    return read_plan(folder, "curves", "python -m pcam study --experiment curves")


def gaps(folder: str | Path, points: list[dict]) -> list[dict]:
    """MobileNet minus ResNet50 on test at every (budget, patches) both have, paired.

    Each: `budget`, `patches`, `transfer`, `scratch` (the two points), and
    `diff`, `ci`, `unit` (None when the test predictions are missing or differ).
    """
    folder = Path(folder)
    by_key = {(p["model"], p["budget"], p["patches"]): p for p in points}
    found = []
    for (model, budget, patches), transfer in by_key.items():
        scratch = by_key.get((SCRATCH, budget, patches))
        if model != TRANSFER or scratch is None:
            continue
        a = load_predictions(folder / transfer["run"], transfer["record"], "test")
        b = load_predictions(folder / scratch["run"], scratch["record"], "test")
        gap = {"budget": budget, "patches": patches, "transfer": transfer, "scratch": scratch,
               "diff": None, "ci": None, "unit": None}
        if a is not None and b is not None and a.y_true.shape == b.y_true.shape and (
                a.y_true == b.y_true).all():
            diff = paired_auc_difference(a.y_true, a.y_prob, b.y_prob, N_BOOT, SEED)
            if diff["ci"] is not None:
                gap.update(diff=float(diff["diff"]), ci=[float(v) for v in diff["ci"]],
                           unit=diff["unit"])
        found.append(gap)
    return sorted(found, key=lambda g: (g["patches"], g["budget"]))


def _auc(record: dict, split: str) -> str:
    single = (record.get("metrics") or {}).get(split, {}).get("single") or {}
    return percent_cell(single.get("roc_auc"), (single.get("ci") or {}).get("roc_auc"))


def curves_table(points: list[dict], found_gaps: list[dict], pending: list[str] = ()) -> str:
    """Markdown: the points table, the gap table and the notes under them."""
    if not points:
        return ("No point of the budget and data curves is complete yet "
                "(`python -m pcam study --experiment curves`).")
    lines = ["| run | model | budget (min) | training patches | epochs | minutes | end | "
             "valid AUC (%) | test AUC (%) |", "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for p in points:
        record = p["record"]
        lines.append(f"| `{p['run']}` | {p['model']} | {p['budget']:g} | {p['patches']:,} | "
                     f"{len(record.get('history') or [])} | {minutes_cell(record)} | "
                     f"{progress_cell(record)} | {_auc(record, 'valid')} | "
                     f"{_auc(record, 'test')} |")
    if found_gaps:
        lines += ["", "| budget (min) | training patches | MobileNet test AUC (%) | "
                  "ResNet50 test AUC (%) | MobileNet minus ResNet50 (points, 95% CI) |",
                  "|---:|---:|---:|---:|---:|"]
        for gap in found_gaps:
            cell = DASH if gap["diff"] is None else (
                f"{100 * gap['diff']:+.1f} [{100 * gap['ci'][0]:+.1f}, "
                f"{100 * gap['ci'][1]:+.1f}]")
            lines.append(f"| {gap['budget']:g} | {gap['patches']:,} | "
                         f"{_auc(gap['transfer']['record'], 'test')} | "
                         f"{_auc(gap['scratch']['record'], 'test')} | {cell} |")
    units = {g["unit"] for g in found_gaps if g["unit"]}
    unit = units.pop() if len(units) == 1 else "patches or slides"
    notes = [
        "", "Each point is its model's recipe (the published runs' settings, single pass, no "
        "TTA) trained on the PCam subset within a training-time budget, with early stopping "
        "off; the epoch with the best valid AUC is scored. The budget curve gives every "
        "training patch; the data curve gives each model a share of them (the first ones "
        "of the shuffled training file) at one budget. The gap is a paired bootstrap "
        f"({N_BOOT} resamples) over the same test {unit}. ± is the half-width of each "
        "run's own bootstrap 95% interval.", "",
        budget_text([p["record"] for p in points]) + " " + RULE_TEXT]
    dirty = dirty_runs([p["record"] for p in points])
    if dirty:
        notes += ["", "**Dirty tree:** " + ", ".join(
            f"`{r['run']}` (commit {short_commit(r)})" for r in dirty) + " trained with "
            "uncommitted changes in the tree."]
    if pending:
        notes += ["", f"Not complete yet: {', '.join(f'`{a}`' for a in pending)}."]
    return "\n".join(lines + notes)


def update_curves_block(text: str, folder: Path, images: Path, prefix: str,
                        name: str = "README.md") -> str:
    """`text` with its curves block rebuilt from `folder` (results/curves), when both exist.

    Writes `images/curves.png`. A point the block shows that is no longer
    complete keeps the block as it is (`PCamError`).
    """
    import re

    from pcam.plots.curves import plot_curves

    if START not in text or not (folder / PLAN).is_file():
        return text
    points = curve_points(folder)
    current = text.split(START, 1)[1].split(END, 1)[0]
    lost = sorted(set(re.findall(r"^\| `([^`]+)` \|", current, flags=re.M))
                  - {p["run"] for p in points})
    if lost:
        raise PCamError(f"the curves table of {name} shows {', '.join(lost)}, which {folder} "
                        "no longer holds complete, so the curves block was kept as it is; "
                        "restore those runs' folders, or finish them with "
                        "`python -m pcam study --experiment curves`")
    found_gaps = gaps(folder, points)
    block = curves_table(points, found_gaps, pending_points(folder))
    if points:
        plot_curves(points, images / "curves.png")
        block += (f"\n\n![Budget and data curves: valid and test ROC AUC against training "
                  f"budget and training patches]({prefix}/curves.png)")
    return replace_block(text, block, name=name, markers=(START, END),
                         what="budget and data curves")
