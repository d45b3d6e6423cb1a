"""One training run as the notebooks write it: the machinery around the Keras recipe.

The recipe itself (backbone, new head, which layers train, `compile`, `fit` per
phase) is written out in the notebooks, so that a student reads it; `pcam
train` executes the same notebook (`pcam.execute.notebooks`). What the recipe needs
from the package is here, in `TrainingRun`:

    run = start_run(config)                     # folder, record, data, strategy
    with run.scope():
        model = ...                             # the notebook builds it
        model.compile(optimizer=keras.optimizers.Adam(run.learning_rate("head")), ...)
    model.fit(run.train, validation_data=run.valid, epochs=run.end_epoch("head"),
              initial_epoch=run.resume(model, "head"), callbacks=run.callbacks("head"))
    record = run.finish()                       # score the best checkpoint

`results/<run>/` gets the record (at the start, after every epoch, at the
end), `checkpoints/best.keras` (best validation AUC), `checkpoints/last.keras`
(every epoch, with the optimizer state), `history.csv` and `tensorboard/`.
Rerunning after a kill resumes from the last finished epoch, in its phase.

Reference:
    - [Transfer learning & fine-tuning](https://keras.io/guides/transfer_learning/)
"""

import contextlib
import importlib.util
import math
import sys
import warnings
from datetime import UTC, datetime

import keras
import tensorflow as tf

from pcam.core import paths
from pcam.core.environment import environment_info
from pcam.core.errors import PCamError
from pcam.core.fileio import stale_temps, write_bytes
from pcam.data.describe import check_same_data, data_section
from pcam.evaluation.metrics import training_metrics
from pcam.models import check_weights, get_backbone, load_checkpoint, save_inference_model
from pcam.run import records
from pcam.run.config import TrainConfig
from pcam.run.runlock import acquire_lock, claim_folder, release_lock, remove_claimed
from pcam.train import distribute
from pcam.train.callbacks import EpochCheckpoints, EpochCSVLogger, NaNGuard, RecordHistory
from pcam.train.precision import apply_precision, current_choice, explicit_choice
from pcam.train.weights import weights_provenance

__all__ = ["TrainingRun", "plan_phases", "set_seed_and_precision", "start_run",
           "training_metrics"]


def plan_phases(config: TrainConfig, recipe: str) -> dict[str, tuple[int, int]]:
    """The phases of a run: {phase: (first epoch index, end epoch index)}, in order.

    Transfer runs have a head and a fine-tune phase, either of which may be
    empty (head_epochs 0: fine-tune from the start; head_epochs == epochs:
    the head only); `fit` then runs no epoch for it. From scratch: one phase.
    """
    if recipe == "scratch":
        return {"scratch": (0, config.epochs)}
    return {"head": (0, config.head_epochs), "finetune": (config.head_epochs, config.epochs)}


def set_seed_and_precision(config: TrainConfig) -> str:
    """Set the global switches a run depends on, before its data and model exist.

    `keras.config.set_dtype_policy` makes new layers compute in float32 or mixed
    precision: `config.precision`, or with "auto" the faster of float32 and the
    hardware's 16-bit policy for this model, timed (`pcam.train.precision`; a
    line says what was chosen and why);
    `keras.utils.set_random_seed(config.seed)` seeds Python, numpy and TensorFlow
    (initial weights, dropout; the input pipeline takes the seed itself);
    `config.deterministic` switches on TensorFlow's op determinism (slower).
    They are global: the model built next uses them.

    Returns:
        The dtype policy set, e.g. "float32".
    """
    choice = apply_precision(config)  # timing "auto" builds models: before the seed
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    return choice["policy"]


def start_run(config: TrainConfig, *, results=None, verbose: str | int = "auto",
              ) -> "TrainingRun":
    """Open (or resume) the run `config.run`: check settings, make the folder and data.

    Args:
        config: the run's settings; `config.run` None names it "<model>-<UTC time>".
        results: records folder; default `$PCAM_RESULTS_DIR` or `results/`.
        verbose: "auto" (a progress bar in a terminal, one line per epoch
            elsewhere, e.g. notebooks and logs), or Keras' 0, 1, 2.

    Returns:
        A `TrainingRun`; its record is already written, and this process holds
        the run folder's lock (`.lock`) until `finish()` or exit. The lock is
        taken before anything in the folder is read; a refusal leaves the
        record as it was, and a folder this call made is removed again.

    Raises:
        PCamError: a bad setting, unreadable data, an unwritable results folder,
            a run of that name that is complete, has other settings, started on
            other data (its data fingerprint) or is being trained by another process.
    """
    from pcam.data.h5read import available_splits, open_split

    backbone = get_backbone(config.model)
    check_weights(config.model, config.alpha, config.weights)  # before any file is written
    if config.run is None:
        config = config.replace(run=f"{config.model}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    data_dir = paths.data_dir(config.data_dir)
    names = ["train", "valid"] + (["test"] if "test" in available_splits(data_dir) else [])
    splits = {name: open_split(data_dir, name) for name in names}
    precision = current_choice()
    if precision is None or precision["requested"] != config.precision:
        policy = keras.config.dtype_policy().name
        if config.precision == "auto" or policy != config.precision:
            raise RuntimeError(f"the Keras dtype policy ({policy}) was not set for this "
                               f"run's precision {config.precision}: call "
                               "set_seed_and_precision(config) before start_run")
        precision = explicit_choice(policy)
    # A multi-worker strategy must exist before TensorFlow sets up its devices.
    strategy = distribute.make_strategy(config.strategy)
    target = paths.results_dir(results) / config.run
    if distribute.is_chief(strategy):  # the lock first: nothing in the folder is read before
        lock, created = claim_folder(target)
        folder = target
    else:  # a temporary folder of its own, removed when the run ends or fails
        folder = distribute.worker_folder(target, strategy)
        lock, created = acquire_lock(folder), True
    notes, before = [], _UNREAD
    try:
        before = _bytes(folder / records.RECORD)
        records.ensure_writable(folder)
        for name in (records.RECORD, *records.CHECKPOINTS.values()):
            for temp in stale_temps(folder / name):  # left by a killed run; the lock is ours
                temp.unlink(missing_ok=True)
        data = data_section(config, data_dir, splits)
        config, precision = _resume_precision(folder, config, precision)
        record = records.resume_or_new(
            folder, config=config.to_dict(),
            backbone={"recipe": backbone.recipe, "preprocessing": backbone.preprocessing_note,
                      **weights_provenance(config)},
            data=data, environment_fn=lambda: {**environment_info(), "precision": precision},
            check=lambda stored: notes.append(_check_resume(stored, data, data_dir, precision)))
        records.set_distribution(record, distribute.describe(strategy, config, precision["policy"]))
        records.write_record(folder, record)
        run = TrainingRun(config, strategy, folder, record, splits, verbose)
    except BaseException:
        if created:  # nothing of value was written: leave no empty run folder
            remove_claimed(folder, lock)
        else:  # a refusal (or a failure before training) leaves the record as it was
            with contextlib.suppress(OSError, PCamError):  # the first error is the one shown
                _restore(folder / records.RECORD, before)
            release_lock(lock)
        raise
    for note in filter(None, notes):
        print(f"note: {note}", flush=True)
    run.lock = lock
    return run


def _resume_precision(folder, config: TrainConfig, precision: dict) -> tuple:
    """(config, precision) for a run that "auto" resumes: the policy it trained in.

    A run interrupted with precision "auto" (or before "auto" was the default, with
    the setting it had) resumes in the policy its record names, whatever a new
    timing said; Keras' global policy is set to it (the model is built after).
    Anything else is returned as it is (`resume_or_new` decides what resumes).
    """
    path = folder / records.RECORD
    if config.precision != "auto" or not path.is_file():
        return config, precision
    try:
        stored = records.load_record_file(path)
    except PCamError:
        return config, precision  # resume_or_new names the problem
    if not stored["history"] or stored["status"] == "complete":
        return config, precision
    setting = stored["config"].get("precision", "float32")
    policy = stored["environment"].get("precision", {}).get("policy")
    policy = policy or (setting if setting != "auto" else None)
    if policy is None or policy == precision["policy"]:
        return config, precision
    keras.config.set_dtype_policy(policy)
    print(f"precision auto: {policy} (the policy run {config.run} trained in; it resumes in "
          f"it, not in the {precision['policy']} just chosen)", flush=True)
    return config.replace(precision=setting), {
        "requested": "auto", "policy": policy,
        "reason": f"resumed in the policy the run trained in ({policy})"}


def _check_resume(stored: dict, data: dict, data_dir, precision: dict) -> str | None:
    """Refuse to resume a run in another dtype policy; then `check_same_data`'s note."""
    before = stored["environment"].get("precision", {}).get("policy")
    if before is not None and before != precision["policy"]:
        raise PCamError(f"run {stored['run']} trained in {before}, and precision "
                        f"{precision['requested']} gives {precision['policy']} here; rerun "
                        f"with precision {before} to resume it")
    return check_same_data(stored, data, data_dir)


_UNREAD = object()  # the record could not be read: nothing to restore


def _bytes(path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _restore(path, content: bytes | None) -> None:
    """Put `path` back as it was (`content`; None: no such file), unless it still is."""
    if content is _UNREAD or _bytes(path) == content:
        return
    if content is None:
        path.unlink(missing_ok=True)
    else:
        write_bytes(path, content)


class TrainingRun:
    """A run being trained: its folder, record, data sets and callbacks.

    Attributes:
        config: the settings as given (per-replica batch, unscaled rates).
        strategy: the `tf.distribute` strategy; build and compile in `scope()`.
        replicas: `strategy.num_replicas_in_sync`.
        folder: where this process writes (`results/<run>` on the chief).
        record: the run record (a dict, kept current on disk).
        train, valid: the input pipelines (uint8 patches, float labels), global batches.
        steps_per_epoch: training steps in one epoch.
        phases: {phase: (first, end)} epoch indices, from `plan_phases`.
    """

    def __init__(self, config, strategy, folder, record, splits, verbose):
        from pcam.data.pipeline import make_dataset

        self.config, self.strategy, self.folder, self.record = config, strategy, folder, record
        self.lock = None  # the run folder's lock, set by `start_run`
        self.splits = splits
        self.replicas = strategy.num_replicas_in_sync
        self.verbose = (1 if sys.stdout.isatty() else 2) if verbose == "auto" else verbose
        self.phases = plan_phases(config, get_backbone(config.model).recipe)
        # `fit` warns that its default shuffle=True does nothing for a tf.data input;
        # the pipeline shuffles itself (seeded), so the notebooks need not say it.
        warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
        # The global batch: several replicas drop the last partial batch, which could
        # leave a replica an empty one (BatchNorm statistics of nothing).
        scaled = distribute.scale_config(config, self.replicas)
        self._scaled = scaled
        train = make_dataset(splits["train"], batch_size=scaled.batch_size, shuffle=True,
                             seed=config.seed, max_samples=config.max_samples,
                             augment=config.augment, drop_remainder=self.replicas > 1)
        valid = make_dataset(splits["valid"], batch_size=scaled.batch_size,
                             max_samples=config.max_eval_samples)
        n_train = record["data"]["splits"]["train"]["n"]
        whole = math.ceil(n_train / scaled.batch_size)
        self.steps_per_epoch = whole
        if config.steps_per_epoch is not None:  # a fraction of a pass, new patches each epoch
            if config.steps_per_epoch > whole:
                raise PCamError(f"steps_per_epoch={config.steps_per_epoch} is more than the "
                                f"{whole} batches of one pass over train; leave it unset for "
                                "whole epochs")
            self.steps_per_epoch = config.steps_per_epoch
            train = train.take(config.steps_per_epoch)
        self.train, self.valid = (distribute.distribute_input(ds, strategy)
                                  for ds in (train, valid))
        (folder / "checkpoints").mkdir(exist_ok=True)

    def scope(self):
        """The strategy's scope: build and compile the model inside it."""
        return self.strategy.scope()

    def end_epoch(self, phase: str) -> int:
        """The `epochs` argument of `fit` for `phase` (its last epoch, counted from 1)."""
        return self._phase(phase)[1]

    def learning_rate(self, phase: str):
        """The optimizer's learning rate for `phase`, scaled by the replica count.

        head: constant `learning_rate`. finetune: cosine decay from
        `finetune_learning_rate`. scratch: linear warm-up over `warmup_epochs`
        to `learning_rate`, then cosine decay. With `schedule="constant"` or
        "plateau" (a callback lowers it on a valid-AUC plateau) the rate is
        the constant peak.
        """
        first, end = self._phase(phase)
        config, steps = self._scaled, self.steps_per_epoch
        lr = config.finetune_learning_rate if phase == "finetune" else config.learning_rate
        if config.schedule != "cosine" or phase == "head":
            return lr
        epochs = end - first
        warmup = min(config.warmup_epochs, epochs - 1) * steps if phase == "scratch" else 0
        decay = max(1, epochs * steps - warmup)
        if warmup == 0:
            return keras.optimizers.schedules.CosineDecay(lr, decay, alpha=0.01)
        return keras.optimizers.schedules.CosineDecay(
            lr * 0.01, decay, alpha=0.01, warmup_target=lr, warmup_steps=warmup)

    def metrics(self) -> list:
        """Stateful Keras metrics for `compile` (see `pcam.evaluation.metrics`)."""
        return training_metrics()

    def resume(self, model: keras.Model, phase: str) -> int:
        """Get `model` ready to fit `phase`; returns the `initial_epoch` for `fit`.

        Call it after `compile`. A finished phase returns its end (so `fit`
        runs no epoch). Inside a phase that a kill interrupted, the weights and
        the optimizer state (its step drives the schedule) come from
        `checkpoints/last.keras`; at the start of a later phase, only the
        weights do (the optimizer is new). The phase is entered in the record
        with the number of trainable parameters.
        """
        first, end = self._phase(phase)
        distribute.fit_ready(model, self.strategy)
        if first == end or records.phase_done(self.record, phase):
            return end
        done = records.epochs_done(self.record)
        last = self.folder / "checkpoints" / "last.keras"
        if done > 0:  # never go on from fresh weights after recorded epochs
            if done > first:  # inside this phase: the optimizer state too
                model.optimizer.build(model.trainable_variables)
            load_checkpoint(last, into=model, advice=(
                f"run {self.config.run} has {done} epoch(s) recorded and cannot resume "
                "without it: restore that file, or train again from the start under another "
                f"--run name (or after deleting {self.folder})"))
            if done > first and int(model.optimizer.iterations) == 0:
                raise RuntimeError(f"{last}: the optimizer state did not load; was the "
                                   "model compiled with other trainable layers?")
        start = max(first, done)
        if not any(p["phase"] == phase for p in self.record["phases"]) or start == first:
            trainable = int(sum(keras.ops.size(w) for w in model.trainable_weights))
            records.start_phase(self.record, phase, first + 1, end, trainable)
        records.write_record(self.folder, self.record)
        return start

    def callbacks(self, phase: str, *extra: keras.callbacks.Callback) -> list:
        """The run's callbacks for `fit` in `phase`, then `extra`.

        NaN guard (stops at a non-finite loss; the run then fails with a clear
        message), checkpoints (`last.keras` every epoch, `best.keras` on the
        best validation AUC), the record (history, phase status, timings),
        `history.csv`, early stopping on validation AUC (`patience`),
        TensorBoard logs and, with `schedule="plateau"`, `ReduceLROnPlateau`.
        """
        first, end = self._phase(phase)
        if first == end:
            return list(extra)  # an empty phase: `fit` runs no epoch
        config, history = self.config, self.record["history"]
        best = max((h.get("val_auc", -1.0) for h in history), default=None)
        guard = NaNGuard()
        found = [
            guard,
            EpochCheckpoints(self.folder / "checkpoints", guard, best=best),
            RecordHistory(self.record, phase, guard, self._phase(phase)[1],
                          lambda r: records.write_record(self.folder, r), self.folder),
            EpochCSVLogger(str(self.folder / "history.csv"),
                           append=bool(history) or bool(self.record["resumed"])),
            keras.callbacks.EarlyStopping("val_auc", mode="max", patience=config.patience),
        ]
        if importlib.util.find_spec("tensorboard") is not None:
            found.append(keras.callbacks.TensorBoard(str(self.folder / "tensorboard"),
                                                     write_graph=False, profile_batch=0))
        if config.schedule == "plateau":
            found.append(keras.callbacks.ReduceLROnPlateau(
                "val_auc", mode="max", factor=0.3, patience=max(1, config.patience // 2)))
        return found + list(extra)

    def finish(self) -> dict:
        """Score the best checkpoint on every split (chief only); the final record."""
        from pcam.evaluation.evaluate import evaluate_after_training

        keras.config.set_dtype_policy("float32")  # scoring runs in full precision
        missing = [p for p, (first, end) in self.phases.items()
                   if first < end and not records.phase_done(self.record, p)]
        if missing:
            raise RuntimeError(f"finish() before phase(s) {', '.join(missing)} were fit")
        try:
            if not distribute.is_chief(self.strategy):  # evaluation is the chief's alone
                distribute.remove_worker_folder(self.folder, self.strategy)
                return self.record
            record = evaluate_after_training(self.folder, self.record, self.splits)
            save_inference_model(self.folder)  # what `pcam predict` and a clone load
            return record
        finally:
            if self.lock is not None:
                release_lock(self.lock)

    def _phase(self, phase: str) -> tuple[int, int]:
        if phase not in self.phases:
            raise ValueError(f"phase {phase!r} is not part of this run; its phases are "
                             f"{', '.join(self.phases)} (head_epochs={self.config.head_epochs})")
        return self.phases[phase]
