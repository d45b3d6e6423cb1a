"""Atomic writer of PCam-layout HDF5 files (used by `synthetic` and `import-images`).

Each file goes through `pcam.fileio.atomic_path` (a temporary name in the
target folder, fsync, rename), so a crash never leaves a half-written file
under a real PCam name.
"""

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
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
# download) are never overwritten or removed, and files with it only with
# `overwrite` (see `plan_changes`).
WRITER_ATTR = "pcam_transfer_writer"


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
    folder = make_folder(data_dir)
    x_path, y_path = folder / spec.x.name, folder / spec.y.name
    for path in (x_path, y_path):
        _remove_stale_temps(path)
    # The split's meta file (slide ids) describes the old patches: dropped first, so
    # that a crash never pairs new patches with old slides; `synthetic` writes a new one.
    (folder / spec.meta.name).unlink(missing_ok=True)
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
    folder = make_folder(data_dir)
    return write_text(folder / DATASET_INFO, json.dumps(info, indent=2) + "\n")


def _written_here(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return WRITER_ATTR in f.attrs
    except OSError:
        return False


@dataclass(frozen=True)
class FolderChanges:
    """The existing files a writer replaces or removes; from `plan_changes`."""

    folder: Path
    replaced: dict[str, list[Path]]  # split -> its existing files, rewritten
    removed: list[Path]
    kind: str  # what the folder held, e.g. "synthetic patches, seed 0"

    def announce(self, split: str) -> None:
        """Print one line per file of `split` that was replaced (call after writing it).

        A meta file the writer did not write again (import-images) was removed.
        """
        for path in self.replaced.get(split, []):
            print(f"{'replaced' if path.exists() else 'removed'} {path} ({self.kind})",
                  flush=True)

    def remove(self) -> None:
        """Delete the files of the splits no longer written, one printed line each."""
        for path in self.removed:
            path.unlink(missing_ok=True)
            print(f"removed {path} ({self.kind})", flush=True)
        info = self.folder / DATASET_INFO
        if (self.replaced or self.removed) and info.exists():
            print(f"replaced {info} (its description of the files above)", flush=True)


def plan_changes(data_dir, write: Iterable[str], remove: Iterable[str], *, overwrite: bool,
                 command: str) -> FolderChanges:
    """Check, before anything is written, what writing and removing splits would destroy.

    Args:
        data_dir: the target folder (it need not exist).
        write: the splits about to be written.
        remove: the splits about to be deleted (they would not fit the new ones).
        overwrite: allow replacing and deleting files this package wrote.
        command: the command's name, for the message ("synthetic", "import-images").

    Returns:
        A `FolderChanges`: call `announce(split)` after writing each split and
        `remove()` once all are written.

    Raises:
        PCamError: the folder holds a PCam file this package did not write (the
            official download or a damaged file: never replaced, even with
            `overwrite`), or `overwrite` is False and existing files would be
            replaced or deleted.
    """
    folder = _resolve_data_dir(data_dir)
    for split in SPLITS:
        for file in (SPEC[split].x, SPEC[split].y):
            path = folder / file.name
            if path.exists() and not _written_here(path):
                raise PCamError(
                    f"{path} was not written by pcam (the official download or a damaged "
                    "file); refusing to overwrite it, even with --overwrite: choose another "
                    "--data-dir, or delete it yourself"
                )
    replaced = {s: _existing(folder, s) for s in write}
    replaced = {s: paths for s, paths in replaced.items() if paths}
    gone = [s for s in remove if _existing(folder, s)]
    kind = _kind(folder)
    if (replaced or gone) and not overwrite:
        if replaced and gone:
            what = f"{_names(replaced)} would be replaced and {_names(gone)} deleted"
        else:
            what = f"{_names(replaced or gone)} would be {'replaced' if replaced else 'deleted'}"
        raise PCamError(
            f"{folder} already holds {kind}: {what} by `{command}`; rerun with "
            "--overwrite to do that, or choose another --data-dir"
        )
    removed = [path for s in gone for path in _existing(folder, s)]
    return FolderChanges(folder, replaced, removed, kind)


def _existing(folder: Path, split: str) -> list[Path]:
    paths = (folder / SPEC[split].x.name, folder / SPEC[split].y.name,
             folder / SPEC[split].meta.name)
    return [path for path in paths if path.exists()]


def _names(splits) -> str:
    splits = list(splits)
    return ", ".join(splits[:-1]) + " and " + splits[-1] if len(splits) > 1 else splits[0]


def _kind(folder: Path) -> str:
    """What the folder's files are, from its dataset.json, for messages."""
    try:
        info = json.loads((folder / DATASET_INFO).read_text())
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict):
        return "PCam files written by pcam"
    if info.get("source") == "synthetic":
        return f"synthetic patches, seed {info.get('seed', '?')}"
    if info.get("source") == "images":
        return f"imported patches, {info.get('label') or info.get('folder') or 'images'}"
    return "PCam files written by pcam"
