"""Model builders: input contract, preprocessing inside, phases, weight errors."""

import keras
import numpy as np
import pytest

from pcam.core.errors import PCamError
from pcam.models import BACKBONES, build_model, count_params, default_weights, set_phase

SHARED_025 = "weights/imagenet-mobilenet-v1/mobilenet_v1_0.25_imagenet_no_top.h5"
NAMES = ["image", "preprocess", "backbone", "pool", "head_dropout_1", "head_dense_1",
         "head_dropout_2", "head_dense_2", "head_dropout_3", "prediction"]


def _patches(n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def mobilenet():
    return build_model("mobilenet", alpha=0.25, weights=None, head_units=(16, 8))


def test_mobilenet_contract(mobilenet):
    assert mobilenet.input.dtype == "uint8"
    assert tuple(mobilenet.output.shape) == (None, 1)
    assert [layer.name for layer in mobilenet.layers] == NAMES
    assert mobilenet.get_layer("prediction").dtype_policy.name == "float32"
    prob = mobilenet.predict(_patches(), verbose=0)
    assert prob.shape == (3, 1) and np.all((prob > 0) & (prob < 1))


def test_preprocessing_matches_keras(mobilenet):
    x = _patches()
    inside = keras.ops.convert_to_numpy(mobilenet.get_layer("preprocess")(x))
    expected = keras.applications.mobilenet.preprocess_input(x.astype("float32"))
    np.testing.assert_allclose(inside, expected, atol=1e-6)
    # Raw uint8 through the model equals manual preprocessing + backbone + pooling.
    features = keras.Model(mobilenet.input, mobilenet.get_layer("pool").output)
    base = mobilenet.get_layer("backbone")
    manual = keras.ops.mean(base(expected, training=False), axis=(1, 2))
    np.testing.assert_allclose(features.predict(x, verbose=0), manual, rtol=1e-4, atol=1e-5)


def test_trainable_counts_per_phase(mobilenet):
    base = mobilenet.get_layer("backbone")
    head = sum(count_params(mobilenet.get_layer(n).trainable_weights)
               for n in ("head_dense_1", "head_dense_2", "prediction"))
    assert head == (256 * 16 + 16) + (16 * 8 + 8) + (8 + 1)
    assert set_phase(mobilenet, "head") == head
    assert not base.trainable_weights

    finetune = set_phase(mobilenet, "finetune", finetune_layers=6)
    trainable = [layer for layer in base.layers if layer.trainable_weights]
    assert [layer.name for layer in trainable] == ["conv_dw_13", "conv_pw_13"]
    assert finetune == head + 3 * 3 * 256 + 256 * 256

    everything = set_phase(mobilenet, "scratch")
    bn = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.trainable for layer in bn)
    assert everything == count_params(mobilenet.trainable_weights) > finetune
    # Default fine-tune depth comes from the registry; BatchNorm stays frozen.
    set_phase(mobilenet, "finetune")
    assert not any(layer.trainable_weights for layer in bn)
    assert base.layers[-BACKBONES["mobilenet"].finetune_layers - 1].trainable_weights == []
    with pytest.raises(ValueError, match="phase='warm'"):
        set_phase(mobilenet, "warm")


def test_resnet50_from_scratch():
    model = build_model("resnet50", weights=None, head_units=(8,))
    assert tuple(model.output.shape) == (None, 1) and model.input.dtype == "uint8"
    x = _patches(2)
    scaled = keras.ops.convert_to_numpy(model.get_layer("preprocess")(x))
    np.testing.assert_allclose(scaled, x / 255, atol=1e-6)
    total = count_params(model.trainable_weights)
    assert set_phase(model, "scratch") == total > 23_000_000
    assert default_weights("resnet50") is None and default_weights("mobilenet") == "imagenet"
    with pytest.raises(PCamError, match="--weights none"):
        build_model("resnet50", weights="imagenet")


def test_bad_arguments(tmp_path):
    with pytest.raises(PCamError, match=r"alpha=0\.3: mobilenet offers alpha 0\.25, 0\.5"):
        build_model("mobilenet", alpha=0.3, weights=None)
    with pytest.raises(PCamError, match="resnet50 has no width multiplier"):
        build_model("resnet50", alpha=0.5, weights=None)
    with pytest.raises(PCamError, match="unknown model 'vgg'; use one of mobilenet, resnet50$"):
        build_model("vgg")
    missing = tmp_path / "nope.h5"
    with pytest.raises(PCamError, match=f"weights file {missing} does not exist"):
        build_model("mobilenet", alpha=0.25, weights=str(missing))


def test_offline_imagenet_names_weights_option(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example/x.h5: None -- no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(PCamError) as error:
        build_model("mobilenet", alpha=0.25, weights="imagenet")
    message = str(error.value)
    assert "could not download the ImageNet weights for mobilenet" in message
    assert "--weights PATH" in message and "--weights none" in message
    assert "no-top weights file of the same alpha" in message


def test_shared_weights_load_and_wrong_alpha(shared_dir):
    path = str(shared_dir / SHARED_025)
    model = build_model("mobilenet", alpha=0.25, weights=path)
    kernel = model.get_layer("backbone").get_layer("conv1").kernel
    assert kernel.shape == (3, 3, 3, 8) and float(keras.ops.std(kernel)) > 0.01
    with pytest.raises(PCamError) as error:
        build_model("mobilenet", alpha=0.5, weights=path)
    message = str(error.value)
    assert path in message
    assert "looks like alpha=0.25, the model has alpha=0.5" in message
    assert "--alpha" in message
