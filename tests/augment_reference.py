"""The augmentation as it was first written, step by step: the reference the fused one matches.

`pcam.data.augment` runs the same draws as one gather and one 3x3 matrix per
image (and, where XLA runs, one compiled function); tests compare its outputs
with these, patch by patch and in distribution.
"""

import numpy as np
import tensorflow as tf
from skimage.color import hed_from_rgb, rgb_from_hed

from pcam.data.augment import BRIGHTNESS, CONTRAST, HED_ALPHA, HED_BETA, MAX_SHIFT
from pcam.data.spec import AUGMENTATIONS

_HED_FROM_RGB, _RGB_FROM_HED = hed_from_rgb.astype(np.float32), rgb_from_hed.astype(np.float32)
_LOG_ADJUST = float(np.log(1e-6))


def reference_augment(images, seed, names):
    """The named steps in `AUGMENTATIONS` order, each with its share of `seed`."""
    steps = [n for n in AUGMENTATIONS if n in names]
    x = tf.convert_to_tensor(images)
    for step, step_seed in zip(steps, tf.unstack(_split(seed, len(steps))), strict=True):
        x = _OPS[step](x, step_seed)
    return x


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
