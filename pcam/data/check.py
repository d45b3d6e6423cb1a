"""`python -m pcam check`: check every split present in a data folder.

One row per split: patches, positives, slides (from the split's meta CSV;
"none" without one), bytes on disk, whether every patch was read, and the
MD5 status. A split fails when `open_split` refuses it
(missing, unreadable, wrong layout, empty, one class in train or valid) or
when a chunk of its images is missing or does not decompress: files written
by `pcam synthetic` or `pcam import-images` (they carry `dataset.json`) have
no published checksum, so reading every chunk is their only integrity check.
The MD5s of the official `.h5` files are in `pcam.data.spec.SPEC`.

`dataset.json` is read as training reads it (`read_dataset_info`: a broken one
is refused by both), and each split is checked against it: the number of
patches it lists, and the id of the write that made the files (`write_ids`), so
a folder that mixes two writes (new train beside old valid) fails.
"""

import os

import h5py

from pcam.core.errors import PCamError
from pcam.core.fileio import file_digest
from pcam.core.paths import data_dir as _resolve_data_dir
from pcam.data.h5read import (
    REDO,
    available_splits,
    open_split,
    read_block,
    read_dataset_info,
    read_labels,
    read_slides,
    storage_layout,
)
from pcam.data.h5write import write_id_of
from pcam.data.spec import DATASET_INFO, SPEC, SPLITS

MD5_VERIFIED = "verified"
MD5_MISMATCH = "mismatch"
MD5_NOT_CHECKED = "not checked"
MD5_NOT_APPLICABLE = "n/a (synthetic/imported)"
READ_ALL, READ_SKIPPED, READ_FAILED = "all", "skipped", "failed"


def check_data_dir(
    data_dir: str | os.PathLike | None = None, verify_md5: bool = False, read: bool = False
) -> list[dict]:
    """Run `open_split`'s checks, a read of every patch and optionally MD5s on every split.

    Args:
        data_dir: the data folder; default `pcam.core.paths.data_dir()`.
        verify_md5: also hash both files of each official split and compare
            with the published `.h5` MD5s (train_x is 7.2 GB: about a minute).
        read: also read (decompress) every chunk of every image file: about a
            minute for the 7 GB train file, so the notebooks leave it out;
            `pcam check` does it unless `--quick`. Skipped for a split whose
            MD5s were verified: its bytes are known good.

    Returns:
        One dict per split present, in SPLITS order: `split`, `n`, `positives`,
        `slides` (distinct slide ids in its meta file; 0 without one, None when
        the split did not open or the meta file is malformed, which fails the
        split), `bytes` (x + y on disk), `layout` (how x is stored, from
        `pcam.data.h5read.storage_layout`; None when the split did not open),
        `read` ("all", "skipped", "failed", or None when the split did not
        open), `md5` ("verified", "mismatch", "not checked", or "n/a
        (synthetic/imported)"), `ok` (bool) and `error`
        (message or None).

    Raises:
        PCamError: the folder holds no PCam file at all, or its `dataset.json`
            cannot be used (the message training would give).
    """
    folder = _resolve_data_dir(data_dir)
    splits = available_splits(folder)
    if not splits:
        raise PCamError(
            f"no PCam files in {folder}; run `python -m pcam download --data-dir {folder}` "
            f"or `python -m pcam synthetic --data-dir {folder}`"
        )
    official = not (folder / DATASET_INFO).exists()
    info = read_dataset_info(folder)
    listed = info.get("splits") if not official else None
    if isinstance(listed, dict):  # a split dataset.json lists must be there
        splits = [name for name in SPLITS if name in splits or name in listed]
    rows = [_check_split(folder, name, official, verify_md5, read) for name in splits]
    if not official:
        for row in rows:
            _check_against_info(folder, row, info)
    return rows


def format_check_table(rows: list[dict]) -> str:
    """The rows of `check_data_dir` as an aligned text table, errors below it."""
    header = ("split", "N", "positives", "slides", "bytes", "read", "md5", "status", "layout")
    lines = [header]
    for row in rows:
        lines.append((
            row["split"],
            _count(row["n"]),
            _count(row["positives"]),
            "none" if row["slides"] == 0 else _count(row["slides"]),
            _count(row["bytes"]),
            row["read"] or "-",
            row["md5"],
            "ok" if row["ok"] else "BAD",
            row["layout"] or "-",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in lines]
    text += [f"{row['split']}: {row['error']}" for row in rows if row["error"]]
    return "\n".join(text)


def _check_split(folder, name: str, official: bool, verify_md5: bool, read: bool) -> dict:
    spec = SPEC[name]
    paths = [folder / spec.x.name, folder / spec.y.name]
    row = {
        "split": name,
        "n": None,
        "positives": None,
        "slides": None,
        "bytes": sum(p.stat().st_size for p in paths if p.is_file()),
        "read": None,
        "layout": None,
        "md5": MD5_NOT_CHECKED,
        "ok": False,
        "error": None,
    }
    try:
        split = open_split(folder, name)
    except PCamError as error:
        row["error"] = str(error)
        return row
    row["n"] = split.length
    row["layout"] = storage_layout(split.x_path, spec.x.key)
    row["positives"] = int(read_labels(split).sum())
    errors = []
    try:
        slides = read_slides(split)
        row["slides"] = 0 if slides is None else len(set(slides.tolist()))
    except PCamError as error:
        errors.append(str(error))
    if official and split.length != spec.length:
        errors.append(
            f"{split.length} patches, the official {name} split has {spec.length}: "
            "the file is incomplete or not the official one (files you made yourself "
            f"need a {DATASET_INFO}, as `python -m pcam import-images` writes)"
        )
    if verify_md5 and not official:
        row["md5"] = MD5_NOT_APPLICABLE
    elif verify_md5:

        row["md5"] = MD5_VERIFIED
        for path, expected in zip(paths, (spec.x.h5_md5, spec.y.h5_md5), strict=True):
            got = file_digest(path, "md5")
            if got != expected:
                row["md5"] = MD5_MISMATCH
                errors.append(
                    f"MD5 of {path} is {got}, expected {expected}: the file is damaged "
                    f"or not the official one; delete it and run `python -m pcam download`"
                )
    row["read"] = READ_SKIPPED
    if read and row["md5"] != MD5_VERIFIED:
        try:
            read_every_patch(split)
            row["read"] = READ_ALL
        except PCamError as error:
            row["read"] = READ_FAILED
            errors.append(str(error))
    row["error"] = "; ".join(errors) or None
    row["ok"] = not errors
    return row


def _check_against_info(folder, row: dict, info: dict) -> None:
    """Fail `row` when its split's files are not those `dataset.json` describes."""
    name, errors = row["split"], []
    listed, ids = info.get("splits"), info.get("write_ids")
    fix = ("the folder mixes two writes or was changed by hand: write it again "
           "(`python -m pcam synthetic --overwrite` or `import-images --overwrite`)")
    if isinstance(listed, dict) and row["n"] is not None:
        if name not in listed:
            errors.append(f"{DATASET_INFO} does not list split {name!r}; {fix}")
        elif listed[name] != row["n"]:
            errors.append(f"{DATASET_INFO} lists {listed[name]:,} patches for {name}, its files "
                          f"hold {row['n']:,}; {fix}")
    if isinstance(ids, dict) and name in ids and row["n"] is not None:
        for file in (SPEC[name].x, SPEC[name].y):
            if write_id_of(folder / file.name) != ids[name]:
                errors.append(f"{folder / file.name} is not the file {DATASET_INFO} describes "
                              f"(another write made it); {fix}")
                break
    if errors:
        row["error"] = "; ".join(filter(None, [row["error"], *errors]))
        row["ok"] = False


def read_every_patch(split, block: int = 1024) -> None:
    """Read (and so decompress) every patch of `split` once.

    Args:
        split: a `Split` from `open_split` (which has read all its labels).
        block: patches per read, rounded to whole chunks (28 MiB for 1024).

    Raises:
        PCamError: naming the file and, for a chunk that does not decompress,
            its patch range; or saying that chunks were never written.
    """
    with h5py.File(split.x_path, "r") as f:
        x = f[SPEC[split.name].x.key]
        rows = x.chunks[0] if x.chunks else 1
        if _unwritten(x):
            raise PCamError(f"{split.x_path}: part of dataset 'x' was never written (those "
                            f"patches would read as black); the file is incomplete: {REDO}")
        step = max(rows, block // rows * rows)
        for start in range(0, split.length, step):
            read_block(x, split.x_path, start, min(start + step, split.length))


def _unwritten(x: h5py.Dataset) -> bool:
    """Whether chunks (or the contiguous block) of `x` were never stored."""
    if not x.chunks:
        return x.id.get_storage_size() == 0 and x.size > 0
    per_row = 1
    for n, c in zip(x.shape[1:], x.chunks[1:], strict=True):
        per_row *= -(-n // c)
    return x.id.get_num_chunks() < -(-x.shape[0] // x.chunks[0]) * per_row


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
