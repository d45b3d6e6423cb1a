"""Atomic writer of PCam-layout HDF5 files (used by `synthetic` and `import-images`).

Each file goes through `pcam.fileio.atomic_path` (a temporary name in the
target folder, fsync, rename), so a crash never leaves a half-written file
under a real PCam name.
"""

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from pcam.data.spec import DATASET_INFO, PATCH_SHAPE, SPEC, SPLITS, check_split_name
from pcam.errors import PCamError
from pcam.fileio import atomic_path, stale_temps, write_text
from pcam.paths import data_dir as _resolve_data_dir

# 32 patches = 864 KiB per chunk: under h5py's default 1 MiB chunk cache, so even
# a per-sample reader decompresses each chunk once, while block readers (1024
# patches) read 32 whole chunks; gzip gains little beyond ~100 KiB chunks.
CHUNK_PATCHES = 32
# Level 4: within a few percent of level 9's size at about 3x its speed.
GZIP_LEVEL = 4
# An attribute on every file written here; files without it (the official
# download) are never overwritten or removed.
WRITER_ATTR = "pcam_transfer_writer"


def _remove_stale_temps(path: Path) -> None:
    # Left behind only by a killed process; safe to drop before a new write.
    for stale in stale_temps(path):
        stale.unlink(missing_ok=True)


def _as_blocks(images) -> Iterable[np.ndarray]:
    return [images] if isinstance(images, np.ndarray) else images


def write_split(data_dir, split: str, images, labels) -> tuple[Path, Path]:
    """Write one split as PCam-layout `x` and `y` HDF5 files.

    Args:
        data_dir: target folder (created if needed); `None` means the default
            data folder.
        split: "train", "valid" or "test"; fixes the file names.
        images: uint8 array (N, 96, 96, 3), or an iterable of such blocks whose
            lengths add up to N (streamed: the whole split never sits in memory).
        labels: N labels in {0, 1}; stored as (N, 1, 1, 1) uint8 like PCam.

    Returns:
        `(x_path, y_path)`.
    """
    spec = SPEC[check_split_name(split)]
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        raise ValueError(f"no labels for split {split!r}: nothing to write")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got values {np.unique(labels)[:10]}")
    n = labels.size
    folder = _resolve_data_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    x_path, y_path = folder / spec.x.name, folder / spec.y.name
    for path in (x_path, y_path):
        _remove_stale_temps(path)
    # y is renamed first (inner block exits first): a crash between the two renames
    # leaves x and y of different lengths at worst, which opening the split reports.
    with contextlib.ExitStack() as stack:
        x_temp = stack.enter_context(atomic_path(x_path))
        y_temp = stack.enter_context(atomic_path(y_path))
        with h5py.File(x_temp, "w") as f:
            f.attrs[WRITER_ATTR] = "pcam.data.h5write"
            x = f.create_dataset(
                "x", shape=(n, *PATCH_SHAPE), dtype=np.uint8,
                chunks=(min(CHUNK_PATCHES, n), *PATCH_SHAPE),
                compression="gzip", compression_opts=GZIP_LEVEL,
            )
            done = 0
            for block in _as_blocks(images):
                block = np.asarray(block)
                if block.dtype != np.uint8 or block.shape[1:] != PATCH_SHAPE:
                    raise ValueError(
                        "image blocks must be uint8 (B, 96, 96, 3), "
                        f"got {block.dtype} {block.shape}"
                    )
                if done + len(block) > n:
                    raise ValueError(f"more images than the {n} labels for split {split!r}")
                x[done:done + len(block)] = block
                done += len(block)
            if done != n:
                raise ValueError(f"{done} images but {n} labels for split {split!r}")
        with h5py.File(y_temp, "w") as f:
            f.attrs[WRITER_ATTR] = "pcam.data.h5write"
            f.create_dataset(
                "y", data=labels.astype(np.uint8).reshape(n, 1, 1, 1),
                compression="gzip", compression_opts=GZIP_LEVEL,
            )
    return x_path, y_path


def write_dataset_info(data_dir, info: dict) -> Path:
    """Write `info` as `dataset.json` in `data_dir`, atomically; returns its path."""
    folder = _resolve_data_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return write_text(folder / DATASET_INFO, json.dumps(info, indent=2) + "\n")


def _written_here(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return WRITER_ATTR in f.attrs
    except OSError:
        return False


def check_overwrite(data_dir) -> None:
    """Raise `PCamError` if `data_dir` holds PCam files this package did not write.

    Keeps `synthetic` and `import-images` from replacing a real 8 GB download.
    """
    folder = _resolve_data_dir(data_dir)
    for split in SPLITS:
        for file in (SPEC[split].x, SPEC[split].y):
            path = folder / file.name
            if path.exists() and not _written_here(path):
                raise PCamError(
                    f"{path} was not written by pcam (the official download or a damaged "
                    "file); refusing to overwrite it: choose another --data-dir, or delete it"
                )


def remove_splits(data_dir, splits: Iterable[str]) -> None:
    """Delete the files of `splits` written by this package (others are kept)."""
    folder = _resolve_data_dir(data_dir)
    for split in splits:
        for file in (SPEC[split].x, SPEC[split].y):
            path = folder / file.name
            if path.exists() and _written_here(path):
                path.unlink()
