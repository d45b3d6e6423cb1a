"""Grad-CAM: where in a patch the model found evidence for "tumour".

Relies on the fixed layer names of `pcam.models.build_model`: "preprocess" ->
"backbone" -> "pool" -> "head_dropout_i"/"head_dense_i" -> "prediction".

Reference:
    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017.
"""

import numpy as np

CASES = ("TP", "FP", "FN", "TN")
CASE_TITLES = {"TP": "true positive", "FP": "false positive", "FN": "false negative",
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
