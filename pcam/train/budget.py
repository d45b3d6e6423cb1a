"""What a training patch costs on this machine, and how many epochs fit a budget.

The recipe study (`pcam.study`) gives every arm the same training-time budget:
`measure_costs` times an arm's model and input pipeline on real patches, and
`plan_budget` turns those costs into epochs and patches an epoch that fill the
budget with their validation passes and checkpoints.
"""

import statistics
import tempfile
import time
from pathlib import Path

import keras

from pcam.config import TrainConfig
from pcam.data.h5read import open_split
from pcam.data.pipeline import make_dataset
from pcam.errors import PCamError
from pcam.models import build_model, get_backbone, set_phase
from pcam.train.session import plan_phases

MAX_EPOCHS = 30  # a cheap arm gets more epochs, up to this
# Epochs cost more than their measured batches (tracing, the shuffle buffer filling,
# iterator start-up): on the 2-core machine a head epoch measured at 21 s took 29 s.
# Plans fill this share of the budget, so that arms end within it.
PLAN_SHARE = 0.75


def measure_costs(config: TrainConfig, batches: int = 30) -> dict[str, float]:
    """What the arm costs here: seconds per patch trained (each phase) and scored,
    and seconds an epoch spends saving its two checkpoints.

    `batches` batches of real training patches go through the arm's model and
    input pipeline (augmentations included); the first three, which trace and
    warm up, are left out, and the mean of the rest is taken (the mean, not the
    median: the pipeline's occasional waits for data are part of the cost).
    Scoring is timed with `predict` over valid patches through the pipeline.
    """
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
    phases = plan_phases(config, get_backbone(config.model).recipe)
    return {phase: end - first for phase, (first, end) in phases.items() if end > first}


class _BatchTimes(keras.callbacks.Callback):
    """Wall seconds of each training batch (the wait for its data included)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
