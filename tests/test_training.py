"""Training runs on tiny synthetic data: learning, the record, resume, NaN, determinism."""

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from recipe import train as run_training

from pcam.core.errors import PCamError
from pcam.core.paths import PROJ_ROOT
from pcam.run.config import TrainConfig
from pcam.train.session import plan_phases

pytestmark = pytest.mark.slow


def _config(data_dir, run, **changes):
    settings = dict(model="mobilenet", run=run, data_dir=str(data_dir), alpha=0.25, weights=None,
                    head_units=(16,), dropout=0.1, epochs=3, head_epochs=0, batch_size=16,
                    max_samples=64, max_eval_samples=64, learning_rate=3e-3, augment=(),
                    tta=False, seed=1, deterministic=True, patience=5, precision="float32")
    return TrainConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, synthetic_data_dir):
    results = tmp_path_factory.mktemp("results")
    a = run_training(_config(synthetic_data_dir, "a"), results=results, verbose=0)
    b = run_training(_config(synthetic_data_dir, "b"), results=results, verbose=0)
    return results, a, b


def test_plan_phases():
    config = TrainConfig(epochs=5, head_epochs=2)
    assert plan_phases(config, "transfer") == {"head": (0, 2), "finetune": (2, 5)}
    assert plan_phases(config, "scratch") == {"scratch": (0, 5)}
    assert plan_phases(config.replace(head_epochs=5), "transfer") == {"head": (0, 5),
                                                                      "finetune": (5, 5)}
    assert plan_phases(config.replace(head_epochs=0), "transfer") == {"head": (0, 0),
                                                                      "finetune": (0, 5)}


def test_loss_falls(two_runs):
    _, record, _ = two_runs
    losses = [h["loss"] for h in record["history"]]
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3]
    assert losses[-1] < losses[0]


def test_record_complete_and_consistent(two_runs):
    results, record, _ = two_runs
    folder = results / "a"
    assert json.loads((folder / "record.json").read_text()) == record
    assert record["status"] == "complete" and record["schema"] == 1 and record["resumed"] == []
    assert record["config"]["run"] == "a" and record["model"] == "mobilenet"
    assert record["environment"]["packages"]["keras"].startswith("3.")
    assert record["data"]["synthetic"] is True
    assert record["data"]["splits"]["train"] == {
        "n": 64, "n_file": 512, "positives": record["data"]["splits"]["train"]["positives"]}
    assert set(record["metrics"]) == {"train", "valid", "test"}
    assert record["phases"] == [{"phase": "finetune", "epochs": [1, 3], "status": "complete",
                                 "trainable_params": record["phases"][0]["trainable_params"],
                                 "stopped_early": False}]
    assert record["threshold"]["split"] == "valid" and 0 <= record["threshold"]["value"] <= 1
    for key in ("loss", "accuracy", "precision", "recall", "f1", "auc", "val_auc",
                "learning_rate", "seconds"):
        assert key in record["history"][0]
    assert len(record["timings"]["epoch_seconds"]) == 3 and record["timings"]["train_seconds"] > 0
    for split, metrics in record["metrics"].items():
        single = metrics["single"]
        assert single["n"] == record["data"]["splits"][split]["n"]
        for at in ("at_0.5", "at_chosen"):
            m = single[at]
            (tn, fp), (fn, tp) = m["confusion_matrix"]
            assert tn + fp + fn + tp == single["n"]
            assert m["accuracy"] == pytest.approx((tp + tn) / single["n"])
            p, r = m["precision"], m["recall"]
            if p and r:
                assert m["f1"] == pytest.approx(2 * p * r / (p + r))
        assert metrics["inference"]["images_per_s"] > 0
        saved = np.load(folder / record["predictions"][split])
        assert saved["y_true"].dtype == np.uint8 and saved["y_prob"].dtype == np.float32
        assert len(saved["y_prob"]) == single["n"]
    assert record["metrics"]["test"]["single"]["at_chosen"]["threshold"] == \
        record["threshold"]["value"]
    best = keras.models.load_model(folder / "checkpoints" / "best.keras")
    assert best.input.dtype == "uint8"
    # the inference model: the best checkpoint's weights without the optimizer
    inference = keras.models.load_model(folder / "inference.keras", compile=False)
    assert (folder / "inference.keras").stat().st_size < (folder / "checkpoints" /
                                                          "best.keras").stat().st_size
    patches = np.random.default_rng(0).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    np.testing.assert_allclose(inference.predict(patches, verbose=0),
                               best.predict(patches, verbose=0), atol=1e-6)
    assert not list(folder.glob(".*partial*"))
    assert (folder / "history.csv").read_text().count("\n") == 4
    rows = (folder / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]


def test_deterministic_runs_are_identical(two_runs):
    _, a, b = two_runs
    strip = ("seconds", "learning_rate")
    assert [{k: v for k, v in h.items() if k not in strip} for h in a["history"]] == \
        [{k: v for k, v in h.items() if k not in strip} for h in b["history"]]
    for split in a["metrics"]:
        assert a["metrics"][split]["single"] == b["metrics"][split]["single"]
    assert a["threshold"] == b["threshold"]


def test_complete_run_is_not_retrained(two_runs, synthetic_data_dir):
    results, _, _ = two_runs
    with pytest.raises(PCamError, match="run a is already complete"):
        run_training(_config(synthetic_data_dir, "a"), results=results)


class _PoisonAtEpoch2(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            kernel = self.model.get_layer("prediction").kernel
            kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))


def test_nan_loss_stops_with_clear_message(tmp_path, synthetic_data_dir):
    config = _config(synthetic_data_dir, "nan", epochs=3, deterministic=False)
    with pytest.raises(PCamError) as error:
        run_training(config, results=tmp_path, verbose=0, callbacks=[_PoisonAtEpoch2()])
    message = str(error.value)
    assert "training loss became nan at epoch 2, batch 2" in message
    last = tmp_path / "nan" / "checkpoints" / "last.keras"
    assert f"last good checkpoint is {last} (epoch 1)" in message  # the real file
    record = json.loads((tmp_path / "nan" / "record.json").read_text())
    # the record (committed with a run) names it as display_path does: no machine path
    assert record["status"] == "failed"
    assert record["error"] == message.replace(str(last), "<external>/checkpoints/last.keras")
    assert [h["epoch"] for h in record["history"]] == [1]
    for name in ("last", "best"):
        model = keras.models.load_model(tmp_path / "nan" / "checkpoints" / f"{name}.keras")
        assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


_KILL_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import keras
    from pcam.run.config import TrainConfig
    sys.path.insert(0, os.environ["PCAM_TESTS"])
    from recipe import train as run_training

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    callbacks = [Kill()] if os.environ.get("PCAM_TEST_KILL") else []
    config = TrainConfig.from_dict(json.loads(sys.argv[1]))
    run_training(config, results=sys.argv[2], verbose=0, callbacks=callbacks)
""")


def test_sigkill_mid_epoch_then_rerun_resumes(tmp_path, synthetic_data_dir):
    script = tmp_path / "train.py"
    script.write_text(_KILL_SCRIPT)
    config = _config(synthetic_data_dir, "killed", epochs=4, head_epochs=1,
                     finetune_learning_rate=1e-4, deterministic=False, max_eval_samples=32)
    command = [sys.executable, str(script), json.dumps(config.to_dict()), str(tmp_path / "res")]
    env = {**os.environ, "PCAM_TEST_KILL": "1", "PYTHONPATH": str(PROJ_ROOT),
           "PCAM_TESTS": str(PROJ_ROOT / "tests")}
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    path = tmp_path / "res" / "killed" / "record.json"
    record = json.loads(path.read_text())
    assert record["status"] == "running"
    assert [h["epoch"] for h in record["history"]] == [1, 2]

    env.pop("PCAM_TEST_KILL")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(path.read_text())
    assert record["status"] == "complete"
    assert [(h["epoch"], h["phase"]) for h in record["history"]] == [
        (1, "head"), (2, "finetune"), (3, "finetune"), (4, "finetune")]
    assert [r["from_epoch"] for r in record["resumed"]] == [2]
    assert [p["status"] for p in record["phases"]] == ["complete", "complete"]
    # The optimizer state came back with the checkpoint: its step count went on.
    assert record["history"][2]["learning_rate"] < record["history"][1]["learning_rate"]
    assert math.isfinite(record["metrics"]["valid"]["single"]["roc_auc"])


def test_resnet50_trains_a_few_steps(tmp_path, synthetic_data_dir):
    config = _config(synthetic_data_dir, "resnet", model="resnet50", alpha=1.0, epochs=1,
                     max_samples=16, max_eval_samples=16, batch_size=8, deterministic=False)
    record = run_training(config, results=tmp_path, verbose=0)
    assert record["status"] == "complete" and record["phases"][0]["phase"] == "scratch"
    assert record["backbone"]["preprocessing"].startswith("x / 255")
    assert record["metrics"]["valid"]["single"]["n"] == 16
