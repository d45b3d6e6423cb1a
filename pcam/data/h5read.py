"""Open PCam-layout HDF5 files and check them before anything reads them.

A split is two files in the data folder, named as in `pcam.data.spec.SPEC`: `x`
(N, 96, 96, 3) uint8 and `y` (N, 1, 1, 1) or (N,) with values in {0, 1}.
`open_split` checks all of that from metadata plus the (small) labels, and
refuses a split that cannot train or score (no patches; train or valid with
one class only), raising one `PCamError` that names the split and file and
says what to do. It never reads the images, so opening the 7 GB train file is
instant; `pcam check` reads them all once (`pcam.data.check`). Every entry
point first finishes or drops what an interrupted write left in the folder
(`pcam.data.staging`), so no reader sees half of a write.

Reference: the same checks as kaiko-ai/eva's `PatchCamelyon` loader.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pcam.core.errors import PCamError
from pcam.core.paths import data_dir as _resolve_data_dir
from pcam.data.info import OFFICIAL_INFO, read_dataset_info  # noqa: F401  (read from here too)
from pcam.data.names import not_a_file, shown
from pcam.data.spec import PATCH_SHAPE, SPEC, SPLITS, check_split_name
from pcam.data.staging import finish_interrupted_writes

# Splits that need both classes: train to learn, valid for its AUC and threshold.
# A one-class test still scores (accuracy; AUC is reported as undefined).
BOTH_CLASSES = ("train", "valid")
REDO = "delete it and download, generate or import it again"
_GET_DATA = (
    "run `python -m pcam download --data-dir {dir}` for the real data, "
    "or `python -m pcam synthetic --data-dir {dir}` for a synthetic stand-in"
)


@dataclass(frozen=True)
class Split:
    """A checked split: its name, the two files and the number of patches."""

    name: str
    x_path: Path
    y_path: Path
    length: int


def open_split(data_dir: str | os.PathLike | None = None, split: str = "train") -> Split:
    """Find and check one split of a PCam-layout data folder.

    Args:
        data_dir: the data folder; default `pcam.core.paths.data_dir()`
            (`$PCAM_DATA_DIR` or `data/`).
        split: one of "train", "valid", "test".

    Returns:
        A `Split`. Its labels have been read and checked; its images have not
        been read (only the dataset's shape and dtype).

    Raises:
        PCamError: a file is missing, unreadable (truncated or not HDF5), has
            no dataset under the expected key, the wrong shape or dtype, labels
            outside {0, 1} or a label chunk that does not decompress; x and y
            disagree on the number of patches; the split has no patches; or
            train or valid has one class only.
    """
    check_split_name(split)
    folder = _resolve_data_dir(data_dir)
    finish_interrupted_writes(folder)
    x_path = folder / SPEC[split].x.name
    y_path = folder / SPEC[split].y.name
    for path in (x_path, y_path):
        if what := not_a_file(path):
            raise PCamError(f"split {split!r}: {shown(path)} is {what}, not an HDF5 file; "
                            "move it away and download or generate the split again")
    missing = [p for p in (x_path, y_path) if not p.is_file()]
    if missing:
        names = " and ".join(p.name for p in missing)
        raise PCamError(
            f"split {split!r}: {names} not found in {folder}; "
            + _GET_DATA.format(dir=folder)
        )
    n_x = _check_images(x_path, SPEC[split].x.key)
    labels = _read_label_dataset(y_path, SPEC[split].y.key)
    if len(labels) != n_x:
        raise PCamError(
            f"{x_path} holds {n_x} patches but {y_path} holds {len(labels)} labels: "
            "the two files come from different splits or one is incomplete; "
            "replace both (download or synthetic again)"
        )
    if n_x == 0:
        raise PCamError(
            f"split {split!r}: {x_path} and {y_path.name} hold 0 patches, nothing to train "
            "or score on; write the split again (download, synthetic or import-images)"
        )
    check_classes(split, labels, y_path)
    return Split(split, x_path, y_path, n_x)


def check_classes(split: str, labels: np.ndarray, y_path: Path, setting: str | None = None):
    """Refuse a train or valid split whose `labels` are all of one class.

    Args:
        split: the split's name; "test" always passes (it scores without AUC).
        labels: the labels used, e.g. the first `max_samples` of the file.
        y_path: the label file, for the message.
        setting: the cap that chose `labels`, e.g. "max_samples=8"; None when
            they are the whole file.

    Raises:
        PCamError: naming the split, the file, the class and what to change.
    """
    if split not in BOTH_CLASSES or labels.size == 0 or labels.min() != labels.max():
        return
    need = "learn from" if split == "train" else "measure AUC and choose a threshold"
    if setting is None:
        raise PCamError(
            f"split {split!r}: all {labels.size} labels in {y_path} are {labels[0]}; {split} "
            f"needs patches of both classes (0 and 1) to {need}: add the missing class or "
            "import a balanced split"
        )
    raise PCamError(
        f"split {split!r}: {setting} keeps the first {labels.size} patches of {y_path}, all "
        f"labelled {labels[0]}; {split} needs both classes to {need}: raise "
        f"{setting.split('=')[0]} or leave it out"
    )


def available_splits(data_dir: str | os.PathLike | None = None) -> list[str]:
    """Splits with at least one of their two files in `data_dir`, in SPLITS order.

    Nothing is checked here; `open_split` says what is wrong with a split.
    """
    folder = _resolve_data_dir(data_dir)
    finish_interrupted_writes(folder)
    return [
        name
        for name in SPLITS
        if any(os.path.lexists(folder / file.name) for file in (SPEC[name].x, SPEC[name].y))
    ]


def read_labels(split: Split) -> np.ndarray:
    """All labels of `split` as a uint8 array of shape (N,)."""
    return _read_label_dataset(split.y_path, SPEC[split.name].y.key)


def read_slides(split: Split) -> np.ndarray | None:
    """The slide id of each patch of `split` (str, shape (N,)), or None without a meta file.

    Read from `camelyonpatch_level_2_split_<split>_meta.csv` beside the `.h5`
    files (`pcam.data.meta`); a malformed one (wrong columns or row count)
    raises a `PCamError` naming it.
    """
    from pcam.data.meta import meta_path
    from pcam.data.meta import read_slides as read_meta_slides

    path = meta_path(split.x_path.parent, split.name)
    return read_meta_slides(path, split.length) if os.path.lexists(path) else None


def read_images(split: Split, start: int, stop: int) -> np.ndarray:
    """Patches `start` to `stop` (exclusive) as uint8 (stop - start, 96, 96, 3).

    Opens the file for each call; `pcam.data.pipeline` keeps one handle per
    dataset instead.
    """
    if not 0 <= start <= stop <= split.length:
        raise ValueError(
            f"need 0 <= start <= stop <= {split.length}, got start={start}, stop={stop}"
        )
    with _open_h5(split.x_path) as f:
        return read_block(f[SPEC[split.name].x.key], split.x_path, start, stop)


def read_block(dataset: h5py.Dataset, path: Path, start: int, stop: int,
               what: str = "patches") -> np.ndarray:
    """`dataset[start:stop]`, with a read error (corrupt chunk) as a `PCamError`.

    The message names the first unreadable chunk's rows, e.g. "cannot read
    patches 32:64 of PATH".
    """
    try:
        return dataset[start:stop]
    except OSError as error:
        start, stop = _first_bad_rows(dataset, start, stop)
        raise PCamError(
            f"cannot read {what} {start}:{stop} of {path} ({error}): the file is corrupt; {REDO}"
        ) from None


def storage_layout(path: str | os.PathLike, key: str = "x") -> str:
    """How dataset `key` of an HDF5 file is stored, in words (`pcam check` shows it).

    For example "contiguous, uncompressed" (the official PCam files, gunzipped)
    or "chunks of 32 patches, gzip level 4" (as `pcam synthetic` writes by default).
    """
    with h5py.File(path, "r") as f:
        x = f[key]
        chunks, compression, shape = x.chunks, x.compression, x.shape
        opts = x.compression_opts
        others = x.id.get_create_plist().get_nfilters() - (compression is not None)
    if chunks is None:
        stored = "contiguous"
    elif tuple(chunks[1:]) == tuple(shape[1:]):
        stored = f"chunks of {chunks[0]} patch{'es' if chunks[0] != 1 else ''}"
    else:
        stored = f"chunks {tuple(chunks)}"
    packed = "uncompressed" if compression is None else (
        f"{compression} level {opts}" if compression == "gzip" else compression)
    extra = f" + {others} other filter{'s' if others > 1 else ''}" if others > 0 else ""
    return f"{stored}, {packed}{extra}"


def _open_h5(path: Path) -> h5py.File:
    if not os.access(path, os.R_OK):
        raise PCamError(f"cannot read {path}: permission denied; fix its permissions (chmod +r)")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        # h5py reports truncation as "truncated file: eof = ..." and other
        # damage as "file signature not found"; both mean: replace the file.
        reason = str(error).split("(")[-1].rstrip(")") or str(error)
        raise PCamError(
            f"{path} is not a readable HDF5 file ({reason}): it is truncated or "
            "corrupt, e.g. an interrupted download; delete it and download or "
            "generate it again"
        ) from None


def _dataset(f: h5py.File, path: Path, key: str) -> h5py.Dataset:
    item = f.get(key)
    if not isinstance(item, h5py.Dataset):
        found = ", ".join(sorted(f.keys())) or "nothing"
        raise PCamError(
            f"{path} has no dataset {key!r} (found: {found}); PCam files keep "
            "images under 'x' and labels under 'y': check the file is the right "
            "one or rewrite it with `python -m pcam import-images`"
        )
    return item


def _check_images(path: Path, key: str) -> int:
    with _open_h5(path) as f:
        x = _dataset(f, path, key)
        if x.ndim != 4 or x.shape[1:] != PATCH_SHAPE:
            raise PCamError(
                f"{path}: dataset {key!r} has shape {x.shape}, expected "
                f"(N, {', '.join(map(str, PATCH_SHAPE))}): the file is not a "
                "PCam image file; convert images with `python -m pcam import-images`"
            )
        if x.dtype != np.uint8:
            raise PCamError(
                f"{path}: dataset {key!r} has dtype {x.dtype}, expected uint8 "
                "(0-255 RGB); rewrite it as uint8, e.g. with `python -m pcam import-images`"
            )
        return int(x.shape[0])


def _read_label_dataset(path: Path, key: str) -> np.ndarray:
    with _open_h5(path) as f:
        y = _dataset(f, path, key)
        if y.ndim == 0 or y.shape[1:] not in ((), (1, 1, 1)):
            raise PCamError(
                f"{path}: dataset {key!r} has shape {y.shape}, expected (N, 1, 1, 1) "
                "or (N,): one label per patch"
            )
        if y.dtype.kind not in "biu":
            raise PCamError(
                f"{path}: dataset {key!r} has dtype {y.dtype}, expected integer "
                "labels 0 or 1 (uint8)"
            )
        labels = read_block(y, path, 0, y.shape[0], "labels").reshape(-1)
    bad = labels[(labels != 0) & (labels != 1)]
    if bad.size:
        raise PCamError(
            f"{path}: {bad.size} labels are not 0 or 1 (e.g. {bad[0]}); "
            "PCam labels are 1 = tumour in the central 32x32, else 0; fix the labels"
        )
    return labels.astype(np.uint8)


def _first_bad_rows(dataset: h5py.Dataset, start: int, stop: int) -> tuple[int, int]:
    """The rows of the first chunk in `[start, stop)` that fail to read, else the range."""
    rows = dataset.chunks[0] if dataset.chunks else max(1, stop - start)
    for first in range(start - start % rows, stop, rows):
        lo, hi = max(first, start), min(first + rows, stop)
        try:
            dataset[lo:hi]
        except OSError:
            return lo, hi
    return start, stop
