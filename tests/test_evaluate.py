"""Evaluation: file-order predictions, TTA, threshold from valid, record updates."""

import json

import keras
import numpy as np
import pytest
from h5_files import write_pcam

from pcam.core.environment import environment_info
from pcam.core.errors import PCamError
from pcam.data.h5read import open_split, read_images, read_labels
from pcam.evaluation.evaluate import evaluate_run, predict_split
from pcam.models import build_model
from pcam.run import records
from pcam.run.config import TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_model("mobilenet", alpha=0.25, weights=None, head_units=(4,), dropout=0.0)


@pytest.fixture
def run_folder(tmp_path, model, synthetic_data_dir):
    from pcam.data.describe import data_section

    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    model.save(folder / "checkpoints" / "best.keras")
    # An interrupted run on the synthetic folder: trained one head epoch, never scored.
    config = TrainConfig(model="mobilenet", run="run", data_dir=str(synthetic_data_dir),
                         epochs=2, head_epochs=1, alpha=0.25, weights=None, precision="float32")
    splits = {s: open_split(synthetic_data_dir, s) for s in ("train", "valid", "test")}
    record = records.new_record(
        config=config.to_dict(), backbone={"recipe": "transfer", "preprocessing": "x / 127.5 - 1"},
        environment=environment_info(), data=data_section(config, synthetic_data_dir, splits))
    records.set_distribution(record, {
        "strategy": "default (one device)", "replicas": 1, "workers": 1, "precision": "float32",
        "per_replica_batch": 64, "global_batch": 64, "learning_rate": 1e-3,
        "finetune_learning_rate": 1e-4, "rule": "linear"})
    records.start_phase(record, "head", 1, 1, trainable_params=model.count_params())
    records.add_epoch(record, {"epoch": 1, "phase": "head", "loss": 0.69,
                               "learning_rate": 1e-3, "seconds": 1.0})
    records.write_record(folder, record)
    return folder


def test_predict_split_file_order_and_tta(model, synthetic_data_dir):
    split = open_split(synthetic_data_dir, "valid")
    pred = predict_split(model, split, max_samples=40, tta=True, batch_size=16)
    images = read_images(split, 0, 40)
    np.testing.assert_array_equal(pred["y_true"], read_labels(split)[:40])
    expected = model.predict(images, verbose=0).reshape(-1)
    np.testing.assert_allclose(pred["y_prob"], expected, rtol=1e-4, atol=1e-6)
    variants = [np.rot90(v, k, axes=(1, 2)) for v in (images, images[:, :, ::-1]) for k in range(4)]
    tta = np.mean([model.predict(np.ascontiguousarray(v), verbose=0) for v in variants], axis=0)
    np.testing.assert_allclose(pred["y_prob_tta"], tta.reshape(-1), rtol=1e-4, atol=1e-6)
    assert pred["y_prob"].dtype == np.float32 and pred["y_true"].dtype == np.uint8
    assert pred["inference"]["images_per_s"] > 0 and pred["inference"]["tta_seconds"] > 0


def test_evaluate_run_updates_record(run_folder, synthetic_data_dir, tmp_path):
    record = evaluate_run(run_folder, data_dir=synthetic_data_dir, splits=("test", "valid"))
    assert json.loads((run_folder / "record.json").read_text()) == record
    # Scoring does not finish an interrupted run: it stays resumable.
    assert record["status"] == "running" and set(record["metrics"]) == {"valid", "test"}
    threshold = record["threshold"]
    assert threshold["split"] == "valid" and "tta_value" in threshold
    test = record["metrics"]["test"]
    assert test["single"]["n"] == 256 and test["tta"]["n"] == 256
    assert test["single"]["at_chosen"]["threshold"] == threshold["value"]
    assert test["tta"]["at_chosen"]["threshold"] == threshold["tta_value"]
    saved = np.load(run_folder / record["predictions"]["test"])
    assert sorted(saved.files) == ["slides", "y_prob", "y_prob_tta", "y_true"]  # synthetic: slides
    assert test["single"]["bootstrap_unit"] == "slides" and test["single"]["n_slides"] == 16

    # Another PCam-layout folder: scored apart (external), with the run's own threshold;
    # the run's metrics, threshold and predictions stay as they were.
    other = tmp_path / "other"
    write_pcam(other, "test", n=24)
    again = evaluate_run(run_folder, data_dir=other, splits=("test",), tta=False)
    assert again["threshold"] == threshold and again["metrics"] == record["metrics"]
    [(key, scored)] = again["external"].items()
    assert key.startswith("other-") and list(scored) == ["test"]
    entry = scored["test"]
    assert entry["single"]["n"] == 24 and "tta" not in entry
    assert entry["data_dir"].endswith("other") and entry["threshold"] == threshold["value"]
    assert entry["hardware"]["cpu_count"] >= 1
    assert len(np.load(run_folder / entry["predictions"])["y_prob"]) == 24
    assert entry["predictions"] == f"predictions/{key}/test.npz"
    assert len(np.load(run_folder / "predictions" / "test.npz")["y_prob"]) == 256


def test_evaluate_run_needs_a_threshold(run_folder, synthetic_data_dir):
    with pytest.raises(PCamError, match="no valid threshold .*--split valid test"):
        evaluate_run(run_folder, data_dir=synthetic_data_dir, splits=("test",), tta=False)


def test_evaluate_run_without_checkpoint(run_folder, synthetic_data_dir):
    (run_folder / "checkpoints" / "best.keras").unlink()
    with pytest.raises(PCamError, match="best.keras is missing"):
        evaluate_run(run_folder, data_dir=synthetic_data_dir, splits=("valid",))
