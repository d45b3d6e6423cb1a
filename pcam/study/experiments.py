"""Budgeted experiments on the PCam subset: the recipe study and the budget and data curves.

Each experiment is a set of named runs ("arms") trained through the notebooks
like any run, into `results/<experiment>/<arm>/`, each with a training-time
budget. Before an arm first trains, what one training patch costs under its
settings is measured on this machine (`pcam.study.budget.measure_costs`,
medians of repeated timings; arms with the same cost-relevant settings share
one measurement), and its whole epochs over the whole training set are planned
to fill the budget (`plan_budget`). Measurements and plans are kept in
`results/<experiment>/plan.json`, so a rerun trains every arm the same way,
resumes an interrupted one and skips those complete. Early stopping is off
(patience above any epoch count), so every arm spends its budget; the best
epoch on valid is still the one scored. Scoring after training is outside the
budget.

- `study`: the recipe study. Each arm is its model's recipe with one change,
  trained with two seeds; the report pairs every arm with its baseline of the
  same seed, on valid (`pcam.report.study`).
- `curves`: each model's chosen recipe at several budgets (10, 30, 100 minutes)
  and, at 30 minutes, on 1/8 and 1/2 of the training patches: how the gap
  between transfer and training from scratch moves with time and data. The
  100-minute points on every patch are the published runs (`published`, and
  TTA for MobileNet), so one command makes the curves and the README table.

The experiments are files: each model's recipe in `pcam/experiments/recipes.toml`,
the study's arms in `study.toml`, the curves' budgets and shares in `curves.toml`
(settings as `pcam train --config` reads them). `python -m pcam study [ARM ...]`
and `python -m pcam study --experiment curves` run them.
"""

import json
import math
from pathlib import Path
from typing import Any

from pcam.core.errors import PCamError
from pcam.core.fileio import write_text
from pcam.core.paths import DEMO_WEIGHTS, PROJ_ROOT, results_dir, terminal_path
from pcam.run.config import TrainConfig
from pcam.run.presets import EXPERIMENTS_DIR
from pcam.run.settings import MODELS, read_presets, read_toml, settings_values
from pcam.study.budget import MAX_EPOCHS, cost_key, measure_costs, plan_budget
from pcam.study.plan_file import FIX_PLAN, check_costs
from pcam.study.plan_file import read_plan as _read_plan

SUBSET_DIR = PROJ_ROOT / "data" / "pcam-subset"  # where the README imports the subset
PLAN = "plan.json"


def _study(recipes: dict[str, dict[str, Any]], path: Path) -> dict[str, dict[str, Any]]:
    """The arms of `study.toml`: every arm with each seed (seed 0 as NAME, another as
    NAME-seedS), its settings its recipe's with its changes."""
    spec = read_toml(path)
    arms = {}
    for name, table in spec["arms"].items():
        table = dict(table)
        what, model = table.pop("what"), table.pop("model")
        baseline = spec["baseline"][model]
        for seed in spec["seeds"]:
            suffix = f"-seed{seed}" if seed else ""
            arms[name + suffix] = {
                "what": what + (f", seed {seed}" if seed else ""), "model": model,
                "settings": {**recipes[model], **settings_values(path, table), "seed": seed},
                "budget_minutes": float(spec["budget_minutes"]),
                "baseline": None if name == baseline else baseline + suffix, "seed": seed}
    return arms


def _curves(recipes: dict[str, dict[str, Any]], path: Path) -> dict[str, dict[str, Any]]:
    """The arms of `curves.toml`: each model's recipe at each budget on every training
    patch (the largest is its published run), and at the data budget on each share."""
    spec = read_toml(path)
    published = spec["published"]
    arms = {}
    for model in spec["models"]:
        top = max(spec["budget_minutes"])
        for minutes in spec["budget_minutes"]:
            extra = {}
            if minutes == top:
                extra = settings_values(path, {k: v for k, v in published.items()
                                               if not isinstance(v, dict)})
                extra.update(settings_values(path, published.get(model, {})))
            arms[f"{model}-{minutes:g}min"] = {
                "what": f"{model}, {minutes:g} minutes, every training patch", "model": model,
                "settings": {**recipes[model], **extra}, "budget_minutes": float(minutes),
                "share": 1}
        minutes = spec["data_budget_minutes"]
        for share in spec["data_shares"]:
            arms[f"{model}-{minutes:g}min-1of{share}"] = {
                "what": f"{model}, {minutes:g} minutes, 1/{share} of the training patches",
                "model": model, "settings": dict(recipes[model]),
                "budget_minutes": float(minutes), "share": share}
    return arms


def _recipes(path: Path) -> dict[str, dict[str, Any]]:
    presets = read_presets(path)
    return {model: {**presets["both"], **presets.get(model, {})} for model in MODELS}


# Each model's recipe, as the first study chose it on valid (`recipes.toml`).
RECIPES = _recipes(EXPERIMENTS_DIR / "recipes.toml")

# {experiment: {arm: {"what", "model", "settings", "budget_minutes", ...}}}, from the
# files of the same names.
EXPERIMENTS: dict[str, dict[str, dict[str, Any]]] = {
    "study": _study(RECIPES, EXPERIMENTS_DIR / "study.toml"),
    "curves": _curves(RECIPES, EXPERIMENTS_DIR / "curves.toml")}


def arm_config(name: str, *, experiment: str = "study", data_dir=None, weights_dir=None,
               overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The settings of arm `name` before its budget sets its epochs.

    Args:
        name: an arm of `EXPERIMENTS[experiment]`.
        experiment: "study" or "curves".
        data_dir: the subset's data folder (default: `data/pcam-subset`).
        weights_dir: folder of ImageNet MobileNet files named
            `mobilenet_v1_<alpha>_imagenet_no_top.h5` for widths other than 0.5
            (None: Keras' "imagenet" download); alpha 0.5 always starts from the
            file shipped in `pcam/assets/`.
        overrides: settings applied last (tests use short runs).
    """
    arms = _arms(experiment)
    if name not in arms:
        raise PCamError(f"unknown {experiment} arm {name!r}; arms: {', '.join(arms)}")
    arm = arms[name]
    model = arm["model"]
    settings = {**arm["settings"], **(overrides or {}), "run": name}
    settings["data_dir"] = str(data_dir if data_dir is not None else SUBSET_DIR)
    if model == "mobilenet" and "weights" not in (overrides or {}):
        settings["weights"] = _weights(settings["alpha"], weights_dir)
    if arm.get("share", 1) > 1:
        from pcam.data.h5read import open_split

        settings["max_samples"] = open_split(settings["data_dir"], "train").length // arm["share"]
    return TrainConfig.for_model(model, **settings)


def _arms(experiment: str) -> dict[str, dict[str, Any]]:
    if experiment not in EXPERIMENTS:
        raise PCamError(f"unknown experiment {experiment!r}; use one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[experiment]


def _weights(alpha: float, weights_dir) -> str:
    if alpha == 0.5:  # shipped in the repository (the same file as Keras' layout of it)
        return str(DEMO_WEIGHTS)
    if weights_dir is not None:
        path = Path(weights_dir) / f"mobilenet_v1_{alpha:g}_imagenet_no_top.h5"
        if not path.is_file():
            raise PCamError(f"no weights file {path} for alpha {alpha:g}; --weights-dir must "
                            "hold mobilenet_v1_<alpha>_imagenet_no_top.h5 for every width")
        return str(path)
    return str(DEMO_WEIGHTS) if alpha == 0.5 else "imagenet"


def run_study(arms: list[str] | None = None, *, experiment: str = "study", data_dir=None,
              results=None, weights_dir=None, budget_minutes: float | None = None,
              max_epochs: int = MAX_EPOCHS, overrides: dict[str, Any] | None = None,
              train: bool = True) -> list[Path]:
    """Plan (once) and train every arm in `arms` (default all) into `results/<experiment>/`.

    Args:
        budget_minutes: every arm's budget instead of its own (tests use short ones).
        train: False plans the arms (measures their costs, writes `plan.json`) and
            trains nothing. Once every arm is planned, no run rewrites `plan.json`,
            so several processes (one per core, say) can train disjoint arms at once.

    Returns:
        The arms' run folders.

    Raises:
        PCamError: an unknown arm, a missing weights file, bad data, or an arm
            planned before for another budget (move its plan away to plan afresh).
    """
    from pcam.core.environment import hardware_info
    from pcam.execute.notebooks import run_notebook
    from pcam.run.records import RECORD, load_record_file
    from pcam.run.runlock import refuse_if_locked

    folder = results_dir(results) / experiment
    plan_path = folder / PLAN
    plan = _read_plan(plan_path) or {"hardware": hardware_info(), "arms": {}}
    names = list(arms or _arms(experiment))
    configs = {n: arm_config(n, experiment=experiment, data_dir=data_dir,
                             weights_dir=weights_dir, overrides=overrides)
               for n in names}  # every arm checked before any trains
    for name in configs:  # an arm another process trains: refused before any cost is measured
        refuse_if_locked(folder / name)
    done = []
    for name, config in configs.items():
        minutes = budget_minutes or _arms(experiment)[name]["budget_minutes"]
        planned = plan["arms"].get(name)
        if planned is not None and planned.get("budget_minutes") != minutes:
            raise PCamError(f"{terminal_path(plan_path)} planned arm {name} for "
                            f"{planned.get('budget_minutes')} minutes, not {minutes:g}; keep "
                            "that budget, or move the folder away to plan afresh")
        if planned is None:
            key = cost_key(config)
            twin = next((a for a in plan["arms"].values() if a.get("cost_key") == key), None)
            costs = twin["costs"] if twin else measure_costs(config)
            n = _patches(config)
            settings = plan_budget(config, costs, minutes, n["train"], n["valid"], max_epochs)
            arm = _arms(experiment)[name]
            plan["arms"][name] = {"what": arm["what"], "budget_minutes": minutes,
                                  "baseline": arm.get("baseline"), "cost_key": key,
                                  "costs": costs, "settings": settings}
            folder.mkdir(parents=True, exist_ok=True)
            write_text(plan_path, json.dumps(plan, indent=1) + "\n")
            shape = (f"{settings['epochs']} epochs" if settings["steps_per_epoch"] is None else
                     f"{settings['epochs']} epoch(s) of {settings['steps_per_epoch']} batches")
            print(f"{experiment}: {name}: {shape} over {n['train']:,} training patches fit "
                  f"{minutes:g} minutes here (planned {settings['planned_minutes']:g})",
                  flush=True)
        config = config.replace(**plan["arms"][name]["settings"])
        done.append(folder / name)
        if not train:
            continue
        record = folder / name / RECORD
        if record.is_file() and load_record_file(record)["status"] == "complete":
            print(f"{experiment}: {name} is complete; skipped", flush=True)
        else:
            run_notebook(config, results=folder, skip_complete=True)  # complete meanwhile: kept
    return done


def plan_longer(arms: list[str], minutes: float, *, experiment: str = "study", data_dir=None,
                results=None, max_epochs: int = 100) -> dict[str, dict]:
    """Settings that fill `minutes` of training for each arm, from its costs in `plan.json`.

    How a preset gets its budget: the chosen arm's measured costs, planned for
    another budget (`plan_budget`); nothing is trained or measured.

    Raises:
        PCamError: `minutes` not a positive finite number, an arm without measured
            costs, or a `plan.json` that is no plan (one line naming the arm).
    """
    try:
        budget = not isinstance(minutes, bool) and isinstance(minutes, int | float) and (
            math.isfinite(minutes) and minutes > 0)
    except OverflowError:  # an int beyond any float
        budget = False
    if not budget:
        raise PCamError(f"--plan-minutes {minutes!r}: use a positive finite number of minutes")
    plan_path = results_dir(results) / experiment / PLAN
    plan = _read_plan(plan_path) or {"arms": {}}
    planned = {}
    for name in arms:
        if name not in plan["arms"]:
            raise PCamError(f"arm {name!r} has no measured costs in {terminal_path(plan_path)}; "
                            f"run `pcam study {name}` first")
        arm = plan["arms"][name]
        config = (arm_config(name, experiment=experiment, data_dir=data_dir)
                  if name in _arms(experiment) else None)
        if config is None or "data_dir" in arm["cost_key"]:  # a plan from before cost_key()
            try:
                config = TrainConfig.from_dict({**arm["cost_key"], "run": name})
            except PCamError as error:
                raise PCamError(f"{terminal_path(plan_path)}: arm {name!r} has a bad "
                                f"'cost_key' ({error}); {FIX_PLAN}") from None
        check_costs(plan_path, name, arm["costs"], config)
        n = _patches(config)
        planned[name] = plan_budget(config, arm["costs"], minutes, n["train"], n["valid"],
                                    max_epochs)
    return planned


def _patches(config: TrainConfig) -> dict[str, int]:
    """{"train", "valid"}: the patches an epoch trains on and validates on."""
    from pcam.data.h5read import open_split

    n = {s: open_split(config.data_dir, s).length for s in ("train", "valid")}
    return {"train": min(n["train"], config.max_samples or n["train"]),
            "valid": min(n["valid"], config.max_eval_samples or n["valid"])}
