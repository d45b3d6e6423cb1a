"""Tiny PCam-layout files for the data-layer tests, written with h5py directly."""

from pathlib import Path

import h5py
import numpy as np

from pcam.data.spec import SPEC


def write_pcam(folder: Path, split: str = "valid", n: int = 100, *, chunk: int = 8,
               labels: np.ndarray | None = None) -> tuple[Path, Path]:
    """Write `n` patches whose pixel [0, 0, 0] and [0, 0, 1] encode the index.

    Returns (x_path, y_path). Labels default to index % 3 == 0.
    """
    folder.mkdir(parents=True, exist_ok=True)
    index = np.arange(n)
    x = np.random.default_rng(n).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    x[:, 0, 0, 0] = index % 256
    x[:, 0, 0, 1] = index // 256
    if labels is None:
        labels = (index % 3 == 0).astype(np.uint8)
    x_path, y_path = folder / SPEC[split].x.name, folder / SPEC[split].y.name
    with h5py.File(x_path, "w") as f:
        f.create_dataset("x", data=x, chunks=(min(chunk, max(n, 1)), 96, 96, 3), compression="gzip")
    with h5py.File(y_path, "w") as f:
        f.create_dataset("y", data=np.asarray(labels).reshape(-1, 1, 1, 1))
    return x_path, y_path


def patch_index(images: np.ndarray) -> np.ndarray:
    """The index each patch written by `write_pcam` carries."""
    images = np.asarray(images).astype(np.int64)
    return images[:, 0, 0, 0] + 256 * images[:, 0, 0, 1]
