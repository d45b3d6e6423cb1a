"""Contiguous block reads from a PCam image file, for `pcam.data.pipeline`.

The used range `[0, stop)` of the file is cut into blocks of whole HDF5
chunks; `BlockReader.read(i)` returns block `i`'s images and float32 labels,
optionally keeping it in memory for later epochs.
"""

import threading
import zlib

import h5py
import numpy as np
import tensorflow as tf

from pcam.core import compat
from pcam.core.environment import usable_cores
from pcam.data.h5read import Split, read_block, read_labels
from pcam.data.spec import PATCH_SHAPE, SPEC

PARALLEL_READERS = max(2, min(8, usable_cores()))


def gzip_only(x: h5py.Dataset) -> bool:
    """Whether gzip is the only filter of `x`, so each raw chunk is one zlib stream.

    Args:
        x: an HDF5 dataset (chunked or not).

    Returns:
        True for gzip alone; False with no filter, another compressor, or gzip
        together with any other filter (shuffle, fletcher32, scaleoffset, ...).
    """
    # `compression` names one compressor and no property covers nbit or plugin
    # filters, so gzip next to lzf, nbit or a plugin still reads "gzip";
    # counting the filters rules those out.
    return x.compression == "gzip" and x.id.get_create_plist().get_nfilters() == 1


class BlockReader:
    """Reads block `i` of the used range; one h5py handle, opened on first use.

    Kept alive by the dataset's `numpy_function`; h5py's global lock makes the
    handle safe to use from tf.data's threads. For gzip-only chunked files
    (PCam's layout) the compressed chunks are read under that lock but
    inflated with `zlib`, which releases the GIL, so blocks decompress in
    parallel; other layouts use a plain h5py read.
    """

    def __init__(self, split: Split, stop: int, block_size: int):
        self.split = split
        self.stop = stop
        self.cache = False
        self._labels = read_labels(split)[:stop].astype(np.float32).reshape(-1, 1)
        self._lock = threading.Lock()
        self._file = None
        self._x = None
        self._memory = None
        with h5py.File(split.x_path, "r") as f:
            x = f[SPEC[split.name].x.key]
            chunks = x.chunks
            whole_patches = bool(chunks) and tuple(chunks[1:]) == PATCH_SHAPE
            self._direct = whole_patches and gzip_only(x)
        self.rows = chunks[0] if whole_patches else 1
        # Threads that read blocks: gzip chunks inflate in parallel (zlib releases the
        # GIL); other layouts read under h5py's global lock, so more threads only
        # hold more blocks in memory: one reads ahead while the last is consumed.
        self.readers = PARALLEL_READERS if self._direct else 2
        # h5py <= 3.14 does not lock read_direct_chunk itself (see pcam.core.compat).
        self._chunk_lock = compat.h5py_chunk_lock() if self._direct else None
        # Whole chunks per block: each gzip chunk is inflated once per read.
        self.block_size = max(self.rows, block_size // self.rows * self.rows)
        self.num_blocks = -(-stop // self.block_size)
        self._filled = np.zeros(self.num_blocks, dtype=bool)

    def bounds(self, i: int) -> tuple[int, int]:
        start = i * self.block_size
        return start, min(start + self.block_size, self.stop)

    def block_ids(self, shard: tuple[int, int] | None) -> list[int]:
        ids = range(self.num_blocks)
        return list(ids if shard is None else ids[shard[1] :: shard[0]])

    def read(self, i) -> tuple[np.ndarray, np.ndarray]:
        i = int(i)
        start, stop = self.bounds(i)
        if self.cache and self._filled[i]:
            images = self._memory[start:stop]
        else:
            x = self._dataset()
            if self._direct:
                images = self._inflate(x, start, stop)
            else:
                images = read_block(x, self.split.x_path, start, stop)
            if self.cache:
                self._memory[start:stop] = images
                self._filled[i] = True
        return images, self._labels[start:stop]

    def _inflate(self, x: h5py.Dataset, start: int, stop: int) -> np.ndarray:
        images = np.empty((stop - start, *PATCH_SHAPE), dtype=np.uint8)
        for row in range(start, stop, self.rows):
            try:
                with self._chunk_lock:
                    mask, raw = x.id.read_direct_chunk((row, 0, 0, 0))
                data = raw if mask & 1 else zlib.decompress(raw)  # bit 0: gzip skipped
                chunk = np.frombuffer(data, np.uint8).reshape(self.rows, *PATCH_SHAPE)
            except (OSError, KeyError, ValueError, zlib.error):
                # Unallocated or damaged chunk: h5py fills or reports it clearly.
                chunk = read_block(x, self.split.x_path, row, min(row + self.rows, x.shape[0]))
            n = min(self.rows, stop - row)
            images[row - start : row - start + n] = chunk[:n]
        return images

    def tf_read(self, i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = tf.numpy_function(self.read, [i], (tf.uint8, tf.float32))
        images.set_shape((None, *PATCH_SHAPE))
        labels.set_shape((None, 1))
        return images, labels

    def _dataset(self) -> h5py.Dataset:
        with self._lock:
            if self._x is None:
                # Closed by h5py when the dataset (and this object) is freed.
                self._file = h5py.File(self.split.x_path, "r")
                self._x = self._file[SPEC[self.split.name].x.key]
                if self.cache:
                    # np.empty commits no memory until blocks are written.
                    self._memory = np.empty((self.stop, *PATCH_SHAPE), dtype=np.uint8)
            return self._x
