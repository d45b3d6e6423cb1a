"""How a run ended: its minutes against its plan, and whether it was still improving.

One rule for every run the report shows (published runs, study arms, curve points):

- *improving*: the best valid AUC came in the last epoch, so the budget, not
  the model, ended the run;
- *flat, schedule ended*: the best came earlier, but the learning rate had
  decayed below `LOW_RATE` of the phase's peak by the end, so the flat end may
  be the schedule's annealing: no evidence either way about a longer schedule;
- *plateaued*: the best came earlier while the rate was still at least
  `LOW_RATE` of its peak: more epochs at that rate did not help;
- *one epoch*: validated once (a budget that buys one epoch or part of one),
  so there is no trend to read.

A planned run (`config.planned_minutes`, from `pcam.study.budget.plan_budget`)
is flagged when its realised training minutes are more than `TOLERANCE` away
from the plan (a busy machine, or costs that did not hold).
"""

import math

from pcam.report.cells import round_sig

TOLERANCE = 0.15
LOW_RATE = 0.1
IMPROVING, SCHEDULE_ENDED, PLATEAUED = "improving", "flat, schedule ended", "plateaued"
ONE_EPOCH = "one epoch"


def budget_check(record: dict) -> dict | None:
    """{"planned", "realised" (minutes), "ratio", "flagged"} of a planned run, else None."""
    planned = (record.get("config") or {}).get("planned_minutes")
    seconds = (record.get("timings") or {}).get("train_seconds")
    if not planned or seconds is None:
        return None
    realised = seconds / 60
    ratio = realised / planned
    return {"planned": planned, "realised": realised, "ratio": ratio,
            "flagged": abs(ratio - 1) > TOLERANCE}


def minutes_cell(record: dict) -> str:
    """"planned / realised" training minutes ("– / 9" unplanned); † when flagged."""
    check = budget_check(record)
    seconds = (record.get("timings") or {}).get("train_seconds") or 0.0
    if check is None:
        return f"– / {seconds / 60:.0f}"
    mark = " †" if check["flagged"] else ""
    return f"{check['planned']:.0f} / {check['realised']:.0f}{mark}"


def _epoch_share(record: dict) -> float | None:
    """The share of the training patches one epoch saw where the plan bought epochs of
    fewer batches (`steps_per_epoch`) than one pass, else None."""
    config = record.get("config") or {}
    steps, batch = config.get("steps_per_epoch"), config.get("batch_size")
    patches = (((record.get("data") or {}).get("splits") or {}).get("train") or {}).get("n")
    if not (steps and batch and patches) or steps * batch >= patches:
        return None
    return steps * batch / patches


def epochs_cell(record: dict) -> str:
    """Epochs run over the training patches: whole epochs as a count; where the plan
    bought less than one epoch (`steps_per_epoch` batches of an epoch), the share of
    the training patches seen, e.g. "0.88"."""
    epochs = len(record.get("history") or [])
    share = _epoch_share(record)
    return str(epochs) if share is None else f"{epochs * share:.2f}"


PART_EPOCH_TEXT = ("*Epochs* with decimals count the training patches seen in passes over "
                   "the whole training set: the plan bought epochs of fewer batches "
                   "(`steps_per_epoch`) than one pass.")


def part_epochs(records: list[dict]) -> bool:
    """Whether any of `records` trained part of an epoch (`epochs_cell` shows a share)."""
    return any(_epoch_share(r) is not None for r in records)


def _peak_rate(record: dict, phase: str) -> float | None:
    config = record.get("config") or {}
    key = "finetune_learning_rate" if phase == "finetune" else "learning_rate"
    value = config.get(key)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def progress(record: dict) -> dict | None:
    """The rule above applied to `record`'s history; None without validation AUCs.

    Returns:
        {"state" (IMPROVING, SCHEDULE_ENDED, PLATEAUED or ONE_EPOCH), "best_epoch",
        "last_epoch", "final_rate", "rate_share" (final rate / the last phase's
        peak, None when unknown)}.
    """
    history = [h for h in record.get("history") or []
               if isinstance(h.get("val_auc"), int | float) and math.isfinite(h["val_auc"])]
    if not history:
        return None
    best = max(history, key=lambda h: (h["val_auc"], -h["epoch"]))
    last = history[-1]
    rate = last.get("learning_rate")
    peak = _peak_rate(record, last.get("phase", ""))
    share = rate / peak if isinstance(rate, int | float) and peak else None
    if len(history) == 1:  # one validation: no trend to read
        state = ONE_EPOCH
    elif best["epoch"] == last["epoch"]:
        state = IMPROVING
    elif share is not None and share < LOW_RATE:
        state = SCHEDULE_ENDED
    else:
        state = PLATEAUED
    return {"state": state, "best_epoch": best["epoch"], "last_epoch": last["epoch"],
            "final_rate": rate, "rate_share": share}


def progress_cell(record: dict) -> str:
    """The rule's verdict and the final learning rate as a share of its peak."""
    found = progress(record)
    if found is None:
        return "–"
    share = found["rate_share"]

    return found["state"] + (f" (rate {round_sig(100 * share)}% of peak)" if share is not None
                             else "")


RULE_TEXT = (
    "*End* applies one rule to every run: *improving* when the best valid AUC came in the "
    "last epoch (the budget ended the run); *flat, schedule ended* when it came earlier but "
    f"the learning rate had decayed below {LOW_RATE:.0%} of its peak (the flat end may be "
    "the schedule's annealing, so a longer schedule is untested, not ruled out); "
    "*plateaued* when it came earlier at a rate still above that; *one epoch* when the run "
    "was validated once, so there is no trend to read. The rate at the end is given as a "
    "share of the phase's peak.")


def budget_text(records: list[dict]) -> str:
    """What the *minutes* cells mean, true for the records shown."""
    text = ("*Minutes* are planned / realised training minutes (scoring after training "
            "excluded).")
    if any(budget_check(r) for r in records):
        text += (" A plan is whole epochs over every training patch (a fraction of one epoch "
                 "only where a budget buys less), predicted from costs measured on this machine "
                 "(medians of repeated timings, `pcam.study.budget`); † marks a run whose "
                 f"realised minutes are more than {TOLERANCE:.0%} off its plan.")
    if not all(budget_check(r) for r in records):
        text += " A dash for the plan: the run was made before plans were recorded."
    return text


def end_notes(records: list[dict]) -> str:
    """The note under a table of runs: what its minutes, *end* and epochs cells mean."""
    return (budget_text(records) + " " + RULE_TEXT
            + (" " + PART_EPOCH_TEXT if part_epochs(records) else ""))
