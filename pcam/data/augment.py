"""Batched, seeded augmentation in TensorFlow ops (runs inside `tf.data` after batching).

Tissue has no orientation and H&E colour varies between labs, so training
patches get random dihedral transforms, small shifts that keep the labelled
central 32x32 in view, HED stain jitter and brightness/contrast changes. All
ops act on a whole uint8 batch [B, 96, 96, 3]; no per-image Python. The two
geometric steps are one gather of pixels, the stain jitter one 3x3 matrix per
image, and the whole chain runs as one XLA-compiled function where XLA runs
(`benchmarks/bench_pipeline.py --augment-cost` times it against plain ops).
"""

import functools
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


def build_augmenter(names: Sequence[str], seed: int = 0, *,
                    jit: bool | str = "auto") -> Callable[..., tf.Tensor] | None:
    """Random augmentation of a uint8 batch, reproducible from `seed`.

    Args:
        names: any of "dihedral" (one of the 8 flips/90-degree rotations per
            image), "shift" (up to `MAX_SHIFT` px per axis, reflect padding),
            "hed" (HED stain jitter), "brightness_contrast". Applied in that
            order (geometry first), whatever the order given.
        seed: seed of the random draws.
        jit: True runs the whole augmentation as one XLA-compiled function
            (the element-wise steps fused into one pass over the batch), False
            as plain TensorFlow ops; "auto" compiles where XLA runs. Both draw
            the same random numbers; outputs agree to within one grey level
            (XLA's `exp` rounds differently in the last bit).

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
    if jit not in ("auto", True, False):
        raise ValueError(f'jit must be True, False or "auto", got {jit!r}')
    if not names:
        return None
    with tf.device("/CPU:0"):  # tf.data runs on the CPU; keep the state there
        gen = tf.random.Generator.from_seed(seed)
    steps = tuple(n for n in AUGMENTATIONS if n in names)

    if jit == "auto":
        jit = xla_available()
    # Random draws stay outside the compiled function: XLA's stateless generator
    # draws other numbers from the same seed.
    transform = tf.function(_augment, jit_compile=True) if jit else _augment

    def augment(images: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        x = tf.convert_to_tensor(images)
        _check_batch(x)
        if seed is None:
            seed = gen.make_seeds(1)[:, 0]
        seeds = dict(zip(steps, tf.unstack(_split(seed, len(steps))), strict=True))
        return transform(x, _draws(tf.shape(x)[0], seeds))

    return augment


@functools.cache
def xla_available() -> bool:
    """Whether XLA compiles and runs a function on this machine's CPU."""
    try:
        with tf.device("/CPU:0"):
            tf.function(lambda v: v + 1, jit_compile=True)(tf.zeros([1]))
    except (tf.errors.OpError, RuntimeError, ValueError):
        return False
    return True


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
    patch = np.asarray(patch)
    if patch.dtype != np.uint8:
        raise ValueError(f"augmentation_examples takes a uint8 patch (0..255), got {patch.dtype}")
    x = tf.convert_to_tensor(patch[None])
    out = {"original": patch}
    for name in AUGMENTATIONS:
        out[name] = build_augmenter([name], seed)(x)[0].numpy()
    return out


def _check_batch(x: tf.Tensor) -> None:
    """A uint8 batch of square RGB patches [B, S, S, 3], or a ValueError saying what it is."""
    shape = x.shape
    square = shape.rank == 4 and (None in shape[1:3] or shape[1] == shape[2])
    if x.dtype != tf.uint8 or not square or shape[-1] not in (None, 3):
        raise ValueError(f"augmentation takes a uint8 batch of square RGB patches "
                         f"[B, S, S, 3] (0..255), got {x.dtype.name} {list(shape)}")


def _split(seed, n: int):
    return tf.random.experimental.stateless_split(seed, num=n)


def _uniform(shape, seed, minval=0.0, maxval=1.0, dtype=tf.float32):
    return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=dtype)


def _draws(b, seeds: dict) -> dict[str, tf.Tensor]:
    """The random numbers of a batch of `b` patches for each step named in `seeds`."""
    draws = {}
    if "dihedral" in seeds:  # transpose?, mirror rows?, mirror columns?
        draws["dihedral"] = _uniform([3, b, 1], seeds["dihedral"]) < 0.5
    if "shift" in seeds:  # rows and columns
        draws["shift"] = _uniform([2, b, 1], seeds["shift"], -MAX_SHIFT, MAX_SHIFT + 1, tf.int32)
    if "hed" in seeds:  # per-stain scale and offset
        s = _split(seeds["hed"], 2)
        draws["hed"] = (_uniform([b, 3], s[0], 1 - HED_ALPHA, 1 + HED_ALPHA),
                        _uniform([b, 3], s[1], -HED_BETA, HED_BETA))
    if "brightness_contrast" in seeds:  # additive brightness, contrast factor
        s = _split(seeds["brightness_contrast"], 2)
        draws["brightness_contrast"] = (
            _uniform([b, 1, 1, 1], s[0], -BRIGHTNESS, BRIGHTNESS) * 255.0,
            _uniform([b, 1, 1, 1], s[1], 1 - CONTRAST, 1 + CONTRAST))
    return draws


def _augment(x, draws: dict):
    """The steps drawn in `draws` (name -> random numbers), in `AUGMENTATIONS` order."""
    if "dihedral" in draws or "shift" in draws:
        x = _geometry(x, draws.get("dihedral"), draws.get("shift"))
    if "hed" not in draws and "brightness_contrast" not in draws:
        return x
    xf = tf.cast(x, tf.float32)
    if "hed" in draws:
        xf = _hed(xf, *draws["hed"])
    if "brightness_contrast" in draws:
        xf = _brightness_contrast(xf, *draws["brightness_contrast"])
    return _to_uint8(xf)


def _geometry(x, bits, shifts):
    """Dihedral transform then shift, as one gather of pixels.

    Dihedral: a random transpose, then random row and column mirroring (all 8
    of the group). Shift: output pixel i shows input pixel i - s, reflected at
    the border (as tf.pad "REFLECT").

    Args:
        bits: bool [3, B, 1] (transpose, mirror rows, mirror columns) or None.
        shifts: int32 [2, B, 1] (rows, columns) or None.
    """
    b, size = tf.shape(x)[0], tf.shape(x)[1]
    i = tf.range(size)[None, :]
    if bits is None:
        bits = tf.zeros([3, b, 1], tf.bool)
    src = tf.broadcast_to(i, [2, b, size])
    if shifts is not None:
        src = (size - 1) - tf.abs((size - 1) - tf.abs(i - shifts))
    # the shift reads the mirrored image: compose the mirror's index after the shift's
    mirrored = tf.where(bits[:2], (size - 1) - src, src)  # [2, B, size]
    rows, cols = mirrored[0][:, :, None], mirrored[1][:, None, :]
    pixel = tf.where(bits[2][:, :, None], cols * size + rows, rows * size + cols)  # transposed
    flat = tf.reshape(x, [b, size * size, tf.shape(x)[3]])
    return tf.reshape(tf.gather(flat, tf.reshape(pixel, [b, -1]), batch_dims=1), tf.shape(x))


def _rgb_to_hed(rgb):
    """float RGB in [0, 1] -> HED stain concentrations, as skimage.color.rgb2hed (unclipped)."""
    od = tf.math.log(tf.maximum(rgb, 1e-6)) / _LOG_ADJUST
    return tf.einsum("bhwc,cd->bhwd", od, _HED_FROM_RGB)


def _hed(xf, scale, offset):
    """HED jitter of float RGB in 0..255; returns whole grey levels in 0..255.

    Each stain's concentration is scaled and offset: hed' = hed * s + o, with
    hed = log(rgb) / L @ H (L the log clamp, H skimage's matrix) and rgb' =
    exp(hed' @ R * L). Both matrix products and the jitter fold into one 3x3
    matrix and one offset per image: rgb' = exp(log(rgb) @ (H diag(s) R) + L o R).

    Args:
        scale, offset: float [B, 3], the per-stain s and o.
    """
    mix = tf.einsum("cd,bd,de->bce", _HED_FROM_RGB, scale, _RGB_FROM_HED)  # [B, 3, 3]
    shift = tf.einsum("bd,de->be", offset, _RGB_FROM_HED) * _LOG_ADJUST  # [B, 3]
    log_rgb = tf.math.log(tf.maximum(xf / 255.0, 1e-6))
    rgb = tf.exp(tf.einsum("bhwc,bcd->bhwd", log_rgb, mix) + shift[:, None, None, :])
    return tf.round(tf.minimum(rgb, 1.0) * 255.0)


def _brightness_contrast(xf, delta, factor):
    """Brightness and contrast of float RGB in 0..255 (clipped later by `_to_uint8`)."""
    mean = tf.reduce_mean(xf, axis=[1, 2, 3], keepdims=True)
    return (xf - mean) * factor + mean + delta


def _to_uint8(x):
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)

