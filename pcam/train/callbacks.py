"""Training callbacks that keep a run resumable and its record current.

Keras' `BackupAndRestore` saves weights only: the optimizer state and its step
counter (which drives the learning-rate schedule) restart on resume, and a
kill during its save can corrupt the backup. So the run instead saves the full
compiled model (weights, optimizer, step) to `checkpoints/last.keras` after
every epoch, through a temporary file and a rename, and resumes from it.
"""

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from pcam.fileio import atomic_path


def save_model_atomic(model: keras.Model, path: str | os.PathLike) -> Path:
    """`model.save(path)` through a temporary file, so `path` is never half-written."""
    with atomic_path(path) as temp:
        model.save(temp)
    return Path(path)


class NaNGuard(keras.callbacks.Callback):
    """Stop training at the first batch whose loss is NaN or infinite.

    Like `keras.callbacks.TerminateOnNaN`, but remembers where it happened so
    the checkpoint and record callbacks skip that epoch and the run can say so.
    """

    def __init__(self):
        super().__init__()
        self.failed_at: dict | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failed_at = {"epoch": self._epoch + 1, "batch": batch + 1, "loss": float(loss)}
            self.model.stop_training = True


class EpochCheckpoints(keras.callbacks.Callback):
    """Save `last.keras` every epoch and `best.keras` when `monitor` improves (max).

    Args:
        folder: the run's `checkpoints/` folder.
        guard: the run's `NaNGuard`; nothing is saved for an epoch that went NaN.
        monitor: the logged value to maximise (validation AUC).
        best: the best value reached before (when resuming); None at the start.
    """

    def __init__(self, folder: Path, guard: NaNGuard, monitor: str = "val_auc", best=None):
        super().__init__()
        self.folder, self.guard, self.monitor = Path(folder), guard, monitor
        self.best = -np.inf if best is None else float(best)
        self.best_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.failed_at is not None:
            return
        value = float((logs or {}).get(self.monitor, np.nan))
        if math.isfinite(value) and value > self.best:
            self.best, self.best_epoch = value, epoch + 1
            save_model_atomic(self.model, self.folder / "best.keras")
        save_model_atomic(self.model, self.folder / "last.keras")


class RecordHistory(keras.callbacks.Callback):
    """Append each finished epoch to the record's history and write the record.

    Args:
        record: the run record (a dict, changed in place).
        phase: "head", "finetune" or "scratch", stored with every epoch.
        guard: the run's `NaNGuard`; an epoch that went NaN is not recorded.
        write: function that writes the record atomically.
    """

    def __init__(self, record: dict, phase: str, guard: NaNGuard, write: Callable[[dict], None]):
        super().__init__()
        self.record, self.phase, self.guard, self.write = record, phase, guard, write
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.failed_at is not None:
            return
        seconds = time.perf_counter() - self._start
        entry = {"epoch": epoch + 1, "phase": self.phase}
        entry.update({k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0})
        lr = self.model.optimizer.learning_rate
        entry["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        entry["seconds"] = round(seconds, 3)
        # An epoch redone after a kill between checkpoint and record replaces its entry.
        history = [h for h in self.record["history"] if h["epoch"] < epoch + 1]
        self.record["history"] = history + [entry]
        self.write(self.record)
