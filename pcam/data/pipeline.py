"""A streaming tf.data input pipeline over PCam-layout HDF5 files.

Block-wise reading: the used range of the file is cut into contiguous blocks
(a multiple of the HDF5 chunk rows, so each gzip chunk is inflated once);
blocks are read in a seeded order that changes every epoch, split into patches,
mixed in a shuffle buffer and batched. Only the blocks in flight are in memory,
unless the used part is cached (by default when it is under 2 GiB).

Reference: tf.data performance guide (interleaved reads, `prefetch`); this
replaces the per-patch `HDF5Matrix` readers of old Keras snippets.
"""

import os

import numpy as np
import tensorflow as tf

from pcam.core.environment import usable_cores
from pcam.data.blocks import BlockReader
from pcam.data.h5read import Split, open_split
from pcam.data.spec import PATCH_SHAPE

CACHE_LIMIT_BYTES = 2 * 1024**3
_PATCH_BYTES = int(np.prod(PATCH_SHAPE))

# tf.data's autotuner re-plans buffers and parallelism from a background thread; with
# few cores that thread competes with training. Measured on the 2-core machine
# (MobileNet 0.5, six epochs of 6,400 patches): 84 s with it and 64 s without on one
# core, 48 s and 43 s on two, with stalled epochs (190 against 100 ms a step) only with it.
AUTOTUNE_MIN_CORES = 5


def make_dataset(
    split: Split | str,
    *,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    shuffle: bool = False,
    seed: int = 0,
    max_samples: int | None = None,
    augment: tuple[str, ...] | list[str] = (),
    cache: bool | str = "auto",
    block_size: int = 1024,
    shuffle_buffer: int = 4096,
    repeat: bool = False,
    drop_remainder: bool = False,
    prefetch: bool = True,
    shard: tuple[int, int] | None = None,
    autotune: bool | str = "auto",
    readers: int | str = "auto",
) -> tf.data.Dataset:
    """Batches of (images, labels) streamed from one split.

    Args:
        split: a `Split` from `pcam.data.h5read.open_split`, or a split name
            ("train", "valid", "test") opened from `data_dir`.
        data_dir: data folder when `split` is a name; default `pcam.core.paths.data_dir()`.
        batch_size: patches per batch, >= 1.
        shuffle: False keeps the file order (evaluation aligns predictions
            with labels on it). True reads blocks in an order drawn from
            `seed`, new each epoch, then mixes patches in a shuffle buffer.
        seed: integer seed; the same seed gives the same order epoch by epoch.
        max_samples: use only the first `max_samples` patches of the file
            (None: all). Larger than the file means all.
        augment: names for `pcam.data.augment.build_augmenter`, applied to whole
            batches; empty for none.
        cache: True keeps the patches read in memory for later epochs, False
            never does, "auto" caches when the used part is under 2 GiB.
            Caching does not change the order.
        block_size: patches per contiguous read, >= 1; rounded down to a
            multiple of the file's chunk rows (at least one chunk).
        shuffle_buffer: patches in the shuffle buffer, >= 1 (used when shuffle).
        repeat: repeat forever (each pass reshuffled); for `steps_per_epoch`.
        drop_remainder: drop a last batch smaller than `batch_size`.
        prefetch: prefetch batches (`tf.data.AUTOTUNE`).
        shard: `(num_shards, index)`: keep every `num_shards`-th block starting
            at block `index`, so the shards are disjoint and cover the data.
        autotune: tf.data's autotuner on (True) or off (False); "auto": on with
            `AUTOTUNE_MIN_CORES` usable cores or more (off it leaves each
            parallel step one thread per core and costs no background work).
        readers: threads reading blocks, >= 1; "auto": one per core (2 to 8)
            for gzip-chunked files, whose chunks inflate in parallel, and 2 for
            uncompressed ones (the official layout), read under h5py's lock.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: uint8 `[B, 96, 96, 3]` and
        float32 `[B, 1]`. Without `repeat` its cardinality is the number of batches.
    """
    _check_args(batch_size, block_size, shuffle_buffer, max_samples, cache, shard, readers)
    if isinstance(split, str):
        split = open_split(data_dir, split)
    stop = split.length if max_samples is None else min(max_samples, split.length)
    source = BlockReader(split, stop, block_size)
    blocks = source.block_ids(shard)
    used = int(sum(source.bounds(i)[1] - source.bounds(i)[0] for i in blocks))
    if cache == "auto":
        cache = used * _PATCH_BYTES < CACHE_LIMIT_BYTES
    source.cache = bool(cache)

    ds = tf.data.Dataset.from_tensor_slices(np.asarray(blocks, dtype=np.int64))
    if shuffle:
        ds = ds.shuffle(max(1, len(blocks)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    # Parallel reads overlap zlib inflation (GIL released); order stays fixed.
    if readers == "auto":
        readers = source.readers
    ds = ds.map(source.tf_read, num_parallel_calls=readers, deterministic=True)
    ds = ds.unbatch()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if not repeat:
        whole, rest = divmod(used, batch_size)
        batches = whole + (1 if rest and not drop_remainder else 0)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    if augment:
        from pcam.data.augment import build_augmenter  # lazy: optional at import time

        augmenter = build_augmenter(tuple(augment), seed)
        if augmenter is not None:
            # per-batch seeds, new each epoch: reproducible under a parallel map
            seeds = tf.data.Dataset.random(seed, rerandomize_each_iteration=True).batch(2)
            ds = tf.data.Dataset.zip(ds, seeds).map(
                lambda xy, s: (augmenter(xy[0], seed=s), xy[1]),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    if autotune == "auto":
        autotune = usable_cores() >= AUTOTUNE_MIN_CORES
    options = tf.data.Options()
    options.autotune.enabled = bool(autotune)
    return ds.with_options(options)


def _check_args(batch_size, block_size, shuffle_buffer, max_samples, cache, shard,
                readers) -> None:
    for name, value in (
        ("readers", 1 if readers == "auto" else readers),
        ("batch_size", batch_size),
        ("block_size", block_size),
        ("shuffle_buffer", shuffle_buffer),
        ("max_samples", 1 if max_samples is None else max_samples),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if cache not in ("auto", True, False):
        raise ValueError(f'cache must be True, False or "auto", got {cache!r}')
    if shard is not None:
        ok = (
            isinstance(shard, tuple | list)
            and len(shard) == 2
            and all(isinstance(v, int) for v in shard)
            and shard[0] >= 1
            and 0 <= shard[1] < shard[0]
        )
        if not ok:
            raise ValueError(f"shard must be (num_shards, index) with 0 <= index < num_shards, "
                             f"got {shard!r}")
