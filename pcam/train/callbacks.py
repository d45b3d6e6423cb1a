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

from pcam.core.errors import PCamError
from pcam.core.fileio import atomic_path
from pcam.core.paths import display_path, terminal_path
from pcam.run import records


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


class EpochCSVLogger(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` with epochs numbered from 1, as in the record."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


class RecordHistory(keras.callbacks.Callback):
    """Keep the record current: each finished epoch, the training time, the phase's end.

    Args:
        record: the run record (a dict, changed in place through `pcam.run.records`).
        phase: "head", "finetune" or "scratch", stored with every epoch.
        guard: the run's `NaNGuard`; an epoch that went NaN is not recorded, and
            at the end of `fit` the run is marked failed with a message naming
            the last good checkpoint (raised as `PCamError`).
        end: the phase's last epoch (counted from 1); ending earlier is early stopping.
        write: function that writes the record atomically.
        folder: the run folder (for the message).
    """

    def __init__(self, record: dict, phase: str, guard: NaNGuard, end: int,
                 write: Callable[[dict], None], folder: Path):
        super().__init__()
        self.record, self.phase, self.guard, self.end = record, phase, guard, end
        self.write, self.folder = write, Path(folder)
        self._start = self._mark = time.perf_counter()

    def on_train_begin(self, logs=None):
        self._mark = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.failed_at is not None:
            return
        now = time.perf_counter()
        entry = {"epoch": epoch + 1, "phase": self.phase}
        entry.update({k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0})
        lr = self.model.optimizer.learning_rate
        entry["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        entry["seconds"] = round(now - self._start, 3)
        records.add_epoch(self.record, entry)
        records.add_train_seconds(self.record, now - self._mark)  # tracing included
        self._mark = now
        self.write(self.record)

    def on_train_end(self, logs=None):
        if self.guard.failed_at is not None:
            records.finish_phase(self.record, self.phase, stopped_early=True, status="failed")
            failed_at = self.guard.failed_at
            records.mark_failed(self.record, _nan_message(self.folder, self.record, failed_at,
                                                          display_path))
            self.write(self.record)
            raise PCamError(_nan_message(self.folder, self.record, failed_at, terminal_path))
        done = records.epochs_done(self.record)
        records.finish_phase(self.record, self.phase, stopped_early=done < self.end)
        self.write(self.record)


def _nan_message(folder: Path, record: dict, failed_at: dict, shown) -> str:
    """Why the run stopped; `shown` writes paths (display_path for the record,
    terminal_path for the message on the terminal)."""
    last = folder / "checkpoints" / "last.keras"
    where = f"epoch {failed_at['epoch']}, batch {failed_at['batch']}"
    if record["history"] and last.exists():
        keep = (f"the last good checkpoint is {shown(last)} "
                f"(epoch {records.epochs_done(record)})")
    else:
        keep = "no checkpoint was saved (it failed in the first epoch)"
    return (f"training loss became {failed_at['loss']} at {where}, so the run stopped; "
            f"{keep}. Lower --learning-rate or check the data for bad values")
