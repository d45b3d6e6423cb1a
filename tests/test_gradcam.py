"""Grad-CAM on a tiny hand-weighted model with the project's layer names."""

import keras
import numpy as np
import pytest

from pcam.evaluation.gradcam import CASES, gradcam, select_cases
from pcam.plots.gradcam import plot_gradcam_grid


def _dark_blob_model() -> keras.Model:
    """A model whose "tumour" evidence is darkness: its feature map is known.

    backbone: 1x1 conv computing relu(0.5 - mean(rgb)) then 4x4 average pooling
    (a 24x24 feature map, so the upsampling matters); head: pool, dropout,
    dense(1) identity, sigmoid.
    """
    inputs = keras.Input((96, 96, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255, name="preprocess")(inputs)
    backbone = keras.Sequential(
        [keras.Input((96, 96, 3)), keras.layers.Conv2D(1, 1, activation="relu"),
         keras.layers.AveragePooling2D(4)],
        name="backbone",
    )
    x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.5, name="head_dropout_0")(x)
    x = keras.layers.Dense(1, name="head_dense_0")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="prediction")(x)
    model = keras.Model(inputs, outputs)
    conv = backbone.layers[0]
    conv.set_weights([np.full((1, 1, 3, 1), -1 / 3, np.float32), np.full(1, 0.5, np.float32)])
    model.get_layer("head_dense_0").set_weights([np.ones((1, 1), np.float32), np.zeros(1)])
    model.get_layer("prediction").set_weights([np.full((1, 1), 4.0, np.float32), np.zeros(1)])
    return model


def _patches_with_blobs(centres) -> np.ndarray:
    yy, xx = np.mgrid[:96, :96]
    images = np.full((len(centres), 96, 96, 3), 235, np.uint8)
    for image, (row, col) in zip(images, centres, strict=True):
        image[(yy - row) ** 2 + (xx - col) ** 2 <= 8**2] = 30
    return images


def test_gradcam_is_input_sized_in_unit_range_and_peaks_on_off_centre_blob():
    model = _dark_blob_model()
    centres = [(20, 70), (75, 15)]  # both outside the central 32x32
    maps = gradcam(model, _patches_with_blobs(centres), batch_size=1)
    assert maps.shape == (2, 96, 96)
    assert maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() == pytest.approx(1.0)
    for cam, (row, col) in zip(maps, centres, strict=True):
        peak = np.unravel_index(np.argmax(cam), cam.shape)
        assert abs(peak[0] - row) <= 6 and abs(peak[1] - col) <= 6, (peak, (row, col))
        # far from the blob there is no evidence
        assert cam[96 - row, 96 - col] == 0


def test_gradcam_blank_patch_gives_zero_map_not_nan():
    maps = gradcam(_dark_blob_model(), np.full((1, 96, 96, 3), 255, np.uint8))
    assert np.all(maps == 0)


def test_gradcam_rejects_model_without_project_layer_names():
    inputs = keras.Input((96, 96, 3))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="preprocess"):
        gradcam(model, np.zeros((1, 96, 96, 3), np.uint8))


def test_select_cases_and_grid(tmp_path):
    y_true = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    y_prob = np.array([0.9, 0.2, 0.8, 0.1, 0.7, 0.3, 0.6, 0.05])
    cases = select_cases(y_true, y_prob, 0.5, per_case=2, seed=1)
    assert set(cases) == set(CASES)
    assert set(cases["FP"]) == {2} and set(cases["FN"]) == {1}
    assert len(cases["TP"]) == 2 and set(cases["TP"]) <= {0, 4, 6}
    assert len(cases["TN"]) == 2 and set(cases["TN"]) <= {3, 5, 7}
    images = _patches_with_blobs([(20 + 5 * i, 70) for i in range(8)])
    path = tmp_path / "gradcam.png"
    fig = plot_gradcam_grid(_dark_blob_model(), images, y_prob, cases, path, title="tiny")
    assert path.stat().st_size > 1000
    assert len(fig.axes) == 4 * 2


@pytest.mark.parametrize("name", ["mobilenet", "resnet50"])
def test_gradcam_runs_on_the_project_models(name):
    from pcam.models import build_model

    kwargs = {"alpha": 0.25} if name == "mobilenet" else {}
    model = build_model(name, weights=None, **kwargs)
    images = np.random.default_rng(0).integers(0, 255, (2, 96, 96, 3), dtype=np.uint8)
    maps = gradcam(model, images)
    assert maps.shape == (2, 96, 96)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
