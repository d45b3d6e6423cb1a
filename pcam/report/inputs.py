"""Reading what runs left in `results/`: records, the published set, predictions."""

import json
from pathlib import Path

from pcam.core.errors import PCamError
from pcam.core.paths import results_dir
from pcam.run.records import load_record_file


def load_records(results: str | Path | None = None) -> list[tuple[Path, dict]]:
    """All `results/*/record.json` and the runs of experiments (`results/<experiment>/
    <arm>/record.json` beside a `plan.json`: the study, the curves), as (run folder,
    record), sorted by run folder path.

    Args:
        results: records folder; default `$PCAM_RESULTS_DIR` or `results/`.

    Returns:
        A list of (run folder, record dict); empty when there are no records.

    Raises:
        PCamError: naming the file, when a record cannot be read, is not JSON
            or is invalid (see `pcam.run.records.load_record_file`).
    """
    folder = results_dir(results)
    paths = list(folder.glob("*/record.json"))
    for plan in folder.glob("*/plan.json"):
        paths += plan.parent.glob("*/record.json")
    return [(path.parent, load_record_file(path)) for path in sorted(paths)]


def published_records(rows: list[tuple[Path, dict]], *, published_only: bool = True
                      ) -> list[tuple[Path, dict]]:
    """The records flagged `"published": true`, one per model, sorted by model name.

    The table compares the models on one protocol, so its runs come from one
    place: where published runs sit both at the top of `results/` and in an
    experiment's folder (the curves' largest budgets), the experiment's replace
    the others only once it holds a complete published run of every model;
    until then its published runs wait (`waiting_runs` names them).

    Args:
        rows: from `load_records`.
        published_only: False takes every record, flagged or not (the demo's
            own report, which must never touch the README's published runs).

    Raises:
        PCamError: two chosen runs of the same model (names both runs).
    """
    if published_only:
        rows = [(d, r) for d, r in rows if r.get("published")]
        waiting = {d for d, _ in waiting_runs(rows)}
        rows = [(d, r) for d, r in rows if d not in waiting]
        places = {d.parent for d, _ in rows}
        experiments = sorted(p for p in places if (p / "plan.json").is_file())
        if len(places) > 1 and experiments:  # an experiment covering every model wins
            rows = [(d, r) for d, r in rows if d.parent == experiments[-1]]
    chosen: dict[str, tuple[Path, dict]] = {}
    for run_dir, record in rows:
        model = record.get("model")
        if model in chosen:
            other = chosen[model][1].get("run", chosen[model][0].name)
            raise PCamError(
                f"two published runs of model {model!r}: {other!r} and "
                f"{record.get('run', run_dir.name)!r}; set \"published\": false in one record.json"
            )
        chosen[model] = (run_dir, record)
    return [chosen[m] for m in sorted(chosen)]


def waiting_runs(rows: list[tuple[Path, dict]]) -> list[tuple[Path, dict]]:
    """Published runs of an experiment (a folder with a plan.json) that wait for the
    rest of it: the experiment has no complete published run yet of some model
    that is published elsewhere, so it cannot replace the table's runs."""
    published = [(d, r) for d, r in rows if r.get("published")]
    models = {r.get("model") for _, r in published}
    waiting = []
    for place in {d.parent for d, _ in published}:
        if not (place / "plan.json").is_file():
            continue
        covered = {r.get("model") for d, r in published
                   if d.parent == place and r.get("status") == "complete"}
        if covered != models:
            waiting += [(d, r) for d, r in published if d.parent == place]
    return sorted(waiting, key=lambda row: row[0])


def common_split(records: list[dict]) -> str | None:
    """The split every record has predictions for: test if possible, else valid."""
    return next((s for s in ("test", "valid")
                 if all(s in (r.get("predictions") or {}) for r in records)), None)


def read_plan(folder: Path, what: str, command: str) -> dict:
    """`folder/plan.json` of an experiment (`pcam.study.experiments`); `PCamError` naming the file.

    Args:
        what: the experiment in words ("study", "curves"), for the message.
        command: the command that writes the plan, for the message.
    """
    path = Path(folder) / "plan.json"
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PCamError(f"cannot read the {what} plan {path} ({error}); rerun "
                        f"`{command}` to write it") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("arms"), dict):
        raise PCamError(f"the {what} plan {path} has no 'arms' object; restore it from git or "
                        f"rerun `{command}`")
    return plan


def complete_arms(folder: Path, plan: dict) -> list[tuple[str, dict, dict]]:
    """(arm, plan entry, record) of the plan's arms whose record says "complete", in
    plan order; an arm still training, or without a record, is left out."""
    found = []
    for arm, entry in plan["arms"].items():
        path = Path(folder) / arm / "record.json"
        record = load_record_file(path) if path.is_file() else None
        if record is not None and record.get("status") == "complete":
            found.append((arm, entry, record))
    return found
