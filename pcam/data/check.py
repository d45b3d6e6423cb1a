"""`python -m pcam check`: check every split present in a data folder.

One row per split: patches, positives, bytes on disk and the MD5 status.
The MD5s of the official `.h5` files are in `pcam.data.spec.SPEC`; folders written
by `pcam synthetic` or `pcam import-images` (they carry `dataset.json`) have
no published checksum, so theirs is "n/a".
"""

import os

from pcam.data.h5read import available_splits, open_split, read_labels
from pcam.data.spec import DATASET_INFO, SPEC
from pcam.errors import PCamError
from pcam.fileio import file_digest
from pcam.paths import data_dir as _resolve_data_dir

MD5_VERIFIED = "verified"
MD5_MISMATCH = "mismatch"
MD5_NOT_CHECKED = "not checked"
MD5_NOT_APPLICABLE = "n/a (synthetic/imported)"


def check_data_dir(
    data_dir: str | os.PathLike | None = None, verify_md5: bool = False
) -> list[dict]:
    """Run `open_split`'s checks (and optionally MD5s) on every split present.

    Args:
        data_dir: the data folder; default `pcam.paths.data_dir()`.
        verify_md5: also hash both files of each official split and compare
            with the published `.h5` MD5s (train_x is 7.2 GB: about a minute).

    Returns:
        One dict per split present, in SPLITS order: `split`, `n`, `positives`,
        `bytes` (x + y on disk), `md5` ("verified", "mismatch", "not checked",
        or "n/a (synthetic/imported)"), `ok` (bool) and `error` (message or None).

    Raises:
        PCamError: the folder holds no PCam file at all.
    """
    folder = _resolve_data_dir(data_dir)
    splits = available_splits(folder)
    if not splits:
        raise PCamError(
            f"no PCam files in {folder}; run `python -m pcam download --data-dir {folder}` "
            f"or `python -m pcam synthetic --data-dir {folder}`"
        )
    official = not (folder / DATASET_INFO).exists()
    return [_check_split(folder, name, official, verify_md5) for name in splits]


def format_check_table(rows: list[dict]) -> str:
    """The rows of `check_data_dir` as an aligned text table, errors below it."""
    header = ("split", "N", "positives", "bytes", "md5", "status")
    lines = [header]
    for row in rows:
        lines.append((
            row["split"],
            _count(row["n"]),
            _count(row["positives"]),
            _count(row["bytes"]),
            row["md5"],
            "ok" if row["ok"] else "BAD",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in lines]
    text += [f"{row['split']}: {row['error']}" for row in rows if row["error"]]
    return "\n".join(text)


def _check_split(folder, name: str, official: bool, verify_md5: bool) -> dict:
    spec = SPEC[name]
    paths = [folder / spec.x.name, folder / spec.y.name]
    row = {
        "split": name,
        "n": None,
        "positives": None,
        "bytes": sum(p.stat().st_size for p in paths if p.exists()),
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
    row["positives"] = int(read_labels(split).sum())
    errors = []
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
    row["error"] = "; ".join(errors) or None
    row["ok"] = not errors
    return row


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
