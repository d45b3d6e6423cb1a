"""Reading what runs left in `results/`: records, the published set, predictions."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pcam.errors import PCamError
from pcam.paths import display_path, results_dir


@dataclass
class Predictions:
    """One run's predictions on one split, with the record's numbers for it.

    Attributes:
        run, model, split: names from the record.
        y_true: labels (N,) uint8.
        y_prob: single-pass probabilities of class 1 (N,) float.
        y_prob_tta: 8-fold dihedral TTA probabilities, or None.
        threshold: the record's threshold (chosen on valid), else 0.5.
        metrics: `record["metrics"][split]` (may be empty).
    """

    run: str
    model: str
    split: str
    y_true: np.ndarray
    y_prob: np.ndarray
    y_prob_tta: np.ndarray | None = None
    threshold: float = 0.5
    metrics: dict = field(default_factory=dict)


def load_records(results: str | Path | None = None) -> list[tuple[Path, dict]]:
    """All `results/*/record.json`, as (run folder, record), sorted by run folder name.

    Args:
        results: records folder; default `$PCAM_RESULTS_DIR` or `results/`.

    Returns:
        A list of (run folder, record dict); empty when there are no records.
    """
    rows = []
    for path in sorted(results_dir(results).glob("*/record.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise PCamError(
                f"{display_path(path)} is not readable JSON ({error}); fix or delete that run"
            ) from error
        rows.append((path.parent, record))
    return rows


def published_records(rows: list[tuple[Path, dict]], *, published_only: bool = True
                      ) -> list[tuple[Path, dict]]:
    """The records flagged `"published": true`, one per model, sorted by model name.

    Args:
        rows: from `load_records`.
        published_only: False takes every record, flagged or not (the demo's
            own report, which must never touch the README's published runs).

    Raises:
        PCamError: two chosen runs of the same model (names both runs).
    """
    chosen: dict[str, tuple[Path, dict]] = {}
    for run_dir, record in rows:
        if published_only and not record.get("published"):
            continue
        model = record.get("model")
        if model in chosen:
            other = chosen[model][1].get("run", chosen[model][0].name)
            raise PCamError(
                f"two published runs of model {model!r}: {other!r} and "
                f"{record.get('run', run_dir.name)!r}; set \"published\": false in one record.json"
            )
        chosen[model] = (run_dir, record)
    return [chosen[m] for m in sorted(chosen)]


def common_split(records: list[dict]) -> str | None:
    """The split every record has predictions for: test if possible, else valid."""
    return next((s for s in ("test", "valid")
                 if all(s in (r.get("predictions") or {}) for r in records)), None)


def load_predictions(run_dir: str | Path, record: dict, split: str) -> Predictions | None:
    """The run's saved predictions on `split`, or None when it has none.

    Args:
        run_dir: the run folder (holding record.json).
        record: its record; `record["predictions"][split]` is the run-relative npz path.
        split: "train", "valid" or "test".
    """
    rel = (record.get("predictions") or {}).get(split)
    if not rel or not (Path(run_dir) / rel).exists():
        return None
    with np.load(Path(run_dir) / rel) as npz:
        y_true = np.asarray(npz["y_true"]).reshape(-1)
        y_prob = np.asarray(npz["y_prob"], dtype=np.float64).reshape(-1)
        tta = npz["y_prob_tta"] if "y_prob_tta" in npz.files else None
    if tta is not None:
        tta = np.asarray(tta, dtype=np.float64).reshape(-1)
        if tta.size != y_prob.size:
            tta = None  # an empty placeholder means TTA was not run
    threshold = (record.get("threshold") or {}).get("value", 0.5)
    return Predictions(
        run=record.get("run", Path(run_dir).name), model=record.get("model", "?"), split=split,
        y_true=y_true, y_prob=y_prob, y_prob_tta=tta, threshold=float(threshold),
        metrics=(record.get("metrics") or {}).get(split, {}),
    )
