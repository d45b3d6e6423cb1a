"""Saved predictions: `results/<run>/predictions/<split>.npz`, written and read here.

Each file holds y_true (uint8), y_prob (float32), when TTA ran y_prob_tta
(float32), and when the data have a meta file slides (str: the slide of each
patch), all in the split's file order.
"""

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pcam.core.errors import PCamError
from pcam.core.fileio import write_bytes


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
        slides: the slide of each patch (N,) str, or None when unknown.
    """

    run: str
    model: str
    split: str
    y_true: np.ndarray
    y_prob: np.ndarray
    y_prob_tta: np.ndarray | None = None
    threshold: float = 0.5
    metrics: dict = field(default_factory=dict)
    slides: np.ndarray | None = None


def save_predictions(folder: str | Path, name: str, pred: dict) -> str:
    """Write `pred`'s arrays to `folder/predictions/<name>.npz` atomically.

    Args:
        folder: the run folder.
        name: the split ("train", "valid", "test").
        pred: from `pcam.evaluation.predict.predict_split` (y_true, y_prob,
            y_prob_tta, slides).

    Returns:
        The path relative to the run folder, as stored in the record.
    """
    arrays = {k: pred[k] for k in ("y_true", "y_prob", "y_prob_tta", "slides")
              if pred.get(k) is not None}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    (Path(folder) / "predictions").mkdir(exist_ok=True)
    write_bytes(Path(folder) / "predictions" / f"{name}.npz", buffer.getvalue())
    return f"predictions/{name}.npz"


def same_patches(*preds: "Predictions | None") -> bool:
    """Whether every one of `preds` exists and holds the same labels in the same order
    (runs scored on the same patches, so they can be paired)."""
    if not preds or any(p is None for p in preds):
        return False
    first = preds[0].y_true
    return all(p.y_true.shape == first.shape and (p.y_true == first).all() for p in preds[1:])


def load_predictions(run_dir: str | Path, record: dict, split: str) -> Predictions | None:
    """The run's saved predictions on `split`, or None when it has none.

    Args:
        run_dir: the run folder (holding record.json).
        record: its record; `record["predictions"][split]` is the run-relative npz path.
        split: "train", "valid" or "test".

    Raises:
        PCamError: the file cannot be read (truncated, not an npz, arrays
            missing), its arrays disagree in length, or it holds probabilities
            that are not numbers in [0, 1].
    """
    rel = (record.get("predictions") or {}).get(split)
    path = Path(run_dir) / rel if rel else None
    if path is None or not path.exists():
        return None
    redo = (f"rerun `python -m pcam evaluate --run {record.get('run', Path(run_dir).name)}` "
            "to write it again")
    try:
        with np.load(path) as npz:
            y_true = np.asarray(npz["y_true"]).reshape(-1)
            y_prob = np.asarray(npz["y_prob"], dtype=np.float64).reshape(-1)
            tta = npz["y_prob_tta"] if "y_prob_tta" in npz.files else None
            slides = np.asarray(npz["slides"], dtype=str) if "slides" in npz.files else None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise PCamError(f"cannot read {path} ({type(error).__name__}: "
                        f"{error}); {redo}") from None
    if y_prob.size != y_true.size:
        raise PCamError(f"{path} holds {y_true.size} labels but {y_prob.size} "
                        f"probabilities; {redo}")
    bad = int((~np.isfinite(y_prob) | (y_prob < 0) | (y_prob > 1)).sum())
    if bad:
        raise PCamError(f"{path} holds {bad} probabilities that are not numbers "
                        f"in [0, 1] (NaN or out of range); {redo}")
    if tta is not None:
        tta = np.asarray(tta, dtype=np.float64).reshape(-1)
        if tta.size != y_prob.size:
            tta = None  # an empty placeholder means TTA was not run
    threshold = (record.get("threshold") or {}).get("value", 0.5)
    return Predictions(
        run=record.get("run", Path(run_dir).name), model=record.get("model", "?"), split=split,
        y_true=y_true, y_prob=y_prob, y_prob_tta=tta, threshold=float(threshold),
        metrics=(record.get("metrics") or {}).get(split, {}),
        slides=slides if slides is not None and slides.size == y_true.size else None,
    )
