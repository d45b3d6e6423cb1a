"""Run records: `results/<run>/record.json`, the project's central data contract.

A record holds everything one run did and measured. Sections: the top level
(schema, run, model, status, created, updated, published, error, resumed),
`config`, `backbone`, `environment`, `data`, `distribution`, `phases`,
`history` (one entry per epoch), `checkpoints`, `threshold`, `metrics` (per
split), `predictions`, `timings` and `external` (scores on other data). The
field reference is the JSON Schema `pcam/core/record.schema.json`.

Only this module changes a record's structure; other modules hand it their
section (training: `resume_or_new`, `set_distribution`, `start_phase`,
`finish_phase`, `add_epoch`; evaluation: `set_threshold`, `set_split_metrics`,
`set_external_metrics`). `read_record` migrates and validates; `write_record`
validates, then writes atomically. The schema checks live in `pcam.core.record_schema`
and are re-exported here; the run folder's lock is `pcam.run.runlock`.
"""

import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pcam.core import paths
from pcam.core.errors import PCamError
from pcam.core.record_schema import SCHEMA, load_record_file, migrate, validate, write_json_atomic

__all__ = ["RECORD", "SCHEMA", "add_epoch", "add_train_seconds", "ensure_writable",
           "epochs_done", "finish_phase", "load_record_file", "mark_complete", "mark_failed",
           "migrate", "new_record", "phase_done", "read_record", "record_settings",
           "resume_or_new", "run_path",
           "set_distribution", "set_evaluate_seconds", "set_external_metrics",
           "set_split_metrics", "set_threshold", "start_phase", "utc_now", "validate",
           "write_json_atomic", "write_record"]

RECORD = "record.json"
PHASES = ("head", "finetune", "scratch")
SPLITS = ("train", "valid", "test")
CHECKPOINTS = {"best": "checkpoints/best.keras", "last": "checkpoints/last.keras"}


def utc_now() -> str:
    """The current time as ISO-8601 UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def run_path(run: str | os.PathLike, results: str | os.PathLike | None = None) -> Path:
    """The folder of run `run`: a folder path as given, else `results/<run>`.

    A path (it has a folder part) is that folder: from the current folder when
    it exists there, else from the project root; it never falls back to the
    run of the same name under `results/`.

    Args:
        run: run name ("mobilenet-20250101T000000Z") or a folder ("results/NAME").
        results: records folder; default `$PCAM_RESULTS_DIR` or `results/`.
    """
    given = Path(run).expanduser()
    if (given / RECORD).is_file():
        return given
    if given.is_absolute() or len(given.parts) > 1:
        rooted = paths.PROJ_ROOT / given
        return rooted if not given.exists() and rooted.exists() else given
    return paths.results_dir(results) / given.name


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and prove a file can be written there.

    Raises:
        PCamError: naming the folder, when it cannot be created or written
            (permissions, read-only or full disk, a file in the way).
    """
    folder = Path(folder)
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise PCamError(f"{blocker} is a file, not a folder, so the results folder {folder} "
                        "cannot be made there; give --results (notebooks: -p results_dir, "
                        "demo: --out) a folder, or set PCAM_RESULTS_DIR")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise PCamError(
            f"cannot write to the results folder {folder} ({error.strerror or error}); "
            f"free space or choose another folder with PCAM_RESULTS_DIR"
        ) from error
    return folder


def read_record(run: str | os.PathLike, results: str | os.PathLike | None = None) -> dict:
    """The record of `run` (a name or a folder, see `run_path`), migrated and validated.

    Raises:
        PCamError: no record there, or a bad one (see `load_record_file`).
    """
    path = run_path(run, results) / RECORD
    if not path.is_file():
        raise PCamError(f"no run record at {path}; train first with `python -m pcam train`")
    return load_record_file(path)


def write_record(folder: str | os.PathLike, record: dict) -> Path:
    """Stamp `record["updated"]`, validate it and write `folder/record.json` atomically.

    Raises:
        PCamError: the record is invalid (see `validate`); nothing is written.
    """
    record["updated"] = utc_now()
    validate(record)
    return write_json_atomic(Path(folder) / RECORD, record)


def new_record(*, config: dict, backbone: dict, environment: dict, data: dict) -> dict:
    """A fresh record: status "running", nothing trained, scored or timed yet.

    Args:
        config: `TrainConfig.to_dict()` of the run (its "run" set); "data_dir"
            (None: the default folder) and a weights file become display
            paths, so records carry no machine paths.
        backbone: {"recipe": Backbone.recipe, "preprocessing": Backbone.preprocessing_note}.
        environment: `pcam.core.environment.environment_info()`.
        data: `pcam.data.describe.data_section(...)`.

    Returns:
        The record, validated but not written (see `write_record`).
    """
    settings, now = record_settings(config), utc_now()
    record = {
        "schema": SCHEMA, "run": settings["run"], "model": settings["model"],
        "status": "running", "created": now, "updated": now,
        "published": settings["published"], "config": settings, "backbone": dict(backbone),
        "environment": environment, "data": data, "phases": [], "history": [], "resumed": [],
        "checkpoints": dict(CHECKPOINTS), "threshold": None, "metrics": {}, "predictions": {},
        "timings": {"train_seconds": 0.0, "epoch_seconds": [], "evaluate_seconds": None},
    }
    validate(record)
    return record


def resume_or_new(folder: str | os.PathLike, *, config: dict, backbone: dict, data: dict,
                  environment_fn: Callable[[], dict],
                  check: Callable[[dict], None] | None = None) -> dict:
    """The record of a run starting in `folder`, or of the run it resumes; written.

    A record left "running" or "failed" by the same settings is resumed (and
    says so under "resumed"); one with no epoch trained is started afresh.

    Args:
        folder: the run folder; config, backbone, data: as for `new_record`.
        environment_fn: returns the environment section (called for a new
            record only: a resumed run keeps the environment it started on).
        check: called with the stored record before a resume; raises to refuse it.

    Raises:
        PCamError: the run is already complete, exists with other settings
            (names the changed keys), or its record is invalid.
    """
    settings, path = record_settings(config), Path(folder) / RECORD
    run = settings.get("run")
    record = load_record_file(path) if path.is_file() else None
    if record is not None and not record["history"] and record["status"] != "complete":
        record = None  # nothing was trained (e.g. stopped by a bad setting): start afresh
    if record is None:
        record = new_record(config=config, backbone=backbone, environment=environment_fn(),
                            data=data)
    else:
        if record["status"] == "complete":
            raise PCamError(
                f"run {run} is already complete ({path}); choose another --run name, or "
                f"use `python -m pcam evaluate --run {run}` to evaluate it again")
        changed = sorted(k for k in settings if record["config"].get(k) != settings[k])
        if changed:
            raise PCamError(
                f"run {run} exists with other settings ({', '.join(changed)}); rerun "
                f"with the same settings to resume it, or choose another --run name")
        if check is not None:
            check(record)
        record["resumed"].append({"from_epoch": epochs_done(record), "at": utc_now()})
        record["status"] = "running"
        record.pop("error", None)
    write_record(folder, record)
    return record


def set_distribution(record: dict, section: dict) -> None:
    """Store the "distribution" section (`pcam.train.distribute.describe`)."""
    record["distribution"] = dict(section)


def start_phase(record: dict, phase: str, first_epoch: int, end_epoch: int,
                trainable_params: int) -> None:
    """Record that `phase` starts (again): status "running", replacing an earlier entry.

    Args:
        phase: "head", "finetune" or "scratch".
        first_epoch: number of the phase's first epoch, counted from 1 over the
            run (Keras' `initial_epoch` + 1).
        end_epoch: number of its last planned epoch (Keras' `epochs`), >= first_epoch.
        trainable_params: trainable parameters in this phase.
    """
    _check_phase(phase)
    if not 1 <= first_epoch <= end_epoch:
        raise ValueError(f"phase {phase!r} needs 1 <= first_epoch <= end_epoch, "
                         f"got {first_epoch}, {end_epoch}")
    entry = {"phase": phase, "epochs": [int(first_epoch), int(end_epoch)],
             "trainable_params": int(trainable_params), "status": "running"}
    record["phases"] = [p for p in record["phases"] if p["phase"] != phase] + [entry]


def finish_phase(record: dict, phase: str, *, stopped_early: bool, status="complete") -> None:
    """Mark a started phase "complete" (or "failed") and whether it stopped early."""
    if status not in ("complete", "failed"):
        raise ValueError(f"status must be 'complete' or 'failed', got {status!r}")
    entry = next((p for p in record["phases"] if p["phase"] == phase), None)
    if entry is None:
        raise ValueError(f"phase {phase!r} was never started (see start_phase)")
    entry["status"], entry["stopped_early"] = status, bool(stopped_early)


def phase_done(record: dict, phase: str) -> bool:
    """Whether `phase` is complete (a resumed run skips it)."""
    return any(p["phase"] == phase and p["status"] == "complete" for p in record["phases"])


def add_epoch(record: dict, entry: dict) -> None:
    """Append one finished epoch to the history (keeps `timings.epoch_seconds` in step).

    Args:
        entry: {"epoch": from 1, "phase", Keras logs, "learning_rate", "seconds"}
            (schema: "history"). An epoch redone after a kill replaces its entry.
    """
    epoch = entry.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValueError(f"an epoch entry needs an integer 'epoch' >= 1, got {epoch!r}")
    _check_phase(entry.get("phase"))
    record["history"] = [h for h in record["history"] if h["epoch"] < epoch] + [dict(entry)]
    record["timings"]["epoch_seconds"] = [h.get("seconds") for h in record["history"]]


def epochs_done(record: dict) -> int:
    """The number of the last recorded epoch; 0 before the first one."""
    return record["history"][-1]["epoch"] if record["history"] else 0


def set_threshold(record: dict, value: float, tta_value: float | None = None, *,
                  rule: str) -> None:
    """Store the threshold chosen on valid (and its TTA twin) with the rule in words."""
    threshold = {"value": float(value), "rule": rule, "split": "valid"}
    if tta_value is not None:
        threshold["tta_value"] = float(tta_value)
    record["threshold"] = threshold


def set_split_metrics(record: dict, split: str, entry: dict,
                      predictions_path: str | os.PathLike) -> None:
    """Store one split's scores ({"single", "tta"?, "inference", ...}) and its npz path.

    Args:
        split: "train", "valid" or "test"; replaces that split's earlier entry.
        entry: see "split_metrics" in the schema.
        predictions_path: the npz, relative to the run folder ("predictions/test.npz").
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    record["metrics"][split] = entry
    record["predictions"][split] = Path(predictions_path).as_posix()


def set_external_metrics(record: dict, key: str, split: str, entry: dict) -> None:
    """Scores on data other than the run's own, as `external[key][split]`; see the schema."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    record.setdefault("external", {}).setdefault(key, {})[split] = dict(entry)


def add_train_seconds(record: dict, seconds: float) -> None:
    """Add one training attempt's seconds to `timings.train_seconds`."""
    record["timings"]["train_seconds"] += round(float(seconds), 3)


def set_evaluate_seconds(record: dict, seconds: float) -> None:
    """Store the seconds of the latest evaluation."""
    record["timings"]["evaluate_seconds"] = round(float(seconds), 3)


def mark_failed(record: dict, message: str) -> None:
    """Status "failed", with `message` saying why (the run stays resumable)."""
    record["status"], record["error"] = "failed", str(message)


def mark_complete(record: dict) -> None:
    """Status "complete" (training and evaluation finished); drops any old error."""
    record["status"] = "complete"
    record.pop("error", None)


def record_settings(config: dict) -> dict:
    """`config` as a record stores it: paths as display paths (`pcam.core.paths.display_path`)."""
    settings = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    settings["data_dir"] = paths.data_dir(settings.get("data_dir"))
    for key in ("data_dir", "weights"):  # display paths: no machine paths in records
        if settings[key] not in (None, "imagenet"):
            text = str(settings[key])
            settings[key] = text if text.startswith("<external>/") else paths.display_path(text)
    return settings


def _check_phase(phase: Any) -> None:
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
