"""A user's own patches for `pcam predict`: found, checked and streamed in batches.

INPUT is one of:
  a folder   image files (.tif, .tiff, .png, .jpg, .jpeg), searched recursively
             and taken in sorted order (the Kaggle test layout, a flat folder of
             <id>.tif, is one). Labelled when it has `0/` and `1/` subfolders
             and every image lies in one of them (the folder name is the label).
  an x file  a PCam-layout HDF5 file, dataset `x` (N, 96, 96, 3) uint8 (gzip
             chunks or not). Labelled by the y file beside it, named as PCam
             names them (`..._x.h5` -> `..._y.h5`); PCam's meta CSV beside it
             gives the slide of each patch.
  an image   one image file.

`find_patches` lists and checks INPUT without decoding an image (hidden and
non-image files are skipped and said); `read_batches` then reads the patches in
order, decoding the next batches on threads while the caller scores the
current one, so only the batches in flight are in memory, however many files
there are. Each image is checked as it is read (`pcam.data.patch_image`).
"""

import os
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from pcam.core.environment import usable_cores
from pcam.core.errors import PCamError
from pcam.data.h5read import read_block
from pcam.data.meta import read_slides
from pcam.data.names import not_a_file, shown
from pcam.data.patch_image import read_patch_image
from pcam.data.spec import PATCH_SHAPE, SPEC

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
HDF5_SUFFIXES = (".h5", ".hdf5")
INPUTS = ("a folder of 96x96 RGB patch images (" + ", ".join(IMAGE_SUFFIXES) + "), a PCam x "
          "file (camelyonpatch_level_2_split_<split>_x.h5) or one image file")
_SHOWN = 5  # names listed in one line
_H5_CACHE = 64 * 1024**2  # chunk cache: a gzip chunk across two batches is inflated once


@dataclass
class UserPatches:
    """The patches INPUT holds, found and checked; `read_batches` reads them.

    Attributes:
        kind: "folder", "hdf5" or "image".
        path: INPUT as given.
        count: the number of patches, >= 1.
        files: the images' paths relative to INPUT (folder), in reading order;
            empty for the other kinds.
        labels: 0 or 1 per patch (uint8, shape (count,)) when INPUT has
            labels, else None.
        label_source: where the labels come from, in words; None without labels.
        slides: the slide of each patch (from PCam's meta CSV), else None.
        notes: lines for the user (what was skipped, labels not used and why).
    """

    kind: str
    path: Path
    count: int
    files: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None
    label_source: str | None = None
    slides: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def patch_id(self, i: int) -> str:
        """Patch `i`'s id: its path relative to INPUT without the suffix, its file's stem
        (one image), or its index (x file)."""
        if self.kind == "hdf5":
            return str(i)
        if self.kind == "image":
            return self.path.stem
        return self.files[i].rsplit(".", 1)[0]

    def source(self, i: int) -> str:
        """Where patch `i` comes from: its relative path, the file name, or `NAME:index`."""
        if self.kind == "hdf5":
            return f"{self.path.name}:{i}"
        return self.path.name if self.kind == "image" else self.files[i]


@dataclass
class PatchBatch:
    """Consecutive patches `start` to `start + len(images)` of a `UserPatches`.

    Attributes:
        start: the index of the first patch.
        images: uint8 (B, 96, 96, 3).
        converted: per patch, the mode its file was converted to RGB from
            ("RGBA", "P"), else None.
    """

    start: int
    images: np.ndarray
    converted: list[str | None]


def find_patches(path: str | os.PathLike) -> UserPatches:
    """List and check the patches of INPUT (see the module docstring); decodes no image.

    Raises:
        PCamError: naming INPUT or the file: INPUT does not exist or is no
            image, HDF5 file or folder; a folder without image files, or two
            files that would get the same id; an HDF5 file that is not a PCam
            x file, holds no patch, or whose y file or meta CSV does not fit it.
    """
    path = Path(path)
    what = not_a_file(path)
    if what is None and not path.exists():
        raise PCamError(f"INPUT {shown(path)} does not exist; give {INPUTS}")
    if path.is_dir():
        return _folder(path)
    if what is not None:
        raise PCamError(f"INPUT {shown(path)} is {what}; give {INPUTS}")
    suffix = path.suffix.lower()
    if suffix == ".gz":
        raise PCamError(f"{shown(path)} is compressed as a whole (the .gz download): unpack it "
                        f"first (`gunzip -k {shown(path)}`) and give the .h5 file")
    if suffix in IMAGE_SUFFIXES:
        _check_name(path.parent, path.name)
        return UserPatches("image", path, 1, files=[path.name])
    if suffix in HDF5_SUFFIXES or h5py.is_hdf5(path):
        _check_name(path.parent, path.name)
        return _x_file(path)
    raise PCamError(f"{shown(path)} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor an "
                    f"HDF5 file; give {INPUTS}")


def read_batches(patches: UserPatches, batch_size: int = 256, *, threads: int | None = None,
                 ahead: int = 2) -> Iterator[PatchBatch]:
    """The patches in order, `batch_size` at a time, read ahead on threads.

    Close the iterator (`contextlib.closing`) when leaving early: that stops
    the threads and closes the HDF5 file.

    Args:
        patches: from `find_patches`.
        batch_size: patches per batch, >= 1.
        threads: decoding threads; default the usable cores, at most 8.
        ahead: batches read at once, >= 1: while the caller uses one batch,
            the next `ahead` are decoded.

    Yields:
        `PatchBatch`es covering every patch once, in order.

    Raises:
        PCamError: the first patch that cannot be read or is not a 96x96 RGB
            patch (`pcam.data.patch_image.read_patch_image`), or an unreadable
            chunk of an x file; raised when its batch is reached.
    """
    for name, value, low in (("batch_size", batch_size, 1), ("ahead", ahead, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    threads = threads or max(1, min(8, usable_cores()))
    h5 = h5py.File(patches.path, "r", rdcc_nbytes=_H5_CACHE) if patches.kind == "hdf5" else None
    x = h5["x"] if h5 is not None else None
    pool = ThreadPoolExecutor(threads, thread_name_prefix="pcam-patches")
    pending: deque = deque()

    def submit(start: int) -> None:
        stop = min(start + batch_size, patches.count)
        if x is not None:  # h5py serialises reads itself: one task per batch
            pending.append((start, [pool.submit(read_block, x, patches.path, start, stop)]))
        else:
            root = patches.path if patches.kind == "folder" else patches.path.parent
            pending.append((start, [pool.submit(read_patch_image, root / patches.files[i])
                                    for i in range(start, stop)]))

    starts = iter(range(0, patches.count, batch_size))
    try:
        for _, start in zip(range(ahead), starts, strict=False):
            submit(start)
        while pending:
            start, futures = pending.popleft()
            results = [future.result() for future in futures]
            if (following := next(starts, None)) is not None:
                submit(following)
            if x is not None:
                images, converted = results[0], [None] * len(results[0])
            else:
                images = np.stack([image for image, _ in results])
                converted = [mode for _, mode in results]
            yield PatchBatch(start, images, converted)
    finally:
        for _, futures in pending:
            for future in futures:
                future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        if h5 is not None:
            h5.close()


def _folder(root: Path) -> UserPatches:
    """The image files under `root`, sorted; labels from 0/ and 1/ when they hold them all."""
    files, skipped, hidden, h5_files = [], [], 0, []

    def refuse(error: OSError) -> None:
        raise PCamError(f"cannot read the folder {shown(error.filename)} ({error.strerror}); "
                        "fix its permissions or move it out of INPUT") from None

    for folder, dirs, names in os.walk(root, onerror=refuse):
        prefix = Path(folder).relative_to(root).as_posix() + "/"
        prefix = "" if prefix == "./" else prefix
        for name in sorted(dirs):
            if name.startswith("."):  # .git, .ipynb_checkpoints
                hidden += 1
            elif os.path.islink(os.path.join(folder, name)):
                skipped.append(f"{shown(prefix + name)} (a link to a folder, not followed)")
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            rel = prefix + name
            suffix = os.path.splitext(name)[1].lower()
            if name.startswith("."):  # macOS ._name files are not images
                hidden += 1
            elif suffix not in IMAGE_SUFFIXES:
                skipped.append(shown(rel))
                if suffix in HDF5_SUFFIXES:
                    h5_files.append(rel)
            elif what := not_a_file(os.path.join(folder, name)):
                skipped.append(f"{shown(rel)} ({what})")
            else:
                _check_name(root, rel)
                files.append(rel)
    if not files:
        hint = (f"; for its HDF5 files give one x file as INPUT, e.g. {shown(root / h5_files[0])}"
                if h5_files else "")
        raise PCamError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {shown(root)} or its "
                        f"subfolders{hint}; give {INPUTS}")
    files.sort()
    _check_unique_ids(root, files)
    notes = []
    if skipped:
        notes.append(f"skipped {len(skipped)} file(s) under {shown(root)} that are not images "
                     f"({', '.join(IMAGE_SUFFIXES)}): {_listing(skipped)}")
    if hidden:
        notes.append(f"skipped {hidden} hidden file(s) or folder(s) (names starting with '.')")
    patches = UserPatches("folder", root, len(files), files=files, notes=notes)
    if (root / "0").is_dir() and (root / "1").is_dir():
        tops = [rel.split("/", 1)[0] if "/" in rel else "" for rel in files]
        outside = sum(top not in ("0", "1") for top in tops)
        if outside:
            notes.append(f"labels: {outside} of {len(files)} images are not in {shown(root)}/0 "
                         "or /1, so the folder names are not used as labels (no metrics)")
        else:
            patches.labels = np.array([int(top) for top in tops], np.uint8)
            patches.label_source = f"the folders {shown(root.name)}/0 and {shown(root.name)}/1"
    return patches


_LOCKED = ("{} is open for writing in another program (HDF5 locks it), not damaged; close "
           "that program, or set HDF5_USE_FILE_LOCKING=FALSE to read it anyway, then rerun")


def _locked(error: OSError) -> bool:
    """Whether h5py could not open a file because another process holds its lock."""
    return "unable to lock file" in str(error).lower()


def _check_name(root: Path, rel: str) -> None:
    """`PCamError` for a file name that is not valid UTF-8: it would be its patch's id in
    the CSV (found before any patch is scored, not when its row is written)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise PCamError(f"{ascii(str(root / rel))} has a name that is not valid UTF-8, which the "
                        "CSV cannot hold as its id; rename it (or move it out of INPUT), then "
                        "rerun") from None


def _check_unique_ids(root: Path, files: list[str]) -> None:
    """`PCamError` when two files differ only in their suffix (the same id)."""
    seen: dict[str, str] = {}
    for rel in files:
        key = rel.rsplit(".", 1)[0]
        if key in seen:
            raise PCamError(f"{shown(root / seen[key])} and {shown(root / rel)} would get the same "
                            f"id {key!r} (ids are paths without the suffix); rename or move one "
                            "of them out of INPUT")
        seen[key] = rel


def _x_file(path: Path) -> UserPatches:
    """A PCam-layout x file, its labels and slides when the files beside it hold them."""
    example = "e.g. camelyonpatch_level_2_split_test_x.h5"
    try:
        h5 = h5py.File(path, "r")
    except OSError as error:
        if _locked(error):
            raise PCamError(_LOCKED.format(shown(path))) from None
        reason = str(error).split("(")[-1].rstrip(")") or str(error)
        raise PCamError(f"{shown(path)} is not a readable HDF5 file ({reason}): it is truncated, "
                        "corrupt or not HDF5; copy or download it again") from None
    with h5:
        x = h5.get("x")
        if not isinstance(x, h5py.Dataset):
            found = ", ".join(sorted(h5.keys())) or "nothing"
            hint = (" (its 'y' holds labels: give the x file beside it)"
                    if isinstance(h5.get("y"), h5py.Dataset) else "")
            raise PCamError(f"{shown(path)} is not a PCam x file: it has no dataset 'x' (found: "
                            f"{found}){hint}; give a PCam image file, {example}")
        if x.ndim != 4 or x.shape[1:] != PATCH_SHAPE or x.dtype != np.uint8:
            raise PCamError(f"{shown(path)} is not a PCam x file: its dataset 'x' is {x.dtype} "
                            f"with shape {x.shape}, not uint8 (N, 96, 96, 3); give a PCam image "
                            f"file ({example}) or a folder of 96x96 RGB images")
        count = int(x.shape[0])
    if count == 0:
        raise PCamError(f"{shown(path)} holds no patches (dataset 'x' has 0 rows); nothing to "
                        "predict")
    patches = UserPatches("hdf5", path, count)
    if (y_path := _y_beside(path)) is not None:
        patches.labels = _read_y(y_path, path, count)
        patches.label_source = f"the y file {y_path.name}"
        patches.slides = _slides_beside(path, count)
    return patches


def _y_beside(path: Path) -> Path | None:
    """The labels file PCam names after an x file (`..._x.h5` -> `..._y.h5`), when present."""
    found = re.fullmatch(r"(.*)_x(\.h5|\.hdf5)", path.name, flags=re.IGNORECASE)
    if not found:
        return None
    y_path = path.with_name(f"{found.group(1)}_y{found.group(2)}")
    return y_path if os.path.lexists(y_path) else None


def _read_y(y_path: Path, x_path: Path, count: int) -> np.ndarray:
    """The 0/1 labels of `y_path`, checked against the x file's `count` patches."""
    fix = (f"replace it with the y file of {shown(x_path.name)}, or move it away to predict "
           "without metrics")
    if what := not_a_file(y_path):
        raise PCamError(f"the labels file {shown(y_path)} is {what}; {fix}")
    try:
        with h5py.File(y_path, "r") as h5:
            y = h5.get("y")
            if not isinstance(y, h5py.Dataset) or y.ndim == 0 or y.shape[1:] not in (
                    (), (1, 1, 1)) or y.dtype.kind not in "biu":
                raise PCamError(f"{shown(y_path)} has no integer dataset 'y' of shape (N, 1, 1, "
                                f"1) or (N,) (one label per patch); {fix}")
            labels = read_block(y, y_path, 0, y.shape[0], "labels").reshape(-1)
    except OSError as error:
        if _locked(error):
            raise PCamError(_LOCKED.format(shown(y_path))) from None
        raise PCamError(f"{shown(y_path)} is not a readable HDF5 file ({error}); {fix}") from None
    if labels.size != count:
        raise PCamError(f"{shown(y_path)} holds {labels.size} labels but {shown(x_path)} holds "
                        f"{count} patches; {fix}")
    bad = labels[(labels != 0) & (labels != 1)]
    if bad.size:
        raise PCamError(f"{shown(y_path)}: {bad.size} labels are not 0 or 1 (e.g. {bad[0]}); "
                        f"{fix}")
    return labels.astype(np.uint8)


def _slides_beside(path: Path, count: int) -> np.ndarray | None:
    """The slide of each patch from PCam's meta CSV beside an x file of PCam's name."""
    for spec in SPEC.values():
        meta = path.with_name(spec.meta.name)
        if path.name == spec.x.name and os.path.lexists(meta):
            return read_slides(meta, count)
    return None


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more
