"""Predict a split once, in file order, single pass and 8-fold dihedral TTA, timed."""

import time

import keras
import numpy as np
import tensorflow as tf

EVAL_BATCH = 256


def predict_split(model: keras.Model, split, *, max_samples: int | None = None,
                  tta: bool = False, batch_size: int = EVAL_BATCH) -> dict:
    """Predict one split in file order, timing inference.

    Args:
        model: a model taking uint8 patches, one sigmoid output (or its `Predictor`).
        split: a `pcam.data.h5read.Split`.
        max_samples: score only the first `max_samples` patches (None: all).
        tta: also predict the mean over the 8 dihedral transforms.
        batch_size: patches per inference batch.

    Returns:
        dict with y_true (uint8), y_prob (float32), y_prob_tta (when tta),
        slides (the slide of each patch, when the split has a meta file) and
        inference: seconds, images_per_s (and tta_seconds, tta_images_per_s).
    """
    from pcam.data.h5read import read_labels, read_slides
    from pcam.data.pipeline import make_dataset

    slides = read_slides(split)  # before predicting: a malformed meta file fails fast
    predictor = model if isinstance(model, Predictor) else Predictor(model)
    ds = make_dataset(split, batch_size=batch_size, max_samples=max_samples, cache=False)
    images = ds.map(lambda x, y: x)
    out = {}
    out["y_prob"], seconds = _timed_predict(predictor.single, images)
    n = len(out["y_prob"])
    out["y_true"] = read_labels(split)[:n].astype(np.uint8)
    if slides is not None:
        out["slides"] = slides[:n]
    out["inference"] = {"seconds": round(seconds, 4), "images_per_s": round(n / seconds, 1)}
    if tta:
        out["y_prob_tta"], tta_seconds = _timed_predict(predictor.tta, images)
        out["inference"].update(tta_seconds=round(tta_seconds, 4),
                                tta_images_per_s=round(n / tta_seconds, 1))
    return out


class Predictor:
    """A model's inference functions, traced once and reused for every split."""

    def __init__(self, model: keras.Model):
        from pcam.data.augment import dihedral_variants

        spec = [tf.TensorSpec([None, *model.input.shape[1:]], tf.uint8)]

        def tta(x):
            probs = [model(v, training=False) for v in dihedral_variants(x)]
            return tf.reduce_mean(tf.stack(probs), axis=0)

        self.model = model
        self.single = tf.function(lambda x: model(x, training=False), input_signature=spec)
        self.tta = tf.function(tta, input_signature=spec)


def _timed_predict(fn, images: tf.data.Dataset) -> tuple[np.ndarray, float]:
    # Trace once on a dummy batch so that timing measures inference, not tracing. (Not
    # on `images.take(1)`: dropping a tf.data iterator mid-stream can deadlock with the
    # pipeline's Python block reader.)
    fn(tf.zeros([1, *images.element_spec.shape[1:]], images.element_spec.dtype))
    start = time.perf_counter()
    probs = [fn(batch) for batch in images]
    probs = np.concatenate([keras.ops.convert_to_numpy(p) for p in probs]).reshape(-1)
    return probs.astype(np.float32), max(time.perf_counter() - start, 1e-9)
