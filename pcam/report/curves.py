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
from pcam.evaluation.predictions import load_predictions, same_patches
from pcam.evaluation.stats import paired_auc_contrast, paired_auc_difference
from pcam.report.cells import DASH, percent_cell
from pcam.report.inputs import complete_arms, read_plan
from pcam.report.progress import end_notes, epochs_cell, minutes_cell, progress_cell
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
        if same_patches(a, b):
            diff = paired_auc_difference(a.y_true, a.y_prob, b.y_prob, N_BOOT, SEED)
            if diff["ci"] is not None:
                gap.update(diff=float(diff["diff"]), ci=[float(v) for v in diff["ci"]],
                           unit=diff["unit"])
        found.append(gap)
    return sorted(found, key=lambda g: (g["patches"], g["budget"]))


def gap_changes(folder: str | Path, points: list[dict]) -> list[dict]:
    """How each model's test AUC and the gap move along each curve, end to end, paired.

    Along the budget curve (every training patch) from the smallest budget to the
    largest, and along the data curve (its budget) from the fewest patches to all:
    each model's change (its test AUC at the end minus at the start) and the gap's
    (MobileNet's change minus ResNet50's), each a paired bootstrap over the same
    test patches of the four runs (`paired_auc_contrast`).

    Each: `start`, `end` ((budget, patches)), `transfer`, `scratch`, `gap` (each
    {"value", "ci"}); a curve whose four end runs are not all complete, or whose
    test predictions are missing or differ, is left out.
    """
    folder = Path(folder)
    by_key = {(p["model"], p["budget"], p["patches"]): p for p in points}
    full = max((p["patches"] for p in points), default=0)
    budgets = sorted({p["budget"] for p in points if p["patches"] == full})
    shares = [p for p in points if p["patches"] < full]
    ends = []
    if len(budgets) > 1:
        ends.append(((budgets[0], full), (budgets[-1], full)))
    if shares:
        budget = shares[0]["budget"]
        ends.append(((budget, min(p["patches"] for p in shares)), (budget, full)))
    found = []
    for start, end in ends:
        runs = [by_key.get((model, *at)) for model in (TRANSFER, SCRATCH) for at in (start, end)]
        if None in runs:
            continue
        preds = [load_predictions(folder / p["run"], p["record"], "test") for p in runs]
        if not same_patches(*preds):
            continue
        y = preds[0].y_true
        a1, a2, b1, b2 = (p.y_prob for p in preds)
        change = {}
        for key, terms in (("transfer", [(1, a2), (-1, a1)]), ("scratch", [(1, b2), (-1, b1)]),
                           ("gap", [(1, a2), (-1, a1), (-1, b2), (1, b1)])):
            result = paired_auc_contrast(y, terms, N_BOOT, SEED)
            change[key] = {"value": result["value"], "ci": result["ci"]}
        found.append({"start": start, "end": end, **change})
    return found


def _change_cell(change: dict) -> str:
    if change["ci"] is None:
        return f"{100 * change['value']:+.1f}"
    low, high = (100 * v for v in change["ci"])
    return f"{100 * change['value']:+.1f} [{low:+.1f}, {high:+.1f}]"


def _auc(record: dict, split: str) -> str:
    single = (record.get("metrics") or {}).get(split, {}).get("single") or {}
    return percent_cell(single.get("roc_auc"), (single.get("ci") or {}).get("roc_auc"))


def curves_table(points: list[dict], found_gaps: list[dict], pending: list[str] = (),
                 changes: list[dict] = ()) -> str:
    """Markdown: the points table, the gap table, the changes along each curve
    (`gap_changes`) and the notes under them."""
    if not points:
        return ("No point of the budget and data curves is complete yet "
                "(`python -m pcam study --experiment curves`).")
    lines = ["| run | model | budget (min) | training patches | epochs | minutes | end | "
             "valid AUC (%) | test AUC (%) |", "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for p in points:
        record = p["record"]
        lines.append(f"| `{p['run']}` | {p['model']} | {p['budget']:g} | {p['patches']:,} | "
                     f"{epochs_cell(record)} | {minutes_cell(record)} | "
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
    if changes:
        lines += ["", "| along | from | to | MobileNet change (points, 95% CI) | "
                  "ResNet50 change (points, 95% CI) | change of the gap (points, 95% CI) |",
                  "|---|---|---|---:|---:|---:|"]
        for change in changes:
            (b1, n1), (b2, n2) = change["start"], change["end"]
            along = "budget curve" if n1 == n2 else "data curve"
            lines.append(f"| {along} | {b1:g} min, {n1:,} patches | {b2:g} min, {n2:,} "
                         f"patches | {_change_cell(change['transfer'])} | "
                         f"{_change_cell(change['scratch'])} | {_change_cell(change['gap'])} |")
    units = {g["unit"] for g in found_gaps if g["unit"]}
    unit = units.pop() if len(units) == 1 else "patches or slides"
    notes = [
        "", "Each point is its model's recipe (the published runs' settings, single pass, no "
        "TTA) trained on the PCam subset within a training-time budget, with early stopping "
        "off; the epoch with the best valid AUC is scored. The budget curve gives every "
        "training patch; the data curve gives each model a share of them (the first ones "
        "of the shuffled training file) at one budget. The gap is a paired bootstrap "
        f"({N_BOOT} resamples) over the same test {unit}. ± is the half-width of each "
        "run's own bootstrap 95% interval."
        + (" *Changes* follow each curve from its first point to its last: a model's test "
           "AUC at the last minus at the first, and the gap's change (MobileNet's change "
           "minus ResNet50's), each a paired bootstrap over the same test patches of the "
           "four runs." if changes else ""), "",
        end_notes([p["record"] for p in points])]
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
    block = curves_table(points, found_gaps, pending_points(folder), gap_changes(folder, points))
    if points:
        plot_curves(points, images / "curves.png")
        block += (f"\n\n![Budget and data curves: valid and test ROC AUC against training "
                  f"budget and training patches]({prefix}/curves.png)")
    return replace_block(text, block, name=name, markers=(START, END),
                         what="budget and data curves")
