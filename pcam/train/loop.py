"""Train one run: transfer (head, then fine-tune) or from scratch, resumable.

`run_training` writes `results/<run>/`: the record (at the start, after every
epoch, at the end), `checkpoints/best.keras` (best validation AUC) and
`last.keras` (every epoch, with the optimizer state), `history.csv` and
`tensorboard/`. Rerunning the same command after a kill resumes from the
last finished epoch, in the right phase.

Reference:
    - [Transfer learning & fine-tuning](https://keras.io/guides/transfer_learning/)
"""

import importlib.util
import math
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import keras
import tensorflow as tf

from pcam import paths
from pcam.config import TrainConfig
from pcam.errors import PCamError
from pcam.models import build_model, check_model_args, get_backbone, set_phase
from pcam.records import ensure_writable, new_or_resumed_record, write_record
from pcam.train import distribute
from pcam.train.callbacks import EpochCheckpoints, NaNGuard, RecordHistory


def run_training(
    config: TrainConfig,
    *,
    results: str | Path | None = None,
    verbose: str | int = "auto",
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict:
    """Train, checkpoint and evaluate one run; returns its record.

    Args:
        config: the run's settings; `config.run` None names it "<model>-<UTC time>".
        results: records folder; default `$PCAM_RESULTS_DIR` or `results/`.
        verbose: "auto" (a progress bar in a terminal, one line per epoch
            elsewhere, e.g. notebooks and logs), or Keras' 0, 1, 2.
        callbacks: extra Keras callbacks added to every phase.

    Returns:
        The record (also in `results/<run>/record.json`), see `pcam.records`.
    """
    from pcam.data.h5read import available_splits, open_split
    from pcam.evaluation.evaluate import evaluate_after_training

    backbone = get_backbone(config.model)
    check_model_args(config.model, config.alpha, config.weights)  # before any file is written
    if config.run is None:
        config = config.replace(run=f"{config.model}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    # First: a multi-worker strategy must exist before TensorFlow sets up its devices.
    strategy = distribute.make_strategy(config.strategy)
    target = paths.results_dir(results) / config.run
    folder = ensure_writable(distribute.worker_folder(target, strategy))  # chief: target
    data_dir = paths.data_dir(config.data_dir)
    names = [s for s in ("train", "valid", "test") if s in ("train", "valid")
             or s in available_splits(data_dir)]
    splits = {name: open_split(data_dir, name) for name in names}
    record = new_or_resumed_record(folder, config, backbone, data_dir, splits)
    record["distribution"] = distribute.describe(strategy, config)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.precision)
    start = time.perf_counter()
    try:
        with strategy.scope():
            scaled = distribute.scale_config(config, strategy.num_replicas_in_sync)
            _train_phases(scaled, backbone, folder, record, splits, verbose, callbacks, strategy)
    except Exception as error:
        if record["status"] == "running":  # a kill or Ctrl-C leaves "running": resumable
            record["status"], record["error"] = "failed", f"{type(error).__name__}: {error}"
        raise
    finally:
        keras.config.set_dtype_policy(policy)
        record["timings"]["train_seconds"] += round(time.perf_counter() - start, 3)
        record["timings"]["epoch_seconds"] = [h["seconds"] for h in record["history"]]
        write_record(folder, record)
    if not distribute.is_chief(strategy):  # evaluation is the chief's alone
        distribute.remove_worker_folder(folder, strategy)
        return record
    return evaluate_after_training(folder, record, splits)


def plan_phases(config: TrainConfig, recipe: str) -> list[tuple[str, int, int]]:
    """The phases of a run as (phase, first epoch index, end epoch index)."""
    if recipe == "scratch" or config.head_epochs == 0:
        return [("scratch", 0, config.epochs)]
    if config.head_epochs == config.epochs:
        return [("head", 0, config.epochs)]
    return [("head", 0, config.head_epochs), ("finetune", config.head_epochs, config.epochs)]


def _train_phases(config, backbone, folder, record, splits, verbose, extra, strategy) -> None:
    from pcam.data.pipeline import make_dataset

    # config.batch_size is the global batch here (see pcam.train.distribute.scale_config).
    # Several replicas: drop the last partial batch, which could leave a replica an empty
    # batch (BatchNorm statistics of nothing); shuffling drops different patches each epoch.
    train = make_dataset(splits["train"], batch_size=config.batch_size, shuffle=True,
                         seed=config.seed, max_samples=config.max_samples, augment=config.augment,
                         drop_remainder=strategy.num_replicas_in_sync > 1)
    valid = make_dataset(splits["valid"], batch_size=config.batch_size,
                         max_samples=config.max_eval_samples)
    train, valid = (distribute.distribute_input(ds, strategy) for ds in (train, valid))
    steps = math.ceil(record["data"]["splits"]["train"]["n"] / config.batch_size)
    checkpoints = folder / "checkpoints"
    checkpoints.mkdir(exist_ok=True)
    model = None
    for phase, first, end in plan_phases(config, backbone.recipe):
        if any(p["phase"] == phase and p["status"] == "complete" for p in record["phases"]):
            continue
        done = record["history"][-1]["epoch"] if record["history"] else 0
        if done > first:  # resume inside this phase: weights, optimizer and step as saved
            model = keras.models.load_model(checkpoints / "last.keras")
            first = done
        else:
            if model is None:
                model = _fresh_or_last(config, checkpoints, bool(record["history"]))
            trainable = set_phase(model, phase, finetune_layers=config.finetune_layers)
            lr = _learning_rate(config, phase, end - first, steps)
            model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy",
                          metrics=_metrics())
            record["phases"] = [p for p in record["phases"] if p["phase"] != phase] + [
                {"phase": phase, "epochs": [first + 1, end], "trainable_params": trainable,
                 "status": "running"}]
        guard = NaNGuard()
        distribute.fit_ready(model, strategy)
        model.fit(train, validation_data=valid, initial_epoch=first, epochs=end,
                  shuffle=False,  # the dataset shuffles itself
                  verbose=verbose, callbacks=_callbacks(config, folder, record, phase, guard,
                                                        extra))
        entry = next(p for p in record["phases"] if p["phase"] == phase)
        if guard.failed_at is not None:
            entry["status"] = "failed"
            _fail_on_nan(folder, record, guard.failed_at)
        entry["status"] = "complete"
        entry["stopped_early"] = (record["history"][-1]["epoch"] if record["history"] else 0) < end
        write_record(folder, record)


def _fresh_or_last(config, checkpoints: Path, started: bool) -> keras.Model:
    if started and (checkpoints / "last.keras").exists():  # resume at a phase boundary
        return keras.models.load_model(checkpoints / "last.keras")
    return build_model(config.model, alpha=config.alpha, weights=config.weights,
                       head_units=config.head_units, dropout=config.dropout)


def _metrics() -> list:
    from pcam.evaluation.metrics import training_metrics

    return training_metrics()


def _learning_rate(config: TrainConfig, phase: str, epochs: int, steps: int):
    # Head: short, constant. Fine-tune: cosine decay from the low rate. Scratch: warm-up + cosine.
    lr = config.finetune_learning_rate if phase == "finetune" else config.learning_rate
    if config.schedule != "cosine" or phase == "head":
        return lr
    warmup = min(config.warmup_epochs, epochs - 1) * steps if phase == "scratch" else 0
    decay = max(1, epochs * steps - warmup)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(lr, decay, alpha=0.01)
    return keras.optimizers.schedules.CosineDecay(
        lr * 0.01, decay, alpha=0.01, warmup_target=lr, warmup_steps=warmup)


def _callbacks(config, folder: Path, record, phase, guard, extra) -> list:
    best = max((h.get("val_auc", -1.0) for h in record["history"]), default=None)
    resumed = bool(record["history"]) or bool(record["resumed"])
    found = [
        guard,
        EpochCheckpoints(folder / "checkpoints", guard, best=best),
        RecordHistory(record, phase, guard, lambda r: write_record(folder, r)),
        keras.callbacks.CSVLogger(str(folder / "history.csv"), append=resumed),
        keras.callbacks.EarlyStopping("val_auc", mode="max", patience=config.patience),
    ]
    if importlib.util.find_spec("tensorboard") is not None:  # optional: not a TF dependency
        found.append(keras.callbacks.TensorBoard(str(folder / "tensorboard"),
                                                 write_graph=False, profile_batch=0))
    if config.schedule == "plateau":
        found.append(keras.callbacks.ReduceLROnPlateau("val_auc", mode="max", factor=0.3,
                                                       patience=max(1, config.patience // 2)))
    return found + list(extra)


def _fail_on_nan(folder: Path, record: dict, failed_at: dict) -> None:
    last = folder / "checkpoints" / "last.keras"
    where = f"epoch {failed_at['epoch']}, batch {failed_at['batch']}"
    if record["history"] and last.exists():
        keep = (f"the last good checkpoint is {paths.display_path(last)} "
                f"(epoch {record['history'][-1]['epoch']})")
    else:
        keep = "no checkpoint was saved (it failed in the first epoch)"
    message = (f"training loss became {failed_at['loss']} at {where}, so the run stopped; "
               f"{keep}. Lower --learning-rate or check the data for bad values")
    record["status"], record["error"] = "failed", message
    write_record(folder, record)
    raise PCamError(message)
