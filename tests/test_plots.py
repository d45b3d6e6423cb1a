"""Figures: written, readable PNGs at README width; missing parts handled."""

import json
import os
import shutil
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from fake_runs import make_run
from PIL import Image

from pcam import plots
from pcam.core.errors import PCamError
from pcam.evaluation.predictions import load_predictions


def _png_size(path):
    assert path.exists() and path.stat().st_size > 5000, path
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def _load(run_dir, split="test"):
    record = json.loads((run_dir / "record.json").read_text())
    return record, load_predictions(run_dir, record, split)


def test_training_curves_png_at_readme_width(tmp_path):
    record, _ = _load(make_run(tmp_path, "m1"))
    path = tmp_path / "images" / "mobilenet_curves.png"
    fig = plots.plot_training_curves(record, path)
    width, height = _png_size(path)
    assert 700 <= width <= 1000 and height > width / 2
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:5] == ["Loss", "Accuracy", "Precision and recall", "F1", "ROC AUC"]
    # train and valid on the same axes, with a legend; phase boundary drawn
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["train loss", "valid loss"]
    assert any(line.get_linestyle() == "-." for line in fig.axes[0].lines)


def test_training_curves_without_history_is_a_clear_error(tmp_path):
    record, _ = _load(make_run(tmp_path, "m1"))
    record["history"] = []
    with pytest.raises(PCamError, match="no training history"):
        plots.plot_training_curves(record)


def test_comparison_figures(tmp_path):
    a, pa = _load(make_run(tmp_path, "a", "mobilenet", seed=1))
    b, pb = _load(make_run(tmp_path, "b", "resnet50", seed=2))
    out = tmp_path / "images"
    fig = plots.plot_compared_curves([a, b], out / "compare_curves.png")
    auc_panel = fig.axes[3]  # valid ROC AUC against training minutes, not epochs
    assert auc_panel.get_xlabel() == "training minutes"
    minutes = auc_panel.lines[0].get_xdata()
    assert list(minutes) == pytest.approx(
        [sum(h["seconds"] for h in a["history"][: i + 1]) / 60 for i in range(len(minutes))])
    del b["history"][0]["seconds"]  # an older record without timings: epochs for every run
    fig = plots.plot_compared_curves([a, b])
    assert fig.axes[3].get_xlabel() == "epoch"
    assert list(fig.axes[3].lines[0].get_xdata()) == [h["epoch"] for h in a["history"]]
    fig = plots.plot_roc_pr([pa, pb], out / "compare_roc_pr.png")
    legend = fig.axes[0].get_legend_handles_labels()[1]
    auc = a["metrics"]["test"]["single"]["roc_auc"]
    assert f"mobilenet AUC {auc:.3f}" in legend
    assert any(label.startswith("resnet50 + TTA AUC") for label in legend)
    fig = plots.plot_confusion([a, b], "test", out / "compare_confusion.png")
    texts = [t.get_text() for t in fig.axes[0].texts]
    tn = a["metrics"]["test"]["single"]["at_chosen"]["confusion_matrix"][0][0]
    assert texts[0].startswith(f"{tn:,}\n")
    fig = plots.plot_reliability([pa, pb], out / "compare_reliability.png")
    ece = a["metrics"]["test"]["single"]["ece"]
    assert f"mobilenet ECE {ece:.3f}" in fig.axes[0].get_legend_handles_labels()[1]
    for name in ("compare_curves", "compare_roc_pr", "compare_confusion", "compare_reliability"):
        width, _ = _png_size(out / f"{name}.png")
        assert 500 <= width <= 1000


def test_reliability_without_record_ece_shows_the_same_ece(tmp_path):
    record, pred = _load(make_run(tmp_path, "m", "mobilenet", seed=1))
    pred.metrics = {}  # predictions without their record's numbers
    fig = plots.plot_reliability([pred])
    ece = record["metrics"]["test"]["single"]["ece"]
    assert f"mobilenet ECE {ece:.3f}" in fig.axes[0].get_legend_handles_labels()[1]


def test_importing_plots_leaves_the_backend_alone():
    code = "import matplotlib, pcam.plots; print(matplotlib.get_backend())"
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "svg"  # a notebook keeps its inline backend the same way


def test_eval_plots_without_tta_or_test_split(tmp_path):
    record, pred = _load(make_run(tmp_path, "v", splits=("valid",), tta=False), "valid")
    assert pred.y_prob_tta is None
    assert load_predictions(tmp_path / "v", record, "test") is None
    fig = plots.plot_roc_pr([pred])
    assert len(fig.axes[0].lines) == 2  # model + chance, no TTA curve
    with pytest.raises(ValueError, match="test metrics"):
        plots.plot_confusion([record], "test")
    plots.plot_confusion([record], "valid", tmp_path / "c.png")
    _png_size(tmp_path / "c.png")


def test_sample_grid(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (20, 96, 96, 3), dtype=np.uint8)
    labels = np.array([0, 1] * 10)
    fig = plots.plot_sample_grid(images, labels, tmp_path / "s.png", per_class=6)
    _png_size(tmp_path / "s.png")
    assert len(fig.axes) == 12
    with pytest.raises(ValueError, match="do not match"):
        plots.plot_sample_grid(images, labels[:5])


def test_augmentation_figure(tmp_path):
    pytest.importorskip("pcam.data.augment")
    patch = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    fig = plots.plot_augmentations(patch, tmp_path / "aug.png", seed=0)
    _png_size(tmp_path / "aug.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["original", "dihedral", "shift", "hed", "brightness_contrast"]


def _tiny_model():
    inputs = keras.Input((8,), name="x")
    return keras.Model(inputs, keras.layers.Dense(1, name="prediction")(inputs))


def test_model_diagram_written_with_graphviz(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("graphviz is not installed here")
    path = plots.plot_model_diagram(_tiny_model(), tmp_path / "model.png")
    assert path == tmp_path / "model.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 50


def test_model_diagram_without_graphviz_warns(tmp_path, monkeypatch):
    import pcam.plots.data as plots_data

    monkeypatch.setattr(plots_data.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="graphviz"):
        assert plots.plot_model_diagram(_tiny_model(), tmp_path / "m.png") is None
    assert not (tmp_path / "m.png").exists()


def test_model_diagram_without_pydot_warns(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydot", None)  # makes `import pydot` fail
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert plots.plot_model_diagram(_tiny_model(), tmp_path / "m.png") is None
    assert any("pydot is not installed" in str(w.message) for w in caught)
