"""Batched, seeded augmentation in TensorFlow ops (runs inside `tf.data` after batching).

Tissue has no orientation and H&E colour varies between labs, so training
patches get random dihedral transforms, small shifts that keep the labelled
central 32x32 in view, HED stain jitter and brightness/contrast changes. All
ops act on a whole uint8 batch [B, 96, 96, 3]; no per-image Python.
"""

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from skimage.color import hed_from_rgb, rgb_from_hed

from pcam.data.spec import AUGMENTATIONS

MAX_SHIFT = 8  # pixels; the central 32x32 (rows/cols 32..63) stays in view up to 32
HED_ALPHA = 0.05  # per-stain scale in [1 - a, 1 + a]  (Tellez et al. 2018, "HED light")
HED_BETA = 0.01  # per-stain offset in [-b, b], in skimage's normalised OD units
BRIGHTNESS = 0.1  # additive, fraction of the 0..255 range
CONTRAST = 0.1  # factor in [1 - c, 1 + c] around each image's mean

# Ruifrok & Johnston (2001) stain vectors, exactly as skimage.color.rgb2hed uses them
_HED_FROM_RGB, _RGB_FROM_HED = hed_from_rgb.astype(np.float32), rgb_from_hed.astype(np.float32)
_LOG_ADJUST = float(np.log(1e-6))  # skimage's clamp of dark pixels, also its OD scale


def build_augmenter(names: Sequence[str], seed: int = 0) -> Callable[..., tf.Tensor] | None:
    """Random augmentation of a uint8 batch, reproducible from `seed`.

    Args:
        names: any of "dihedral" (one of the 8 flips/90-degree rotations per
            image), "shift" (up to `MAX_SHIFT` px per axis, reflect padding),
            "hed" (HED stain jitter), "brightness_contrast". Applied in that
            order (geometry first), whatever the order given.
        seed: seed of the random draws.

    Returns:
        Function `augment(images, seed=None)`: uint8 [B, 96, 96, 3] -> uint8
        [B, 96, 96, 3], or None when `names` is empty. With a per-batch
        `seed` (int tensor of shape [2]) the output depends on it only, which
        keeps a parallel `tf.data` map reproducible (`pcam.data.pipeline` zips in
        seeds from `tf.data.Dataset.random`);
        without, seeds come from a `tf.random.Generator` seeded with `seed`,
        reproducible only when batches are augmented one after the other.

    Reference:
        Tellez et al., "Quantifying the effects of data augmentation and stain
        color normalization in convolutional neural networks for computational
        pathology", Medical Image Analysis 58 (2019).
    """
    names = tuple(names)
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; choose from {AUGMENTATIONS}")
    if not names:
        return None
    with tf.device("/CPU:0"):  # tf.data runs on the CPU; keep the state there
        gen = tf.random.Generator.from_seed(seed)
    steps = [_OPS[n] for n in AUGMENTATIONS if n in names]

    def augment(images: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        x = tf.convert_to_tensor(images)
        if seed is None:
            seed = gen.make_seeds(1)[:, 0]
        for step, step_seed in zip(steps, tf.unstack(_split(seed, len(steps))), strict=True):
            x = step(x, step_seed)
        return x

    return augment


def dihedral_variants(images: tf.Tensor) -> list[tf.Tensor]:
    """The 8 dihedral transforms of a batch, identity first (for test-time augmentation).

    Args:
        images: [B, H, W, C] tensor with H == W (any dtype).

    Returns:
        List of 8 tensors: rotations by 0, 90, 180, 270 degrees, then the
        same four of the left-right mirror image.
    """
    x = tf.convert_to_tensor(images)
    flipped = tf.reverse(x, axis=[2])
    return [tf.image.rot90(x, k) for k in range(4)] + [tf.image.rot90(flipped, k)
                                                       for k in range(4)]


def augmentation_examples(patch, seed: int = 0) -> dict[str, np.ndarray]:
    """One patch under each augmentation alone, for a figure.

    Args:
        patch: uint8 array (96, 96, 3).
        seed: augmentation seed. Default 0.

    Returns:
        dict name -> uint8 (96, 96, 3): "original", then each of `AUGMENTATIONS`.
    """
    x = tf.convert_to_tensor(np.asarray(patch, dtype=np.uint8)[None])
    out = {"original": np.asarray(patch, dtype=np.uint8)}
    for name in AUGMENTATIONS:
        out[name] = build_augmenter([name], seed)(x)[0].numpy()
    return out


def _split(seed, n: int):
    return tf.random.experimental.stateless_split(seed, num=n)


def _uniform(shape, seed, minval=0.0, maxval=1.0, dtype=tf.float32):
    return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=dtype)


def _dihedral(x, seed):
    # random transpose, then random row and column mirroring: all 8 of the group
    b, size = tf.shape(x)[0], tf.shape(x)[1]
    bits = _uniform([3, b, 1], seed) < 0.5
    x = tf.where(bits[2][:, :, None, None], tf.transpose(x, [0, 2, 1, 3]), x)
    i = tf.range(size)[None, :]
    src = tf.where(bits[:2], (size - 1) - i, i)  # [2, B, size]
    return _gather_rows_cols(x, src)


def _shift(x, seed, max_shift: int = MAX_SHIFT):
    # output pixel i shows input pixel i - s, reflected at the border (tf.pad "REFLECT")
    size = tf.shape(x)[1]
    shifts = _uniform([2, tf.shape(x)[0], 1], seed, -max_shift, max_shift + 1, tf.int32)
    src = tf.abs(tf.range(size)[None, :] - shifts)  # [2, B, size]
    return _gather_rows_cols(x, (size - 1) - tf.abs((size - 1) - src))


def _gather_rows_cols(x, src):
    """Per-image row and column permutations: out[b, i, j] = x[b, src[0, b, i], src[1, b, j]]."""
    x = tf.gather(x, src[0], axis=1, batch_dims=1)
    return tf.gather(x, src[1], axis=2, batch_dims=1)


def _rgb_to_hed(rgb):
    """float RGB in [0, 1] -> HED stain concentrations, as skimage.color.rgb2hed (unclipped)."""
    od = tf.math.log(tf.maximum(rgb, 1e-6)) / _LOG_ADJUST
    return tf.einsum("bhwc,cd->bhwd", od, _HED_FROM_RGB)


def _hed_to_rgb(hed):
    od = tf.einsum("bhwc,cd->bhwd", hed, _RGB_FROM_HED)
    return tf.clip_by_value(tf.exp(od * _LOG_ADJUST), 0.0, 1.0)


def _hed(x, seed, alpha: float = HED_ALPHA, beta: float = HED_BETA):
    b, seeds = tf.shape(x)[0], _split(seed, 2)
    scale = _uniform([b, 1, 1, 3], seeds[0], 1 - alpha, 1 + alpha)
    offset = _uniform([b, 1, 1, 3], seeds[1], -beta, beta)
    hed = _rgb_to_hed(tf.cast(x, tf.float32) / 255.0)
    return _to_uint8(_hed_to_rgb(hed * scale + offset) * 255.0)


def _brightness_contrast(x, seed):
    b, seeds = tf.shape(x)[0], _split(seed, 2)
    delta = _uniform([b, 1, 1, 1], seeds[0], -BRIGHTNESS, BRIGHTNESS) * 255.0
    factor = _uniform([b, 1, 1, 1], seeds[1], 1 - CONTRAST, 1 + CONTRAST)
    xf = tf.cast(x, tf.float32)
    mean = tf.reduce_mean(xf, axis=[1, 2, 3], keepdims=True)
    return _to_uint8((xf - mean) * factor + mean + delta)


def _to_uint8(x):
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


_OPS = {"dihedral": _dihedral, "shift": _shift, "hed": _hed,
        "brightness_contrast": _brightness_contrast}
