"""Run records: `results/<run>/record.json`, always written atomically.

A record is written to a temporary file in the same folder and renamed over
the old one (`os.replace` is atomic on POSIX and Windows), so a crash or a full
disk never leaves a half-written record: readers see the old or the new one.
"""

import json
import math
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pcam.errors import PCamError
from pcam.fileio import write_text
from pcam.paths import results_dir

RECORD = "record.json"
SCHEMA = 1


def utc_now() -> str:
    """The current time as ISO-8601 UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def run_path(run: str | os.PathLike, results: str | os.PathLike | None = None) -> Path:
    """The folder of run `run`: a folder path as given, else `results/<run>`.

    Args:
        run: run name ("mobilenet-20250101T000000Z") or a folder ("results/NAME").
        results: records folder; default `$PCAM_RESULTS_DIR` or `results/`.
    """
    given = Path(run).expanduser()
    if (given / RECORD).is_file():
        return given
    return results_dir(results) / given.name


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and prove a file can be written there.

    Raises:
        PCamError: naming the folder, when it cannot be created or written
            (permissions, read-only or full disk, a file in the way).
    """
    folder = Path(folder)
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


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as JSON to `path` through a temporary file and a rename.

    Args:
        path: destination file; its folder must exist.
        data: JSON-serialisable data; numpy scalars and arrays are converted,
            NaN and infinities become null (strict JSON).

    Returns:
        `path`.
    """
    # Serialise first: a bad value then fails before any file is touched.
    text = json.dumps(_plain(data), indent=1, allow_nan=False) + "\n"
    return write_text(path, text)


def read_record(run: str | os.PathLike, results: str | os.PathLike | None = None) -> dict:
    """The record of `run` (a name or a folder, see `run_path`)."""
    path = run_path(run, results) / RECORD
    if not path.is_file():
        raise PCamError(f"no run record at {path}; train first with `python -m pcam train`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise PCamError(f"{path} is not valid JSON ({error})") from error


def write_record(folder: str | os.PathLike, record: dict) -> Path:
    """Stamp `record["updated"]` and write it to `folder/record.json` atomically."""
    record["updated"] = utc_now()
    return write_json_atomic(Path(folder) / RECORD, record)


def new_or_resumed_record(folder: Path, config, backbone, data_dir: Path, splits: dict) -> dict:
    """The record of a run starting in `folder`, or of the run it resumes.

    A record left "running" or "failed" by the same settings is resumed (and
    says so under "resumed"); a complete one, or other settings, is an error.
    """
    settings = _config_dict(config, data_dir)
    path = Path(folder) / RECORD
    record = read_record(folder) if path.is_file() else None
    if record is not None and not record.get("history") and record.get("status") != "complete":
        record = None  # nothing was trained (e.g. stopped by a bad setting): start afresh
    if record is not None:
        if record.get("status") == "complete":
            raise PCamError(
                f"run {config.run} is already complete ({path}); choose another --run name, or "
                f"use `python -m pcam evaluate --run {config.run}` to evaluate it again"
            )
        changed = sorted(k for k in settings if record["config"].get(k) != settings[k])
        if changed:
            raise PCamError(
                f"run {config.run} exists with other settings ({', '.join(changed)}); rerun "
                f"with the same settings to resume it, or choose another --run name"
            )
        done = record["history"][-1]["epoch"] if record["history"] else 0
        record["resumed"].append({"from_epoch": done, "at": utc_now()})
        record["status"] = "running"
        record.pop("error", None)
    else:
        from pcam.environment import environment_info

        now = utc_now()
        record = {
            "schema": SCHEMA, "run": config.run, "model": config.model, "status": "running",
            "created": now, "updated": now, "published": config.published, "config": settings,
            "backbone": {"recipe": backbone.recipe, "preprocessing": backbone.preprocessing_note},
            "environment": environment_info(), "data": _data_section(config, data_dir, splits),
            "phases": [], "history": [], "resumed": [],
            "checkpoints": {"best": "checkpoints/best.keras", "last": "checkpoints/last.keras"},
            "threshold": None, "metrics": {}, "predictions": {},
            "timings": {"train_seconds": 0.0, "epoch_seconds": [], "evaluate_seconds": None},
        }
    write_record(folder, record)
    return record


def _config_dict(config, data_dir: Path) -> dict:
    from pcam.paths import display_path

    settings = config.to_dict()
    settings["data_dir"] = display_path(data_dir)
    if settings["weights"] not in (None, "imagenet"):
        settings["weights"] = display_path(settings["weights"])  # no machine paths in records
    return settings


def _data_section(config, data_dir: Path, splits: dict) -> dict:
    from pcam.data.h5read import read_dataset_info, read_labels
    from pcam.paths import display_path

    info = read_dataset_info(data_dir)
    section = {"dir": display_path(data_dir), "info": info,
               "synthetic": bool(info.get("synthetic", False)), "splits": {}}
    for name, split in splits.items():
        cap = config.max_samples if name == "train" else config.max_eval_samples
        n = split.length if cap is None else min(cap, split.length)
        section["splits"][name] = {"n": n, "n_file": split.length,
                                   "positives": int(read_labels(split)[:n].sum())}
    return section


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return value.as_posix()
    return value
