"""Evaluate a run: predict each split once, in file order, and score it.

The threshold is always chosen on valid and applied unchanged to the other
splits; test-time augmentation (TTA) averages the probabilities of the 8
dihedral transforms of each patch. Predictions go to `predictions/<split>.npz`
(y_true uint8, y_prob float32, y_prob_tta float32 when TTA ran).
"""

import time
from pathlib import Path

import keras
import numpy as np

from pcam import paths, records
from pcam.errors import PCamError
from pcam.evaluation.metrics import THRESHOLD_RULE, choose_threshold, evaluate_predictions
from pcam.evaluation.predict import Predictor, predict_split
from pcam.evaluation.predictions import save_predictions
from pcam.records import read_record, run_path

TRAIN_EVAL_CAP = 8192  # patches of train scored after training (a fit check, not a result)


def evaluate_after_training(folder: Path, record: dict, splits: dict) -> dict:
    """Score the best checkpoint of a just-trained run on its splits; the record."""
    config = record["config"]
    caps = {"train": min(config["max_samples"] or TRAIN_EVAL_CAP, TRAIN_EVAL_CAP)}
    caps.update({name: config["max_eval_samples"] for name in ("valid", "test")})
    record = _evaluate(folder, record, splits, caps, tta=config["tta"], data_dir=None)
    records.mark_complete(record)
    records.write_record(folder, record)
    return record


def evaluate_run(run, *, data_dir=None, splits=("valid", "test"), tta: bool = True) -> dict:
    """Evaluate a run's best checkpoint on a PCam-layout folder; update its record.

    Args:
        run: run name or folder ("results/NAME").
        data_dir: data folder; default the folder the run trained on when it
            is inside the project, else `$PCAM_DATA_DIR` or `data/`.
        splits: splits to score; valid (when listed) sets a new threshold,
            otherwise the record's threshold is applied.
        tta: also score 8-fold dihedral test-time augmentation.

    Returns:
        The updated record; each scored split notes its data folder. Its
        status is left as it was: scoring does not finish an interrupted run.
    """
    from pcam.data.h5read import open_split

    folder = run_path(run)
    record = read_record(folder)
    if data_dir is None:
        data_dir = paths.from_display_path(record["data"]["dir"]) or paths.data_dir()
    opened = {name: open_split(data_dir, name) for name in splits}
    caps = dict.fromkeys(opened)
    return _evaluate(folder, record, opened, caps, tta=tta, data_dir=data_dir)


def _evaluate(folder: Path, record: dict, splits: dict, caps: dict, *, tta: bool,
              data_dir) -> dict:
    from pcam.data.h5read import read_dataset_info
    from pcam.environment import hardware_info

    best = folder / record["checkpoints"]["best"]
    if not best.exists():
        raise PCamError(f"{best} is missing; the run saved no checkpoint (train it again)")
    model = Predictor(keras.models.load_model(best, compile=False))
    start = time.perf_counter()
    (folder / "predictions").mkdir(exist_ok=True)
    order = sorted(splits, key=lambda s: s != "valid")  # valid first: it sets the threshold
    for name in order:
        pred = predict_split(model, splits[name], max_samples=caps.get(name),
                             tta=tta and name != "train")
        if name == "valid":
            tta_value = (choose_threshold(pred["y_true"], pred["y_prob_tta"])
                         if "y_prob_tta" in pred else None)
            records.set_threshold(record, choose_threshold(pred["y_true"], pred["y_prob"]),
                                  tta_value, rule=THRESHOLD_RULE)
        if not record.get("threshold"):
            raise PCamError(f"no valid threshold in {folder / 'record.json'}; "
                            f"evaluate with --split valid {name}")
        entry = {**_score(pred, record["threshold"]), "inference": pred["inference"]}
        if data_dir is not None:  # scored outside training: say on what data and hardware
            info = read_dataset_info(data_dir)
            entry.update(data_dir=paths.display_path(data_dir),
                         data_label=info.get("label") or info.get("source"),
                         hardware=hardware_info())
        records.set_split_metrics(record, name, entry, save_predictions(folder, name, pred))
    if "valid" in splits:
        # A new threshold: score the other splits' saved predictions again with it,
        # so every column of the record uses the same threshold.
        for name in sorted(set(record["predictions"]) - set(splits)):
            with np.load(folder / record["predictions"][name]) as saved:
                pred = {key: saved[key] for key in saved.files}
            scores = _score(pred, record["threshold"])
            records.set_split_metrics(record, name, {**record["metrics"][name], **scores},
                                      record["predictions"][name])
    records.set_evaluate_seconds(record, time.perf_counter() - start)
    records.write_record(folder, record)
    return record


def _score(pred: dict, threshold: dict) -> dict:
    """Whole-split metrics of single-pass (and TTA) predictions at the valid thresholds."""
    scores = {"single": evaluate_predictions(pred["y_true"], pred["y_prob"], threshold["value"])}
    if "y_prob_tta" in pred:
        tta = evaluate_predictions(pred["y_true"], pred["y_prob_tta"],
                                   threshold.get("tta_value", threshold["value"]))
        if "tta_value" not in threshold:
            tta["notes"] = [*tta.get("notes", []), "threshold of the single pass: valid was "
                            "scored without TTA"]
        scores["tta"] = tta
    return scores


