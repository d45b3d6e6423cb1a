"""What a training patch costs on this machine, and how many whole epochs fit a budget.

The recipe study and the budget and data curves (`pcam.study.experiments`) give runs a
training-time budget: `measure_costs` times a run's model and input pipeline on
real patches, the same work timed the same way for every run, and
`plan_budget` turns those costs into whole epochs over the whole training set
(or, where a budget buys less than one, a fraction of one epoch) and predicts
the minutes they take, which the run records beside the minutes it took
(`pcam.report.progress.budget_check` compares the two).
"""

import statistics
import tempfile
import time
from pathlib import Path

import keras

from pcam.core.errors import PCamError
from pcam.data.h5read import open_split
from pcam.data.pipeline import make_dataset
from pcam.evaluation.metrics import training_metrics
from pcam.models import build_model, get_backbone, set_phase
from pcam.run.config import TrainConfig
from pcam.train.precision import apply_precision
from pcam.train.session import plan_phases

# A guard, far above what any budget here buys (MobileNet on the subset: about two
# epochs a minute on one core), so that the budget, not the cap, sets the epochs.
MAX_EPOCHS = 1000
# The settings that change what a patch costs; two runs that agree on them share
# their measured costs (seed, learning rate or patience change nothing here).
COST_FIELDS = ("model", "alpha", "image_size", "head_units", "batch_size", "finetune_layers",
               "augment", "precision", "deterministic", "strategy")
# Timing: WARMUP batches (tracing, the shuffle buffer filling) are timed apart;
# then REPEATS chunks of CHUNK batches, whose median is the cost.
WARMUP, REPEATS, CHUNK = 3, 5, 8


def cost_key(config: TrainConfig) -> dict:
    """The settings that decide `measure_costs`' result (`COST_FIELDS`)."""
    values = config.to_dict()
    return {name: values[name] for name in COST_FIELDS}


def measure_costs(config: TrainConfig, repeats: int = REPEATS) -> dict[str, float]:
    """What one run of these settings costs here, as medians of repeated timings.

    Every phase of the model's recipe is timed (head and fine-tune for transfer,
    scratch from scratch), whatever epochs the run gives it, so that runs with
    the same `cost_key` can share the result.

    The training batches come from the run's own input pipeline over the whole
    training split (reading, shuffle buffer, augmentations), through a model
    compiled with the run's metrics, timed end to end.

    Returns:
        {phase: seconds per training patch (median of `repeats` chunks of
        `CHUNK` batches),
        "<phase>_start": seconds the first `WARMUP` batches take beyond that
        (tracing, the shuffle buffer), "score": seconds per validation patch
        (median of `repeats` predict passes), "score_start": the first pass's
        extra (tracing), "epoch": seconds to save an epoch's two checkpoints
        (median of `repeats`)}.
    """
    batch = config.batch_size

    def patches(name, n=None, **kwargs):
        return make_dataset(open_split(config.data_dir, name), batch_size=batch,
                            max_samples=n, cache=False, **kwargs)

    # The run's own pipeline over the whole split: after the first batch fills the
    # shuffle buffer, every batch pays for its reading, shuffling and augmentation.
    # (repeated, so that a split smaller than the timed batches still fills them)
    train = patches("train", shuffle=True, seed=config.seed, augment=config.augment,
                    repeat=True).take(WARMUP + repeats * CHUNK)
    # The arm's own dtype policy ("auto": what the run would choose here), restored after.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(apply_precision(config)["policy"])
    try:
        model = build_model(config.model, alpha=config.alpha, weights=config.weights,
                            head_units=config.head_units, dropout=config.dropout,
                            image_size=config.image_size, bn_momentum=config.bn_momentum)
    finally:
        keras.config.set_dtype_policy(previous)
    recipe = get_backbone(config.model).recipe
    costs = {}
    for phase in ("scratch",) if recipe == "scratch" else ("head", "finetune"):
        set_phase(model, phase, finetune_layers=config.finetune_layers)
        model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="binary_crossentropy",
                      metrics=training_metrics())
        timer = _BatchTimes()
        model.fit(train, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
        chunks = [sum(timer.seconds[WARMUP + i * CHUNK:WARMUP + (i + 1) * CHUNK])
                  for i in range(repeats)]
        per_batch = statistics.median(chunks) / CHUNK
        costs[phase] = per_batch / batch
        costs[f"{phase}_start"] = max(0.0, sum(timer.seconds[:WARMUP]) - WARMUP * per_batch)
    valid = patches("valid", CHUNK * batch)
    passes = []
    for _ in range(repeats + 1):  # the first traces
        start = time.perf_counter()
        model.predict(valid, verbose=0)
        passes.append(time.perf_counter() - start)
    per_pass = statistics.median(passes[1:])
    costs["score"] = per_pass / (CHUNK * batch)
    costs["score_start"] = max(0.0, passes[0] - per_pass)
    saves = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            start = time.perf_counter()
            for name in ("best", "last"):
                model.save(Path(folder) / f"{name}.keras")
            saves.append(time.perf_counter() - start)
    costs["epoch"] = statistics.median(saves)
    return costs


def plan_budget(config: TrainConfig, costs: dict[str, float], budget_minutes: float,
                train_n: int, valid_n: int, max_epochs: int = MAX_EPOCHS) -> dict:
    """Whole epochs over all `train_n` training patches that fit `budget_minutes`.

    The run's earlier phases keep their epochs (a transfer run's head epochs);
    its last phase gets as many whole epochs as fit (at least one, at most
    `max_epochs` in all), each with its validation pass and checkpoints. Where
    not even one last-phase epoch fits, every epoch of that shortest plan trains
    on the same fraction of a pass (`steps_per_epoch`), drawn anew each epoch
    from all the training patches; the patches an epoch never shrink otherwise.

    Args:
        config: the run's settings (phases, batch size).
        costs: from `measure_costs` (older plans without the `*_start` keys work).
        budget_minutes: training minutes to fill, > 0.
        train_n: the training patches a whole epoch goes over.
        valid_n: the validation patches scored after each epoch.
        max_epochs: the most epochs a run gets.

    Returns:
        {"epochs", "head_epochs", "steps_per_epoch" (None: whole epochs),
        "planned_minutes" (what the plan is predicted to take)}.

    Raises:
        PCamError: a budget that is not a positive finite number, or one that
            buys fewer than ten batches an epoch.
    """
    if not (isinstance(budget_minutes, int | float) and 0 < budget_minutes < float("inf")):
        raise PCamError(f"a budget of {budget_minutes!r} minutes: use a positive number")
    phases = {p: end - first for p, (first, end) in
              plan_phases(config, get_backbone(config.model).recipe).items() if end > first}
    last = list(phases)[-1]  # the phase that grows with the budget
    fixed = {p: n for p, n in phases.items() if p != last}
    steps = -(-train_n // config.batch_size)

    def seconds(epochs: dict[str, int], fraction: float = 1.0) -> float:
        per_epoch = valid_n * costs["score"] + costs.get("epoch", 0.0)
        return sum(costs.get(f"{p}_start", 0.0) + costs.get("score_start", 0.0)
                   + n * (fraction * train_n * costs[p] + per_epoch)
                   for p, n in epochs.items() if n)

    budget = budget_minutes * 60
    room = max_epochs - sum(fixed.values())
    grow = 1
    while grow < room and seconds({**fixed, last: grow + 1}) <= budget:
        grow += 1
    plan = {**fixed, last: grow}
    fraction_steps = None
    if seconds(plan) > budget:  # not one whole last-phase epoch: a fraction of each epoch
        per_patch = seconds(plan) - seconds(plan, 0.0)  # the training part at fraction 1
        fraction = (budget - seconds(plan, 0.0)) / per_patch if per_patch > 0 else 0.0
        fraction_steps = int(fraction * steps)
        if fraction_steps < 10:
            raise PCamError(
                f"a {budget_minutes:g}-minute budget buys {max(fraction_steps, 0)} batches an "
                f"epoch for run {config.run} on this machine (ten at least); give it more "
                "minutes")
        fraction_steps = min(fraction_steps, steps)
    epochs = sum(plan.values())
    predicted = seconds(plan, 1.0 if fraction_steps is None else fraction_steps / steps)
    return {"epochs": epochs, "head_epochs": plan.get("head", 0) if "head" in phases
            else config.head_epochs, "steps_per_epoch": fraction_steps,
            "planned_minutes": round(predicted / 60, 2)}


class _BatchTimes(keras.callbacks.Callback):
    """Wall seconds from the end of one training batch to the end of the next.

    Keras fetches a batch's data between `on_train_batch_end` and the next
    `on_train_batch_begin`, so timing begin-to-end would leave out the input
    pipeline (a third of a MobileNet step on one core); end-to-end keeps it.
    """

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now
