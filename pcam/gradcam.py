"""Grad-CAM: where in a patch the model found evidence for "tumour".

Relies on the fixed layer names of `pcam.models.build_model`: "preprocess" ->
"backbone" -> "pool" -> "head_dropout_i"/"head_dense_i" -> "prediction".

Reference:
    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017.
"""

from pathlib import Path

import matplotlib
import numpy as np

from pcam.plots_common import new_figure, save_figure
from pcam.plots_data import draw_center_box

CASES = ("TP", "FP", "FN", "TN")
_CASE_TITLES = {"TP": "true positive", "FP": "false positive", "FN": "false negative",
                "TN": "true negative"}


def _head_layers(model):
    names = [layer.name for layer in model.layers]
    for required in ("preprocess", "backbone", "pool", "prediction"):
        if required not in names:
            raise ValueError(
                f"model {model.name!r} has no layer {required!r} (layers: {names}); "
                "Grad-CAM needs a model from pcam.models.build_model"
            )
    return [layer for layer in model.layers
            if layer.name == "pool" or layer.name.startswith("head_")]


def gradcam(model, images, *, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM maps of the "tumour" logit over the backbone's last feature map.

    The gradient of the prediction's logit (before the sigmoid, which would
    saturate) with respect to the backbone output is averaged per channel; the
    channel-weighted sum of the features, after a ReLU, is upsampled (bilinear)
    to the patch size and scaled to [0, 1] per patch (an all-zero map stays 0).

    Args:
        model: a Keras model with the layer names of `pcam.models.build_model`.
        images: uint8 array (N, H, W, 3), as fed to the model.
        batch_size: patches per gradient computation.

    Returns:
        float32 array (N, H, W) in [0, 1].
    """
    import tensorflow as tf

    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images of shape {images.shape}: expected (N, H, W, 3)")
    head = _head_layers(model)
    preprocess, backbone = model.get_layer("preprocess"), model.get_layer("backbone")
    prediction = model.get_layer("prediction")
    maps = []
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(images[start:start + batch_size])
        features = tf.cast(backbone(preprocess(x), training=False), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(features)
            h = features
            for layer in head:
                h = layer(h, training=False)
            logit = tf.matmul(tf.cast(h, tf.float32), tf.cast(prediction.kernel, tf.float32))
            logit = logit + tf.cast(prediction.bias, tf.float32)
        grads = tape.gradient(logit, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
        cam = tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0]
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        maps.append(tf.math.divide_no_nan(cam, peak).numpy())
    if not maps:
        return np.zeros(images.shape[:3], np.float32)
    return np.clip(np.concatenate(maps), 0, 1).astype(np.float32)


def select_cases(y_true, y_prob, threshold: float, *, per_case: int = 4,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Indices of up to `per_case` random true/false positives/negatives each.

    Args:
        y_true: labels (N,) in {0, 1}.
        y_prob: predicted probabilities (N,).
        threshold: a patch is called positive when its probability is >= this.
        per_case: patches drawn per case.
        seed: seed of the draw.

    Returns:
        {"TP", "FP", "FN", "TN"} -> sorted index array (possibly empty).
    """
    y_true = np.asarray(y_true).reshape(-1).astype(bool)
    called = np.asarray(y_prob).reshape(-1) >= threshold
    masks = {"TP": y_true & called, "FP": ~y_true & called,
             "FN": y_true & ~called, "TN": ~y_true & ~called}
    rng = np.random.default_rng(seed)
    out = {}
    for case in CASES:
        index = np.flatnonzero(masks[case])
        out[case] = np.sort(rng.choice(index, min(per_case, len(index)), replace=False))
    return out


def plot_gradcam_grid(model, images, y_prob, cases: dict[str, np.ndarray],
                      path: str | Path | None = None, *, title: str = "Grad-CAM",
                      alpha: float = 0.6):
    """Grad-CAM overlays in a grid: one row per case (TP, FP, FN, TN).

    Args:
        model: the Keras model the maps are computed for.
        images: patches indexable by the indices in `cases` (array or dict).
        y_prob: the model's probabilities, indexable the same way.
        cases: output of `select_cases`.
        path: PNG file to write, e.g. `images/mobilenet_gradcam.png`; None: do not save.
        title: figure title (e.g. the model and split).
        alpha: opacity of the heat map where it peaks (it fades to clear at 0).

    Returns:
        The matplotlib `Figure`.
    """
    ncols = max(1, max(len(cases.get(c, ())) for c in CASES))
    fig, axes = new_figure(len(CASES), ncols, height=7.0 / ncols + 0.35)
    for row, case in zip(axes, CASES, strict=True):
        index = list(cases.get(case, ()))
        batch = np.stack([np.asarray(images[i]) for i in index]) if index else None
        maps = gradcam(model, batch) if index else []
        for col, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(index):
                ax.axis("off")
                continue
            ax.imshow(batch[col])
            # opacity follows the map, so patches without evidence stay readable
            overlay = matplotlib.colormaps["jet"](maps[col])
            overlay[..., 3] = alpha * maps[col]
            ax.imshow(overlay)
            draw_center_box(ax, colour="white")
            ax.set_title(f"p={float(y_prob[index[col]]):.2f}", fontsize=7)
        row[0].axis("on")
        if not index:
            row[0].text(0.5, 0.5, "none", transform=row[0].transAxes, ha="center",
                        color="grey")
        row[0].set_ylabel(f"{case}\n{_CASE_TITLES[case]}", fontsize=7)
    fig.suptitle(f"{title} (red: evidence for tumour; dashed: central 32x32)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
