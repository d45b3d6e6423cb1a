"""`pcam export`: each format exported by Keras, reloaded by its own runtime, held to
the Keras model's probabilities; refusals and failures leave nothing at --out."""

import sys

import keras
import numpy as np
import pytest

from pcam.app.cli import main
from pcam.core.environment import environment_info
from pcam.core.errors import PCamError
from pcam.data.h5read import open_split, read_images
from pcam.evaluation import export
from pcam.evaluation.runtimes import load_artifact, require
from pcam.run import records
from pcam.run.config import TrainConfig

N = 48  # test patches scored for parity


@pytest.fixture(scope="module")
def model(synthetic_data_dir):
    """A small model shaped as the project's (uint8 "image" in, its preprocessing inside,
    convolution, BatchNorm, depthwise convolution, sigmoid out), trained a little so that
    its probabilities differ from patch to patch (a random MobileNet's are all 0.5)."""
    from pcam.data.pipeline import make_dataset

    keras.utils.set_random_seed(0)
    inputs = keras.Input((96, 96, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(6.0, name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, name="depthwise")(x)
    x = keras.layers.Conv2D(32, 3, name="conv_2")(x)  # 2,304 weights: LiteRT quantises it
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="prediction")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    model.fit(make_dataset("train", data_dir=synthetic_data_dir, batch_size=64), epochs=3,
              shuffle=False, verbose=0)
    return model


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, model, synthetic_data_dir):
    """A run on the synthetic data with a best checkpoint (as tests/test_evaluate.py)."""
    from pcam.data.describe import data_section

    folder = tmp_path_factory.mktemp("results") / "run"
    (folder / "checkpoints").mkdir(parents=True)
    model.save(folder / "checkpoints" / "best.keras")
    config = TrainConfig(model="mobilenet", run="run", data_dir=str(synthetic_data_dir),
                         epochs=2, head_epochs=1, alpha=0.25, weights=None, precision="float32")
    splits = {s: open_split(synthetic_data_dir, s) for s in ("train", "valid", "test")}
    record = records.new_record(
        config=config.to_dict(), backbone={"recipe": "transfer", "preprocessing": "x / 127.5 - 1"},
        environment=environment_info(), data=data_section(config, synthetic_data_dir, splits))
    records.write_record(folder, record)
    return folder


def _installed(fmt: str) -> bool:
    try:
        require(fmt)
    except PCamError:
        return False
    return True


def _export(run_folder, fmt, out, *extra, data_dir=None) -> int:
    where = ["--data-dir", str(data_dir)] if data_dir else []
    return main(["export", "--run", str(run_folder), "--format", fmt, "--out", str(out),
                 "--max-samples", str(N), *where, *extra])


def _left_beside(out) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "name"), [("saved_model", "model"), ("onnx", "model.onnx"),
                                           ("litert", "model.tflite")])
def test_export_reloads_and_matches_keras(fmt, name, run_folder, model, synthetic_data_dir,
                                          tmp_path, capsys):
    if not _installed(fmt):
        pytest.skip(f"the packages --format {fmt} needs are not installed")
    out = tmp_path / name
    assert _export(run_folder, fmt, out, data_dir=synthetic_data_dir) == 0
    printed = capsys.readouterr().out
    assert f"parity on {N} test patches" in printed and "ok)" in printed
    assert "ROC AUC: keras" in printed
    # Reloaded apart from the command, by its runtime, on the patches read straight from
    # the file: the same probabilities as the Keras model.
    images = read_images(open_split(synthetic_data_dir, "test"), 0, N)
    expected = model.predict(images, verbose=0).reshape(-1)
    got = load_artifact(fmt, out)(images)
    assert got.shape == (N,) and np.std(expected) > 0.01  # probabilities that differ
    assert np.max(np.abs(got - expected)) <= export.FLOAT_TOLERANCE
    assert _left_beside(out) == [name]  # no temporary sibling left


@pytest.mark.slow
def test_quantized_litert_reports_size_and_auc(run_folder, synthetic_data_dir, tmp_path):
    if not _installed("litert"):
        pytest.skip("ai-edge-litert is not installed")
    summary = export.export_run(run_folder, "litert", tmp_path / "q.tflite",
                                quantize="dynamic", max_samples=N, data_dir=synthetic_data_dir)
    assert summary["bytes"] < summary["float_bytes"]
    assert summary["quantize"] == "dynamic" and summary["n"] == N
    text = export.format_summary(summary)
    assert "vs the float32 LiteRT file" in text and "(quantised: no limit)" in text
    assert _left_beside(tmp_path / "q.tflite") == ["q.tflite"]


def test_missing_runtime_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    assert _export(tmp_path / "no-run", "onnx", tmp_path / "m.onnx") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: --format onnx needs onnxruntime")
    assert "pip install -r requirements.txt" in err
    assert not (tmp_path / "m.onnx").exists()


def test_existing_out_is_refused(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"earlier")
    assert _export(tmp_path / "no-run", "onnx", out) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"earlier"
    # --overwrite replaces only an earlier export of the same format, never other files.
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert _export(tmp_path / "no-run", "saved_model", folder, "--overwrite") == 2
    assert "not a SavedModel folder" in capsys.readouterr().err
    assert (folder / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(("fmt", "out", "extra", "says"), [
    ("onnx", "m.tflite", (), "named *.onnx"),
    ("litert", "m.onnx", (), "named *.tflite"),
    ("onnx", "m.onnx", ("--quantize", "float16"), "for --format litert only"),
    ("saved_model", "m.onnx", (), "a SavedModel is a folder, not a .onnx file"),
    ("onnx", "nowhere/m.onnx", (), "a folder that does not exist"),
])
def test_bad_arguments_are_refused(fmt, out, extra, says, tmp_path, capsys):
    assert _export(tmp_path / "no-run", fmt, tmp_path / out, *extra) == 2
    assert says in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_out_under_a_file_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "model.onnx").write_text("mine")
    assert _export(tmp_path / "no-run", "onnx", tmp_path / "model.onnx" / "x.onnx") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "model.onnx").read_text() == "mine"


def test_mixed_precision_model_is_exported_as_its_float32_copy(tmp_path):
    """A run trained in mixed precision: ONNX wants float32 layers, and a mixed LiteRT
    file needs Flex ops its interpreter lacks; the copy computes in float32."""
    from pcam.models import _layers, float32_copy

    keras.config.set_dtype_policy("mixed_float16")
    try:
        inputs = keras.Input((16, 16, 3), dtype="uint8", name="image")
        x = keras.layers.Rescaling(1 / 255, name="preprocess")(inputs)
        inner = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3)],
                                 name="backbone")
        x = keras.layers.GlobalAveragePooling2D(name="pool")(inner(x))
        outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x)
        mixed = keras.Model(inputs, outputs)
    finally:
        keras.config.set_dtype_policy("float32")
    copy, policy = float32_copy(mixed)
    assert policy == "mixed_float16" and copy is not mixed
    assert {layer.dtype_policy.name for layer in _layers(copy)
            if not isinstance(layer, keras.layers.InputLayer)} == {"float32"}
    x = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_allclose(copy.predict(x, verbose=0), mixed.predict(x, verbose=0),
                               atol=1e-2)
    same, policy = float32_copy(copy)  # already float32: the model itself
    assert same is copy and policy is None


def _fake_export(model, fmt, path, *, quantize=None):
    """A stand-in for Keras' export (seconds saved): a SavedModel-like folder."""
    path.mkdir()
    (path / "saved_model.pb").write_bytes(b"new")
    return path


@pytest.mark.slow
def test_failed_export_leaves_nothing(run_folder, synthetic_data_dir, tmp_path, monkeypatch):
    def broken(model, fmt, path, *, quantize=None):
        path.mkdir()
        (path / "half").write_bytes(b"x")
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(export, "export_model", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export.export_run(run_folder, "saved_model", tmp_path / "m", max_samples=16,
                          data_dir=synthetic_data_dir)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_parity_failure_leaves_nothing_and_keeps_the_earlier(run_folder, model, tmp_path,
                                                              synthetic_data_dir, monkeypatch):
    out = tmp_path / "m"
    out.mkdir()
    (out / "saved_model.pb").write_bytes(b"earlier")
    monkeypatch.setattr(export, "export_model", _fake_export)
    off = lambda fmt, path: lambda x: model.predict(x, verbose=0).reshape(-1) + 1e-3  # noqa: E731
    monkeypatch.setattr(export, "load_artifact", off)
    with pytest.raises(PCamError, match="differs from its Keras model by up to 1.00e-03"):
        export.export_run(run_folder, "saved_model", out, max_samples=16, overwrite=True,
                          data_dir=synthetic_data_dir)
    assert _left_beside(out) == ["m"] and (out / "saved_model.pb").read_bytes() == b"earlier"
    # Within the limit, --overwrite swaps the earlier export for the new one.
    same = lambda fmt, path: lambda x: model.predict(x, verbose=0).reshape(-1)  # noqa: E731
    monkeypatch.setattr(export, "load_artifact", same)
    summary = export.export_run(run_folder, "saved_model", out, max_samples=16, overwrite=True,
                          data_dir=synthetic_data_dir)
    assert summary["max_abs_diff"] <= export.FLOAT_TOLERANCE
    assert _left_beside(out) == ["m"] and (out / "saved_model.pb").read_bytes() == b"new"
