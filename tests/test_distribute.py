"""pcam.train.distribute: strategies, the scaling rule, chief-only writing, sharding.

The multi-device tests run in subprocesses: logical CPU devices and
`MultiWorkerMirroredStrategy` must be set up before TensorFlow initialises.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from pcam.core.errors import PCamError
from pcam.run.config import TrainConfig
from pcam.train import distribute

ROOT = Path(__file__).resolve().parents[1]

MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from pcam.train import distribute

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype("float32")
    y = (x[:, :1] + 0.5 * x[:, 1:2] > 0).astype("float32")

    def train(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="tanh"),
                                      keras.layers.Dense(1, activation="sigmoid")])
            model.compile(keras.optimizers.SGD(0.5), "binary_crossentropy")
        start = [w.tolist() for w in model.get_weights()]
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # global batch 16
        model.fit(data, epochs=3, shuffle=False, verbose=0)
        return start, [w.tolist() for w in model.get_weights()]

    mirrored = distribute.make_strategy("mirrored")
    two = train(mirrored)
    one = train(distribute.make_strategy("none"))
    json.dump({"replicas": mirrored.num_replicas_in_sync, "kind": type(mirrored).__name__,
               "devices": list(mirrored.extended.worker_devices),
               "start": [two[0], one[0]], "end": [two[1], one[1]]}, sys.stdout)
""")

WORKER = textwrap.dedent("""
    import hashlib, json, sys
    import keras
    from pcam.train import distribute
    from pcam.train.session import start_run
    from pcam.run.config import TrainConfig
    from pcam.data.pipeline import make_dataset

    data_dir, results, out = sys.argv[1:4]
    strategy = distribute.make_strategy("auto")
    # One epoch of the sharded training stream: which patches did this worker get?
    ds = make_dataset("train", data_dir=data_dir, batch_size=16, shuffle=True, seed=3,
                      max_samples=80, cache=False)
    seen, steps = [], 0
    for images, _ in strategy.experimental_distribute_dataset(
            distribute.distribute_input(ds, strategy)):
        steps += 1
        for part in strategy.experimental_local_results(images):
            seen += [hashlib.md5(a.tobytes()).hexdigest() for a in part.numpy()]

    distribute.make_strategy = lambda name: strategy  # one MWMS per process

    def tiny_model():  # pcam's layer names, a fraction of MobileNet's tracing time
        inputs = keras.Input((96, 96, 3), dtype="uint8")
        x = keras.layers.Rescaling(1 / 255, name="preprocess")(inputs)
        base_in = keras.Input((96, 96, 3))
        base = keras.Model(base_in, keras.layers.Conv2D(4, 3, strides=4)(base_in), name="backbone")
        x = keras.layers.GlobalAveragePooling2D(name="pool")(base(x))
        outputs = keras.layers.Dense(1, activation="sigmoid", name="prediction")(x)
        return keras.Model(inputs, outputs, name="pcam_mobilenet")

    config = TrainConfig(model="mobilenet", alpha=0.25, weights=None, run="mw", data_dir=data_dir,
                         epochs=1, head_epochs=0, batch_size=8, max_samples=64,
                         max_eval_samples=32, head_units=(8,), augment=(), tta=False,
                         learning_rate=1e-3, precision="float32")
    # The recipe of tests/recipe.py, around the stand-in model.
    run = start_run(config, results=results, verbose=0)
    with run.scope():
        model = tiny_model()
    for phase in run.phases:
        model.get_layer("backbone").trainable = phase != "head"
        with run.scope():
            model.compile(optimizer=keras.optimizers.Adam(run.learning_rate(phase)),
                          loss="binary_crossentropy", metrics=run.metrics())
        model.fit(run.train, validation_data=run.valid, epochs=run.end_epoch(phase),
                  initial_epoch=run.resume(model, phase), callbacks=run.callbacks(phase),
                  verbose=run.verbose)
    record = run.finish()
    json.dump({"chief": distribute.is_chief(strategy), "seen": seen, "steps": steps,
               "replicas": strategy.num_replicas_in_sync, "status": record["status"],
               "distribution": record["distribution"]}, open(out, "w"))
""")


def _subprocess_env(tmp: Path, **extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp), **extra}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# -- in-process: rules, TF_CONFIG, errors ---------------------------------------------


def test_scale_config_follows_the_linear_rule():
    config = TrainConfig(batch_size=32, learning_rate=1e-3, finetune_learning_rate=1e-5)
    assert distribute.scale_config(config, 1) is config
    scaled = distribute.scale_config(config, 4)
    assert scaled.batch_size == 128
    assert scaled.learning_rate == pytest.approx(4e-3)
    assert scaled.finetune_learning_rate == pytest.approx(4e-5)
    assert config.batch_size == 32  # the original is untouched (it goes into the record)
    with pytest.raises(ValueError, match="replicas must be an integer >= 1, got 0"):
        distribute.scale_config(config, 0)


def test_describe_records_effective_values_on_one_device():
    config = TrainConfig(batch_size=32, learning_rate=2e-3, precision="mixed_bfloat16")
    entry = distribute.describe(distribute.make_strategy("none"), config, "mixed_bfloat16")
    assert entry["strategy"] == "default (one device)"
    assert entry["replicas"] == 1 and entry["workers"] == 1
    assert entry["global_batch"] == 32 and entry["learning_rate"] == 2e-3
    assert entry["precision"] == "mixed_bfloat16" and "Goyal" in entry["rule"]


@pytest.mark.parametrize(
    ("cluster", "task", "chief"),
    [
        ({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 0}, True),
        ({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 1}, False),
        ({"chief": ["c:0"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, True),
        ({"chief": ["c:0"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, False),
    ],
)
def test_is_chief_reads_tf_config(monkeypatch, cluster, task, chief):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    assert distribute.is_chief() is chief
    # A single-process strategy is always its own chief, whatever TF_CONFIG says.
    assert distribute.is_chief(tf.distribute.get_strategy()) is True


def test_tf_config_errors_and_strategy_choices(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.tf_config() is None and distribute.is_chief() is True
    with pytest.raises(PCamError, match="needs TF_CONFIG"):
        distribute.make_strategy("multiworker")
    with pytest.raises(ValueError, match="got 'tpu'"):
        distribute.make_strategy("tpu")
    assert distribute.make_strategy("none") is tf.distribute.get_strategy()
    assert distribute.make_strategy("auto").num_replicas_in_sync == 1
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(PCamError, match="TF_CONFIG is not valid JSON"):
        distribute.tf_config()
    monkeypatch.setenv("TF_CONFIG", '{"task": {}}')
    with pytest.raises(PCamError, match='needs a "cluster" mapping'):
        distribute.tf_config()


def test_mixed_float16_keeps_float32_output_and_scales_the_loss():
    from pcam.models import build_model

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model("mobilenet", alpha=0.25, weights=None, head_units=(8,),
                            input_shape=(32, 32, 3))
        model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    finally:
        keras.config.set_dtype_policy(policy)
    assert model.get_layer("head_dense_1").compute_dtype == "float16"
    assert model.get_layer("prediction").compute_dtype == "float32"
    out = model(np.zeros((2, 32, 32, 3), np.uint8))
    assert out.dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


# -- subprocesses: two CPU replicas, two workers -------------------------------------


@pytest.mark.slow
def test_mirrored_on_two_cpus_matches_one_device(tmp_path):
    done = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                          cwd=tmp_path, env=_subprocess_env(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["kind"] == "MirroredStrategy" and result["replicas"] == 2
    assert len(set(result["devices"])) == 2
    two_start, one_start = ([np.array(w) for w in ws] for ws in result["start"])
    two_end, one_end = ([np.array(w) for w in ws] for ws in result["end"])
    for a, b in zip(two_start, one_start, strict=True):
        np.testing.assert_array_equal(a, b)  # same initial weights
    moved = max(np.abs(a - b).max() for a, b in zip(one_end, one_start, strict=True))
    assert moved > 0.05  # training changed the weights, so the comparison means something
    for a, b in zip(two_end, one_end, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_workers_share_each_epoch_and_only_the_chief_writes(tmp_path, synthetic_data_dir):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    results, scratch = tmp_path / "results", tmp_path / "scratch"
    scratch.mkdir()
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        out = tmp_path / f"worker{index}.json"
        procs.append((out, subprocess.Popen(
            [sys.executable, "-c", WORKER, str(synthetic_data_dir), str(results), str(out)],
            cwd=tmp_path, env=_subprocess_env(scratch, TF_CONFIG=tf_config),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    logs = []
    try:
        for _, proc in procs:
            logs.append(proc.communicate(timeout=150)[0])
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
    for (_, proc), log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log[-3000:]
    chief, other = (json.loads(out.read_text()) for out, _ in procs)
    assert chief["chief"] is True and other["chief"] is False
    assert chief["replicas"] == other["replicas"] == 2

    # Sharding: the same number of steps, and every patch exactly once an epoch.
    from pcam.data.h5read import open_split, read_images

    images = read_images(open_split(synthetic_data_dir, "train"), 0, 80)
    expected = sorted(hashlib.md5(a.tobytes()).hexdigest() for a in images)
    assert chief["steps"] == other["steps"] == 5  # 80 patches / global batch 16
    assert sorted(chief["seen"] + other["seen"]) == expected
    assert set(chief["seen"]).isdisjoint(other["seen"])

    # Only the chief wrote: one run folder, complete, and no worker temp folder left.
    assert [p.name for p in results.iterdir()] == ["mw"]
    record = json.loads((results / "mw" / "record.json").read_text())
    assert record["status"] == "complete" and chief["status"] == "complete"
    assert (results / "mw" / "checkpoints" / "best.keras").is_file()
    assert record["distribution"] == chief["distribution"] == other["distribution"]
    assert record["distribution"]["strategy"] == "MultiWorkerMirroredStrategy"
    assert [h["epoch"] for h in record["history"]] == [1]
    assert 0 <= record["history"][0]["val_auc"] <= 1
    assert record["distribution"]["workers"] == 2
    assert record["distribution"]["global_batch"] == 16  # 8 per replica x 2
    assert record["distribution"]["learning_rate"] == pytest.approx(2e-3)
    assert not [p for p in scratch.iterdir() if p.name.startswith("pcam-worker-")]
