"""Fake but schema-complete run folders (record.json + predictions) for report tests.

Records are built only through `pcam.run.records`, as training and evaluation build
them, so they stay valid whenever the schema changes.
"""

from pathlib import Path

import numpy as np

from pcam.core.paths import PROJ_ROOT
from pcam.evaluation.metrics import evaluate_predictions
from pcam.models import get_backbone
from pcam.run import records
from pcam.run.config import TrainConfig

ENVIRONMENT = {"python": "3.11", "platform": "Linux", "packages": {"keras": "3"},
               "git": {"commit": "abc", "dirty": False},
               "hardware": {"cpu": "Test CPU", "cpu_count": 2, "memory_gb": 8.0, "gpus": []}}
THRESHOLD = 0.55
HEAD_EPOCHS = 2  # transfer runs only; from-scratch runs have one "scratch" phase


def _config(run: str, model: str, epochs: int, seed: int, published: bool) -> dict:
    scratch = get_backbone(model).recipe == "scratch"
    return TrainConfig(
        model=model, run=run, data_dir=str(PROJ_ROOT / "data"), epochs=epochs,
        head_epochs=0 if scratch else HEAD_EPOCHS, batch_size=32,
        alpha=1.0 if scratch else 0.5, weights=None if scratch else "imagenet",
        augment=("dihedral", "shift"), seed=seed, published=published,
    ).to_dict()


def _distribution(config: dict) -> dict:
    return {"strategy": "default (one device)", "replicas": 1, "workers": 1,
            "precision": "float32" if config["precision"] == "auto" else config["precision"],
            "per_replica_batch": config["batch_size"],
            "global_batch": config["batch_size"], "learning_rate": config["learning_rate"],
            "finetune_learning_rate": config["finetune_learning_rate"],
            "rule": "global batch = batch_size x replicas; learning rates x replicas"}


def _data(n: int, splits) -> dict:
    return {"dir": "data", "synthetic": False,
            "info": {"source": "images", "label": "PCam subset (JPEG)", "synthetic": False,
                     "mapping": {"valid": "2,000 held out from train", "test": "valid"}},
            "splits": {s: {"n": n, "n_file": n, "positives": n // 2}
                       for s in dict.fromkeys(("train", "valid", *splits))}}


def _phases(model: str, epochs: int) -> list[tuple[str, int, int]]:
    """(phase, first epoch, last epoch) of a run, epochs counted from 1."""
    if get_backbone(model).recipe == "scratch":
        return [("scratch", 1, epochs)]
    return [("head", 1, HEAD_EPOCHS), ("finetune", HEAD_EPOCHS + 1, epochs)]


def _history(phases: list[tuple[str, int, int]], rng) -> list[dict]:
    rows = []
    for phase, first, last in phases:
        for epoch in range(first, last + 1):
            row = {"epoch": epoch, "phase": phase, "learning_rate": 1e-3 / epoch,
                   "seconds": 10.0}
            for key in ("loss", "accuracy", "precision", "recall", "f1", "auc"):
                base = 0.7 - 0.05 * epoch if key == "loss" else 0.6 + 0.05 * epoch
                row[key] = round(float(base + rng.uniform(-0.02, 0.02)), 4)
                row[f"val_{key}"] = round(float(base + rng.uniform(-0.04, 0.04)), 4)
            rows.append(row)
    return rows


def make_run(results: Path, run: str, model: str = "mobilenet", *, published: bool = True,
             splits=("valid", "test"), tta: bool = True, n: int = 120, seed: int = 0,
             epochs: int = 5, slides: int = 0) -> Path:
    """Write results/<run>/record.json and predictions/<split>.npz; return the run folder.

    Labels are the same for every run with the same `n` (paired patches);
    probabilities depend on `seed`. `slides` > 0 gives the patches that many
    slide ids (the same for every run), saved and resampled by the bootstrap.
    A "mobilenet" run has 2 head epochs, then fine-tuning; a "resnet50" run
    one "scratch" phase. The threshold is 0.55.
    """
    rng = np.random.default_rng(seed)
    run_dir = Path(results) / run
    (run_dir / "predictions").mkdir(parents=True)
    metrics = {}
    for i, split in enumerate(splits):
        y_true = (np.arange(n) % 2).astype(np.uint8)
        y_true = np.random.default_rng(100 + i).permutation(y_true)
        y_prob = np.clip(0.5 * y_true + rng.uniform(0, 0.6, n), 0, 1).astype(np.float32)
        arrays = {"y_true": y_true, "y_prob": y_prob}
        ids = np.array([f"slide_{k % slides:02d}" for k in range(n)]) if slides else None
        if slides:
            arrays["slides"] = ids
        metrics[split] = {
            "single": evaluate_predictions(y_true, y_prob, THRESHOLD, n_boot=20, seed=0,
                                           slides=ids),
            "inference": {"seconds": 1.25 + i, "images_per_s": n / (1.25 + i)},
        }
        if tta:
            y_tta = np.clip(y_prob + rng.normal(0, 0.05, n), 0, 1).astype(np.float32)
            arrays["y_prob_tta"] = y_tta
            metrics[split]["tta"] = evaluate_predictions(y_true, y_tta, THRESHOLD, n_boot=20,
                                                         seed=0, slides=ids)
            metrics[split]["inference"].update(tta_seconds=9.5 + i, tta_images_per_s=n / 9.5)
        np.savez(run_dir / "predictions" / f"{split}.npz", **arrays)

    config = _config(run, model, epochs, seed, published)
    backbone = get_backbone(model)
    record = records.new_record(
        config=config, environment=ENVIRONMENT, data=_data(n, splits),
        backbone={"recipe": backbone.recipe, "preprocessing": backbone.preprocessing_note})
    records.set_distribution(record, _distribution(config))
    phases = _phases(model, epochs)
    history = _history(phases, rng)
    for phase, first, last in phases:
        records.start_phase(record, phase, first, last, trainable_params=1000 * first)
        for row in history[first - 1:last]:
            records.add_epoch(record, row)
        records.finish_phase(record, phase, stopped_early=False)
    records.add_train_seconds(record, 2700.0 + seed)
    records.set_threshold(record, THRESHOLD, rule="max balanced accuracy on valid")
    for split, entry in metrics.items():
        records.set_split_metrics(record, split, entry, f"predictions/{split}.npz")
    records.set_evaluate_seconds(record, 3.0)
    records.mark_complete(record)
    records.write_record(run_dir, record)
    return run_dir
