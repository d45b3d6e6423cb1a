"""The recipe study: what each ingredient of the transfer recipe adds, under one budget.

Every arm is the subset preset's MobileNet run with one change (`ARMS`),
trained through notebook 01 like any run, into `results/study/<arm>/`; the
`scratch-*` arms do the same for ResNet50 from scratch (notebook 02). Each arm
gets the same training-time budget (`BUDGET_MINUTES`): before an arm first
trains, what one training patch costs under its settings (model width, input
size, trainable layers, augmentations) is measured on this machine, and its
epochs (each over every training patch) are as many as fit the budget with
their validation passes and checkpoints (planned on `PLAN_SHARE` of it, since
whole epochs cost more than their measured batches); an arm too slow for five such epochs sees fewer
patches an epoch instead (`plan_budget`). Measurements and settings are kept in
`results/study/plan.json`, so a rerun trains every arm the same way, resumes
an interrupted one and skips those complete. Scoring after training (valid and
test, single pass and TTA) is outside the budget.

`python -m pcam study` runs it; `pcam.report.study` turns the records into the
README's study table.
"""

import json
import statistics
import time
from pathlib import Path
from typing import Any

import keras

from pcam.config import TrainConfig
from pcam.errors import PCamError
from pcam.fileio import write_text
from pcam.paths import DEMO_WEIGHTS, display_path, results_dir

BUDGET_MINUTES = 10.0
MAX_EPOCHS = 30  # a cheap arm gets more epochs, up to this
# Epochs cost more than their measured batches (tracing, the shuffle buffer filling,
# iterator start-up): on the 2-core machine a head epoch measured at 21 s took 29 s.
# Plans fill this share of the budget, so that arms end within it.
PLAN_SHARE = 0.75
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
    "baseline": ("the recipe as published: alpha 0.5, 96 px, top 24 layers, all augmentations",
                 {}),
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
    "scratch-baseline": ("ResNet50 from scratch as published: batch 64, learning rate 1e-3, "
                         "BatchNorm momentum 0.99", {"model": "resnet50"}),
    "scratch-bn0.9": ("ResNet50, BatchNorm momentum 0.9", {"model": "resnet50",
                                                           "bn_momentum": 0.9}),
    "scratch-batch32": ("ResNet50, batch 32 (twice the steps)", {"model": "resnet50",
                                                                 "batch_size": 32}),
    "scratch-lr3e-3": ("ResNet50, learning rate 3e-3", {"model": "resnet50",
                                                        "learning_rate": 3e-3}),
    "scratch-aug-dihedral": ("ResNet50, flips and rotations only",
                             {"model": "resnet50", "augment": ("dihedral",)}),
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


def measure_costs(config: TrainConfig, batches: int = 30) -> dict[str, float]:
    """What the arm costs here: seconds per patch trained (each phase) and scored,
    and seconds an epoch spends saving its two checkpoints.

    `batches` batches of real training patches go through the arm's model and
    input pipeline (augmentations included); the first three, which trace and
    warm up, are left out, and the mean of the rest is taken (the mean, not the
    median: the pipeline's occasional waits for data are part of the cost).
    Scoring is timed with `predict` over valid patches through the pipeline.
    """
    import tempfile

    from pcam.data.h5read import open_split
    from pcam.data.pipeline import make_dataset
    from pcam.models import build_model, set_phase

    def patches(name, n, **kwargs):
        return make_dataset(open_split(config.data_dir, name), batch_size=config.batch_size,
                            max_samples=n, cache=False, **kwargs)

    train = patches("train", config.batch_size * (batches + 3), shuffle=True,
                    seed=config.seed, augment=config.augment)
    model = build_model(config.model, alpha=config.alpha, weights=config.weights,
                        head_units=config.head_units, dropout=config.dropout,
                        image_size=config.image_size)
    costs = {}
    for phase in _phase_epochs(config):
        set_phase(model, phase, finetune_layers=config.finetune_layers)
        model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="binary_crossentropy")
        timer = _BatchTimes()
        model.fit(train, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
        costs[phase] = statistics.mean(timer.seconds[3:]) / config.batch_size
    n = 10 * config.batch_size
    model.predict(patches("valid", config.batch_size), verbose=0)  # trace
    start = time.perf_counter()
    model.predict(patches("valid", n), verbose=0)
    costs["score"] = (time.perf_counter() - start) / n
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        for name in ("best", "last"):
            model.save(Path(folder) / f"{name}.keras")
        costs["epoch"] = time.perf_counter() - start
    return costs


def plan_budget(config: TrainConfig, costs: dict[str, float], budget_minutes: float,
                train_n: int, valid_n: int, max_epochs: int = MAX_EPOCHS) -> dict[str, int]:
    """Epochs and patches an epoch so that training, validation and checkpoints fill the budget.

    Every training patch is used each epoch, and epochs are added (up to
    `max_epochs`) while they fit; an arm whose `config.epochs` do not fit on
    every patch sees fewer patches an epoch instead. Added epochs belong to the
    last phase: head epochs for a head-only arm, fine-tune epochs for another
    transfer arm, from-scratch epochs for a from-scratch one.

    Returns:
        {"epochs", "head_epochs", "max_samples"}: settings for the arm.

    Raises:
        PCamError: the budget does not buy ten batches an epoch.
    """
    spent = _phase_epochs(config)
    last = list(spent)[-1]  # an added epoch's phase
    extra = costs[last]
    per_sample = sum(costs[phase] * n for phase, n in spent.items())
    budget = budget_minutes * 60 * PLAN_SHARE
    validation = valid_n * costs["score"] + costs.get("epoch", 0.0)  # and checkpoints
    epochs = config.epochs
    if budget >= train_n * per_sample + epochs * validation:
        left = budget - train_n * per_sample - epochs * validation
        epochs = min(max_epochs, epochs + int(left // (train_n * extra + validation)))
        samples = train_n
    else:
        left = budget - epochs * validation
        samples = min(int(left / per_sample) if left > 0 else 0, train_n)
    samples -= samples % config.batch_size
    if samples < 10 * config.batch_size:
        raise PCamError(f"a {budget_minutes:g}-minute budget buys {samples} patches an epoch "
                        f"for run {config.run} on this machine; raise --budget-minutes")
    return {"epochs": epochs, "head_epochs": epochs if last == "head" else config.head_epochs,
            "max_samples": samples}


def _phase_epochs(config: TrainConfig) -> dict[str, int]:
    """{phase: epochs} of the phases that train (head, finetune; or scratch), in order."""
    from pcam.models import get_backbone
    from pcam.train.session import plan_phases

    phases = plan_phases(config, get_backbone(config.model).recipe)
    return {phase: end - first for phase, (first, end) in phases.items() if end > first}


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


class _BatchTimes(keras.callbacks.Callback):
    """Wall seconds of each training batch (the wait for its data included)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
