"""Fake but schema-complete run folders (record.json + predictions) for report tests."""

import json
from pathlib import Path

import numpy as np

from pcam.evaluation.metrics import evaluate_predictions


def _history(model: str, epochs: int, rng) -> list[dict]:
    phases = ["head"] * 2 + ["finetune"] * (epochs - 2) if model == "mobilenet" else (
        ["scratch"] * epochs)
    rows = []
    for epoch, phase in enumerate(phases, start=1):
        row = {"epoch": epoch, "phase": phase, "learning_rate": 1e-3 / epoch, "seconds": 10.0}
        for key in ("loss", "accuracy", "precision", "recall", "f1", "auc"):
            base = 0.7 - 0.05 * epoch if key == "loss" else 0.6 + 0.05 * epoch
            row[key] = round(float(base + rng.uniform(-0.02, 0.02)), 4)
            row[f"val_{key}"] = round(float(base + rng.uniform(-0.04, 0.04)), 4)
        rows.append(row)
    return rows


def make_run(results: Path, run: str, model: str = "mobilenet", *, published: bool = True,
             splits=("valid", "test"), tta: bool = True, n: int = 120, seed: int = 0,
             epochs: int = 5) -> Path:
    """Write results/<run>/record.json and predictions/<split>.npz; return the run folder.

    Labels are the same for every run with the same `n` (paired patches);
    probabilities depend on `seed`.
    """
    rng = np.random.default_rng(seed)
    run_dir = Path(results) / run
    (run_dir / "predictions").mkdir(parents=True)
    metrics, predictions = {}, {}
    for i, split in enumerate(splits):
        y_true = (np.arange(n) % 2).astype(np.uint8)
        y_true = np.random.default_rng(100 + i).permutation(y_true)
        y_prob = np.clip(0.5 * y_true + rng.uniform(0, 0.6, n), 0, 1).astype(np.float32)
        arrays = {"y_true": y_true, "y_prob": y_prob}
        metrics[split] = {
            "single": evaluate_predictions(y_true, y_prob, 0.55, n_boot=20, seed=0),
            "inference": {"seconds": 1.25 + i, "images_per_s": n / (1.25 + i)},
        }
        if tta:
            y_tta = np.clip(y_prob + rng.normal(0, 0.05, n), 0, 1).astype(np.float32)
            arrays["y_prob_tta"] = y_tta
            metrics[split]["tta"] = evaluate_predictions(y_true, y_tta, 0.55, n_boot=20, seed=0)
            metrics[split]["inference"].update(tta_seconds=9.5 + i, tta_images_per_s=n / 9.5)
        np.savez(run_dir / "predictions" / f"{split}.npz", **arrays)
        predictions[split] = f"predictions/{split}.npz"
    record = {
        "schema": 1, "run": run, "model": model, "status": "complete",
        "created": "2026-01-01T00:00:00Z", "updated": "2026-01-01T01:00:00Z",
        "published": published,
        "config": {"model": model, "run": run, "epochs": epochs, "head_epochs": 2,
                   "batch_size": 32, "alpha": 0.5, "weights": "imagenet",
                   "augment": ["dihedral", "shift"], "seed": seed, "published": published},
        "environment": {"python": "3.11", "platform": "Linux", "packages": {"keras": "3"},
                        "git": {"commit": "abc", "dirty": False},
                        "hardware": {"cpu": "Test CPU", "cpu_count": 2, "memory_gb": 8.0,
                                     "gpus": []}},
        "data": {"dir": "data", "synthetic": False,
                 "info": {"source": "images", "label": "PCam subset (JPEG)", "synthetic": False,
                          "mapping": {"valid": "2,000 held out from train", "test": "valid"}},
                 "splits": {s: {"n": n, "n_file": n, "positives": n // 2}
                            for s in ("train",) + tuple(splits)}},
        "history": _history(model, epochs, rng),
        "resumed": [],
        "checkpoints": {"best": "checkpoints/best.keras", "last": "checkpoints/last.keras"},
        "threshold": {"value": 0.55, "rule": "max balanced accuracy on valid", "split": "valid"},
        "metrics": metrics,
        "timings": {"train_seconds": 2700.0 + seed, "epoch_seconds": [10.0] * epochs,
                    "evaluate_seconds": 3.0},
        "predictions": predictions,
    }
    (run_dir / "record.json").write_text(json.dumps(record, indent=1))
    return run_dir
