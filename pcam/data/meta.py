"""PCam's meta files: the slide of every patch, for slide-aware statistics.

`camelyonpatch_level_2_split_<split>_meta.csv` (Zenodo record 2546921, plain
CSV, no published checksum) has one row per patch, in the order of the split's
`.h5` files, with the columns `pcam.data.spec.META_COLUMNS`; `wsi` names the
slide. Patches of one slide look alike (same patient, stain and scanner), so
bootstrap intervals and paired tests resample slides when this file exists
(`pcam.evaluation.stats`). `pcam synthetic` writes one per split; `pcam
import-images` writes none (image folders carry no slide ids).
"""

import csv
import io
from pathlib import Path

import numpy as np

from pcam.core.errors import PCamError
from pcam.core.fileio import write_text
from pcam.data.names import not_a_file, shown
from pcam.data.spec import META_COLUMNS, SPEC, check_split_name

# pandas' `to_csv` writes an unnamed index column in front; accepted, not required.
_INDEX_HEADERS = ("", "Unnamed: 0")
SLIDES_MAX = 48  # synthetic slides per split: a few dozen, like a Camelyon16 split
PATCHES_PER_SLIDE = 16  # synthetic: fewer patches make fewer slides (256 patches: 16)
_FIX = ("delete it (slide ids are then unknown and statistics resample patches) or "
        "fetch it again with `python -m pcam download`")


def meta_path(folder, split: str) -> Path:
    """Where the meta file of `split` lives in the data folder `folder`."""
    return Path(folder) / SPEC[check_split_name(split)].meta.name


def read_slides(path: str | Path, length: int) -> np.ndarray:
    """The slide (`wsi`) of every patch, from a meta file checked against its split.

    Args:
        path: the meta CSV.
        length: patches in the split; the file must hold one row for each.

    Returns:
        str array of shape (length,), in the split's file order.

    Raises:
        PCamError: naming the file, when it cannot be read, its columns are not
            `META_COLUMNS`, its rows do not number `length`, or a row is short
            or has no slide id.
    """
    slides, problem = _read(Path(path), length)
    if problem:
        raise PCamError(f"{problem}; {_FIX}")
    return slides


def meta_problem(path: str | Path, length: int) -> str | None:
    """What is wrong with a meta file, in words naming it; None when it checks out."""
    return _read(Path(path), length)[1]


def _read(path: Path, length: int) -> tuple[np.ndarray | None, str | None]:
    if what := not_a_file(path):  # opening a FIFO would block
        return None, f"the meta file {shown(path)} is {what}, not a CSV file"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        return None, f"cannot read the meta file {path} ({error})"
    while rows and not rows[-1]:
        rows.pop()  # blank lines at the end
    header = [name.strip() for name in rows[0]] if rows else []
    index = len(header) == len(META_COLUMNS) + 1 and header[0] in _INDEX_HEADERS
    if tuple(header[int(index):]) != META_COLUMNS:
        return None, (f"meta file {path} has the columns {', '.join(header) or '(none)'}, "
                      f"expected {', '.join(META_COLUMNS)} (PCam's meta CSV layout)")
    body = rows[1:]
    if len(body) != length:
        return None, (f"meta file {path} has {len(body):,} rows but its split has "
                      f"{length:,} patches: it belongs to other files or is incomplete")
    width = len(header)
    for number, row in enumerate(body, start=2):
        if len(row) != width or not row[-1].strip():
            return None, (f"meta file {path}, line {number}: expected {width} fields ending "
                          f"with the slide id, got {row!r}")
    return np.array([row[-1].strip() for row in body], dtype=str), None


def write_meta(folder, split: str, slides, tumour, centre) -> Path:
    """Write a split's meta CSV in PCam's layout (atomically), for generated data.

    Args:
        folder: the data folder.
        split: "train", "valid" or "test".
        slides: slide id of each patch, shape (N,).
        tumour: whether the patch holds tumour anywhere (`tumor_patch`).
        centre: whether its central 32x32 does (`center_tumor_patch`, the label).

    Returns:
        The file's path. Coordinates are the patch's place on a 96-pixel grid
        of its slide, in file order.
    """
    slides = np.asarray(slides, dtype=str).reshape(-1)
    tumour, centre = np.asarray(tumour, bool).reshape(-1), np.asarray(centre, bool).reshape(-1)
    if not slides.size == tumour.size == centre.size:
        raise ValueError(f"slides, tumour and centre differ in length: {slides.size}, "
                         f"{tumour.size}, {centre.size}")
    place = np.zeros(slides.size, int)
    for name in np.unique(slides):
        where = slides == name
        place[where] = np.arange(where.sum())
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["", *META_COLUMNS])
    for i in range(slides.size):
        writer.writerow([i, 96 * (place[i] // 64), 96 * (place[i] % 64), bool(tumour[i]),
                         bool(centre[i]), slides[i]])
    return write_text(meta_path(folder, split), out.getvalue())


def synthetic_slides(split: str, n: int, seed: int, stream: int) -> np.ndarray:
    """Slide ids for `n` synthetic patches: a few dozen slides, shuffled in file order.

    Deterministic by `(seed, stream)`; each split has its own slides (as PCam's
    test slides are not its train slides). The patches of a synthetic slide are
    drawn independently: the ids exercise slide-level resampling, nothing more.
    """
    count = max(1, min(SLIDES_MAX, n // PATCHES_PER_SLIDE))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, 1 << 30)))
    names = np.array([f"synthetic_{split}_{k:03d}" for k in range(count)])
    return names[rng.permutation(np.arange(n) % count)]
