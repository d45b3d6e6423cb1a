"""Writer of PCam-layout HDF5 files (used by `synthetic` and `import-images`).

Files are written into a staging folder and swapped in together
(`pcam.data.staging`): one split by `write_split`, several splits and
`dataset.json` by a writer that calls `write_split_files` inside
`pcam.data.changes.FolderChanges.write`. Each file also goes through
`pcam.core.fileio.atomic_path` (fsync, rename), so a staged file is complete
before the commit names it. Files carry the id of the write that made them
(`WRITE_ID_ATTR`), which `dataset.json` repeats per split (`write_ids`), so
`pcam check` can tell a folder that mixes two writes.
"""

import json
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from pcam.core.errors import PCamError
from pcam.core.fileio import atomic_path, stale_temps, write_text
from pcam.core.paths import data_dir as _resolve_data_dir
from pcam.data.spec import DATASET_INFO, LAYOUTS, PATCH_SHAPE, SPEC, check_split_name
from pcam.data.staging import staged_write

# 32 patches = 864 KiB per chunk: under h5py's default 1 MiB chunk cache, so even
# a per-sample reader decompresses each chunk once, while block readers (1024
# patches) read 32 whole chunks; gzip gains little beyond ~100 KiB chunks.
CHUNK_PATCHES = 32
# Level 4: within a few percent of level 9's size at about 3x its speed.
GZIP_LEVEL = 4
# An attribute on every file written here; files without it (the official
# download) are never overwritten or removed, and files with it only with
# `overwrite` (see `pcam.data.changes.plan_changes`).
WRITER_ATTR = "pcam_transfer_writer"
# The id of the staged write that made the file (see the module docstring).
WRITE_ID_ATTR = "pcam_write_id"


def _remove_stale_temps(path: Path) -> None:
    # Left behind only by a killed process; safe to drop before a new write.
    for stale in stale_temps(path):
        stale.unlink(missing_ok=True)


def make_folder(data_dir) -> Path:
    """The data folder, created if needed; `PCamError` when it cannot be."""
    folder = _resolve_data_dir(data_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PCamError(f"cannot create the data folder {folder} ({error.strerror or error}); "
                        "choose another --data-dir or fix the permissions") from None
    return folder


def _as_blocks(images) -> Iterable[np.ndarray]:
    return [images] if isinstance(images, np.ndarray) else images


def write_split(data_dir, split: str, images, labels) -> tuple[Path, Path]:
    """Write one split as PCam-layout `x` and `y` HDF5 files: both or neither.

    The split's meta CSV (slide ids of the old patches) is deleted in the same
    step, so new patches never pair with old slides. To write several splits
    and `dataset.json` at once, call `write_split_files` inside
    `pcam.data.changes.FolderChanges.write`, as `pcam synthetic` does.

    Args:
        data_dir: target folder (created if needed); `None` means the default
            data folder.
        split: "train", "valid" or "test"; fixes the file names.
        images: uint8 array (N, 96, 96, 3), or an iterable of such blocks whose
            lengths add up to N (streamed: the whole split never sits in memory).
        labels: N labels in {0, 1}; stored as (N, 1, 1, 1) uint8 like PCam.

    Returns:
        `(x_path, y_path)`.

    Raises:
        ValueError: bad images or labels; PCamError: a file cannot be written
            (naming it). Either way the folder is left as it was.
    """
    spec = SPEC[check_split_name(split)]
    labels = _checked_labels(labels, split)
    folder = make_folder(data_dir)
    names = [spec.x.name, spec.y.name, spec.meta.name]
    for name in names:
        _remove_stale_temps(folder / name)
    with staged_write(folder, delete=names) as stage:
        write_split_files(stage.path, split, images, labels, write_id=stage.write_id)
    return folder / spec.x.name, folder / spec.y.name


def write_split_files(folder, split: str, images, labels, *,
                      write_id: str | None = None, layout: str = "gzip") -> tuple[Path, Path]:
    """Write a split's `x` and `y` files into `folder` (a staging folder), x first.

    Args:
        folder: an existing folder, normally a `Stage.path`.
        split, images, labels: as for `write_split`.
        write_id: stored as the files' `WRITE_ID_ATTR` (the `Stage.write_id`).
        layout: one of `pcam.data.spec.LAYOUTS`.

    Returns:
        `(x_path, y_path)` in `folder`.

    Raises:
        ValueError: bad images or labels; PCamError: naming the file that could
            not be written (each file is written and closed before the next starts).
    """
    spec = SPEC[check_split_name(split)]
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    labels = _checked_labels(labels, split)
    n = labels.size
    folder = Path(folder)
    x_path, y_path = folder / spec.x.name, folder / spec.y.name
    with atomic_path(x_path) as temp, h5py.File(temp, "w") as f:
        _tag(f, write_id)
        x = f.create_dataset("x", shape=(n, *PATCH_SHAPE), dtype=np.uint8,
                             **_storage(layout, (min(CHUNK_PATCHES, n), *PATCH_SHAPE)))
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
    with atomic_path(y_path) as temp, h5py.File(temp, "w") as f:
        _tag(f, write_id)
        f.create_dataset("y", data=labels.astype(np.uint8).reshape(n, 1, 1, 1),
                         **_storage(layout, None))
    return x_path, y_path


def _storage(layout: str, chunks) -> dict:
    """h5py `create_dataset` storage arguments for `layout` (chunks: gzip's, or h5py's own)."""
    if layout == "official":
        return {}  # contiguous, uncompressed: h5py's default without compression
    return {"chunks": chunks or True, "compression": "gzip", "compression_opts": GZIP_LEVEL}


def _checked_labels(labels, split: str) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        raise ValueError(f"no labels for split {split!r}: nothing to write")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got values {np.unique(labels)[:10]}")
    return labels


def _tag(f: h5py.File, write_id: str | None) -> None:
    f.attrs[WRITER_ATTR] = "pcam.data.h5write"
    if write_id is not None:
        f.attrs[WRITE_ID_ATTR] = write_id


def write_id_of(path: Path) -> str | None:
    """The `WRITE_ID_ATTR` of a PCam file, None when it has none or cannot be read."""
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get(WRITE_ID_ATTR)
    except OSError:
        return None
    return value.decode() if isinstance(value, bytes) else value


def write_dataset_info(data_dir, info: dict) -> Path:
    """Write `info` as `dataset.json` in `data_dir`, atomically; returns its path."""
    folder = make_folder(data_dir)
    return write_text(folder / DATASET_INFO, json.dumps(info, indent=2) + "\n")
