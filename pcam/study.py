"""The recipe study: what each ingredient of the transfer recipe adds, under one budget.

Every arm is the subset preset's MobileNet run with one change (`ARMS`),
trained through notebook 01 like any run, into `results/study/<arm>/`; the
`scratch-*` arms do the same for ResNet50 from scratch (notebook 02). Each arm
gets the same training-time budget (`BUDGET_MINUTES`): before an arm first
trains, what one training patch costs under its settings (model width, input
size, trainable layers, augmentations) is measured on this machine, and its
epochs (each over every training patch) are as many as fit the budget with
their validation passes and checkpoints; an arm too slow for five such epochs
sees fewer patches an epoch instead (`pcam.train.budget`). Measurements and
settings are kept in `results/study/plan.json`, so a rerun trains every arm the
same way, resumes an interrupted one and skips those complete. Scoring after training (valid and
test, single pass and TTA) is outside the budget.

`python -m pcam study` runs it; `pcam.report.study` turns the records into the
README's study table.
"""

import json
from pathlib import Path
from typing import Any

from pcam.config import TrainConfig
from pcam.errors import PCamError
from pcam.fileio import write_text
from pcam.paths import DEMO_WEIGHTS, display_path, results_dir
from pcam.train.budget import MAX_EPOCHS, measure_costs, plan_budget

BUDGET_MINUTES = 10.0
FOLDER = "study"  # under the results folder
PLAN = "plan.json"

# The arms' common settings, on top of the subset preset's MobileNet: one head
# epoch, then fine-tune epochs; at least these five, more where the budget allows.
# The recipe the study started from is pinned here, so that the preset can take the
# study's outcome without changing the arms.
BASE: dict[str, Any] = {"epochs": 5, "head_epochs": 1, "alpha": 0.5, "finetune_layers": 24,
                        "patience": 5, "published": False}
# ResNet50 from scratch (arms named scratch-*), for the fair comparison: which of its
# settings learns most within the same budget. Three epochs (one of warm-up). Scored
# without TTA: eight ResNet50 passes over test cost about 8 minutes here, and the arms
# are compared on valid.
BASE_SCRATCH: dict[str, Any] = {"epochs": 3, "warmup_epochs": 1, "batch_size": 64,
                                "learning_rate": 1e-3, "bn_momentum": 0.99, "patience": 5,
                                "tta": False, "published": False}

# name: (what changes from the baseline, settings). The baseline is MobileNet 0.5
# at 96 px, its top 24 layers (4 blocks) fine-tuned, every augmentation.
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("the starting recipe (published before the study): alpha 0.5, 96 px, "
                 "top 24 layers, all augmentations", {}),
    "head-only": ("no fine-tuning: only the new head trains, on the frozen base",
                  {"head_epochs": 5}),
    "finetune-12": ("fine-tune the top 12 layers (2 blocks)", {"finetune_layers": 12}),
    "finetune-48": ("fine-tune the top 48 layers (8 blocks)", {"finetune_layers": 48}),
    "finetune-all": ("fine-tune every layer (BatchNorm still frozen)", {"finetune_layers": 86}),
    "alpha-0.25": ("width 0.25", {"alpha": 0.25}),
    "alpha-0.75": ("width 0.75", {"alpha": 0.75}),
    "size-128": ("input upsampled to 128 px", {"image_size": 128}),
    "size-160": ("input upsampled to 160 px", {"image_size": 160}),
    "aug-none": ("no augmentation", {"augment": ()}),
    "aug-dihedral": ("flips and 90-degree rotations only", {"augment": ("dihedral",)}),
    "aug-shift": ("dihedral + shift", {"augment": ("dihedral", "shift")}),
    "aug-stain": ("dihedral + shift + HED stain jitter",
                  {"augment": ("dihedral", "shift", "hed")}),
    "baseline-seed1": ("the baseline, seed 1", {"seed": 1}),
    "baseline-seed2": ("the baseline, seed 2", {"seed": 2}),
    "finetune-48-seed1": ("finetune-48, seed 1", {"finetune_layers": 48, "seed": 1}),
    "scratch-baseline": ("ResNet50 from scratch, its starting recipe: batch 64, "
                         "learning rate 1e-3, BatchNorm momentum 0.99", {"model": "resnet50"}),
    "scratch-bn0.9": ("ResNet50, BatchNorm momentum 0.9", {"model": "resnet50",
                                                           "bn_momentum": 0.9}),
    "scratch-batch32": ("ResNet50, batch 32 (twice the steps)", {"model": "resnet50",
                                                                 "batch_size": 32}),
    "scratch-lr3e-3": ("ResNet50, learning rate 3e-3", {"model": "resnet50",
                                                        "learning_rate": 3e-3}),
    "scratch-aug-dihedral": ("ResNet50, flips and rotations only",
                             {"model": "resnet50", "augment": ("dihedral",)}),
    # On top of scratch-bn0.9, the one change that made ResNet50 learn in this budget.
    "scratch-bn0.9-lr3e-3": ("ResNet50, BatchNorm momentum 0.9, learning rate 3e-3",
                             {"model": "resnet50", "bn_momentum": 0.9, "learning_rate": 3e-3}),
    "scratch-bn0.9-batch32": ("ResNet50, BatchNorm momentum 0.9, batch 32 (twice the steps)",
                              {"model": "resnet50", "bn_momentum": 0.9, "batch_size": 32}),
}


def arm_config(name: str, *, data_dir=None, weights_dir=None,
               overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The settings of arm `name` before its budget sets `max_samples`.

    Args:
        name: a key of `ARMS`.
        data_dir: the subset's data folder (default: the subset preset's).
        weights_dir: folder of ImageNet MobileNet files named
            `mobilenet_v1_<alpha>_imagenet_no_top.h5`; None: the file shipped in
            `pcam/assets/` for alpha 0.5, Keras' "imagenet" download otherwise.
        overrides: settings applied last (tests use short runs).
    """
    if name not in ARMS:
        raise PCamError(f"unknown study arm {name!r}; arms: {', '.join(ARMS)}")
    settings = dict(ARMS[name][1])
    model = settings.pop("model", "mobilenet")
    base = BASE_SCRATCH if model == "resnet50" else BASE
    settings = {**base, **settings, **(overrides or {}), "run": name}
    if data_dir is not None:
        settings["data_dir"] = str(data_dir)
    if model == "mobilenet" and "weights" not in (overrides or {}):
        settings["weights"] = _weights(settings["alpha"], weights_dir)
    config = TrainConfig.for_model(model, "subset", **settings)
    # Patches an epoch come from the arm's plan (every one, unless the budget is short).
    return config if "max_samples" in settings else config.replace(max_samples=None)


def _weights(alpha: float, weights_dir) -> str:
    if weights_dir is not None:
        path = Path(weights_dir) / f"mobilenet_v1_{alpha:g}_imagenet_no_top.h5"
        if not path.is_file():
            raise PCamError(f"no weights file {path} for alpha {alpha:g}; --weights-dir must "
                            "hold mobilenet_v1_<alpha>_imagenet_no_top.h5 for every width")
        return str(path)
    return str(DEMO_WEIGHTS) if alpha == 0.5 else "imagenet"


def run_study(arms: list[str] | None = None, *, data_dir=None, results=None, weights_dir=None,
              budget_minutes: float = BUDGET_MINUTES, max_epochs: int = MAX_EPOCHS,
              overrides: dict[str, Any] | None = None) -> list[Path]:
    """Plan (once) and train every arm in `arms` (default all) into `results/study/`.

    Returns:
        The arms' run folders.

    Raises:
        PCamError: an unknown arm, a missing weights file, bad data, or a plan
            made for another budget (delete `plan.json` or keep its budget).
    """
    from pcam.environment import hardware_info
    from pcam.notebooks import run_notebook
    from pcam.records import RECORD, load_record_file

    folder = results_dir(results) / FOLDER
    plan_path = folder / PLAN
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else {
        "budget_minutes": budget_minutes, "hardware": hardware_info(), "arms": {}}
    if plan["budget_minutes"] != budget_minutes:
        raise PCamError(f"{display_path(plan_path)} was planned for {plan['budget_minutes']:g} "
                        f"minutes an arm, not {budget_minutes:g}; keep that budget, or move the "
                        "study folder away to plan afresh")
    names = list(arms or ARMS)
    configs = {n: arm_config(n, data_dir=data_dir, weights_dir=weights_dir,
                             overrides=overrides) for n in names}  # every arm checked first
    done = []
    for name, config in configs.items():
        if name not in plan["arms"]:
            n = _patches(config)
            cost_key = {k: v for k, v in config.to_dict().items() if k not in ("run", "seed")}
            twin = next((a for a in plan["arms"].values() if a["cost_key"] == cost_key), None)
            costs = twin["costs"] if twin else measure_costs(config)
            settings = plan_budget(config, costs, budget_minutes, n["train"], n["valid"],
                                   max_epochs)
            plan["arms"][name] = {"what": ARMS[name][0], "cost_key": cost_key,
                                  "costs": costs, "settings": settings}
            folder.mkdir(parents=True, exist_ok=True)
            write_text(plan_path, json.dumps(plan, indent=1, default=list) + "\n")
            print(f"study: {name}: {settings['epochs']} epochs of {settings['max_samples']} "
                  f"training patches fit {budget_minutes:g} minutes here", flush=True)
        config = config.replace(**plan["arms"][name]["settings"])
        record = folder / name / RECORD
        if record.is_file() and load_record_file(record)["status"] == "complete":
            print(f"study: {name} is complete; skipped", flush=True)
        else:
            run_notebook(config, results=folder)
        done.append(folder / name)
    return done


def plan_longer(arms: list[str], minutes: float, *, results=None,
                max_epochs: int = 100) -> dict[str, dict[str, int]]:
    """Settings that fill `minutes` of training for each arm, from its costs in `plan.json`.

    How the published runs get their budget: the chosen arm's measured costs,
    planned for the longer budget (`plan_budget`); nothing is trained or measured.
    """
    plan_path = results_dir(results) / FOLDER / PLAN
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else {"arms": {}}
    planned = {}
    for name in arms:
        if name not in plan["arms"]:
            raise PCamError(f"arm {name!r} has no measured costs in {display_path(plan_path)}; "
                            f"run `pcam study {name}` first")
        arm = plan["arms"][name]
        config = TrainConfig.from_dict({**arm["cost_key"], "run": name})
        n = _patches(config)
        planned[name] = plan_budget(config, arm["costs"], minutes, n["train"], n["valid"],
                                    max_epochs)
    return planned


def _patches(config: TrainConfig) -> dict[str, int]:
    """{"train", "valid"}: the patches an epoch can train on and validates on."""
    from pcam.data.h5read import open_split

    n = {s: open_split(config.data_dir, s).length for s in ("train", "valid")}
    return {"train": n["train"], "valid": min(n["valid"], config.max_eval_samples or n["valid"])}


