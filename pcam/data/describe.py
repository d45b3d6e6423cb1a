"""The run record's "data" section: which folder a run trained on, how much of it, and
a fingerprint of its files.

It reads the HDF5 labels, so it lives with the data code; `pcam.run.records` only
stores the section it is handed (see `pcam/core/record.schema.json`, "data").

The fingerprint: per split and file, its name, size, `mtime_ns` and the
SHA-256 of the whole file (`sha256`), so any change to any byte is seen, a
same-size rewrite in place included. x files also keep `sampled_sha256`
(8 evenly spaced 1 MiB blocks, the first and the last among them; the whole
file under 8 MiB): records written before whole-file digests have only that,
and still resume, compared on it, with a note that a same-size change in place
cannot be seen for them. A resume compares the content (names, sizes, the
digests both sides have) and refuses on any change; a new modification time
with the same content (a copy) is only noted.

Cost (`taskset -c 1 python benchmarks/bench_fingerprint.py`, 1 GiB file, one
core of a 2-core AMD EPYC VM with SHA extensions, under load 4.6): 590 MB/s
from the page cache, 330-530 MB/s with it dropped, so 12-22 s for the 7.2 GB
train file, once at the start or resume of a run (and in `pcam evaluate`);
SHA-256 alone runs at 1.9 GB/s on an idle core of it (about 4 s). The sampled
digest takes 13 ms. Runs last hours, so the whole-file digest is worth it.

`source_listing_digest` names the image files `pcam import-images` read, for
its `dataset.json`.
"""

import hashlib
import os
from pathlib import Path

from pcam.core.errors import PCamError
from pcam.core.fileio import file_digest
from pcam.core.paths import display_path
from pcam.data.h5read import Split, check_classes, read_dataset_info, read_labels

_BLOCK, _BLOCKS = 1 << 20, 8  # the x file's sampled digest: 8 blocks of 1 MiB


def data_section(config, data_dir: str | os.PathLike, splits: dict[str, Split]) -> dict:
    """What a run reads from `data_dir`: the record's "data" section.

    Args:
        config: the run's `pcam.run.config.TrainConfig`; `max_samples` caps train,
            `max_eval_samples` caps valid and test (None: the whole split).
        data_dir: the PCam-layout folder the splits were opened from.
        splits: split name ("train", "valid", "test") -> `Split` from
            `pcam.data.h5read.open_split`.

    Returns:
        dict: `dir` (display path, no machine path), `info` (the folder's
        `dataset.json`, see `read_dataset_info`), `synthetic` (bool), `splits`
        ({name: {"n": patches used, "n_file": patches in the file,
        "positives": positives among the n used}}) and `fingerprint` (see
        `fingerprint`).
    """
    info = read_dataset_info(data_dir)
    section = {"dir": display_path(data_dir), "info": info,
               "synthetic": bool(info.get("synthetic", False)), "splits": {}}
    for name, split in splits.items():
        cap = config.max_samples if name == "train" else config.max_eval_samples
        n = split.length if cap is None else min(cap, split.length)
        used = read_labels(split)[:n]
        if cap is not None:  # open_split checked the whole file; a cap can leave one class
            setting = "max_samples" if name == "train" else "max_eval_samples"
            check_classes(name, used, split.y_path, f"{setting}={cap}")
        section["splits"][name] = {"n": n, "n_file": split.length, "positives": int(used.sum())}
    section["fingerprint"] = fingerprint(splits)
    return section


def fingerprint(splits: dict[str, Split]) -> dict:
    """{split: {"x": {name, size, mtime_ns, sha256, sampled_sha256}, "y": {name, size,
    mtime_ns, sha256}}} of opened splits (see the module docstring)."""
    found = {}
    for name, split in splits.items():
        x, y = os.stat(split.x_path), os.stat(split.y_path)
        found[name] = {
            "x": {"name": split.x_path.name, "size": x.st_size, "mtime_ns": x.st_mtime_ns,
                  "sha256": file_digest(split.x_path),
                  "sampled_sha256": _sampled_digest(split.x_path, x.st_size)},
            "y": {"name": split.y_path.name, "size": y.st_size, "mtime_ns": y.st_mtime_ns,
                  "sha256": file_digest(split.y_path)},
        }
    return found


def source_listing_digest(items, root: str | os.PathLike) -> str:
    """SHA-256 naming the image files an import read: their names, sizes and labels.

    Args:
        items: [(image path, label)] under `root`, as `pcam import-images` found them.
        root: the source folder; paths are taken relative to it (POSIX).

    Returns:
        The hex SHA-256 of the sorted lines "<relative path> <bytes> <label>"
        (tab-separated, each ending in a newline, UTF-8).
        It tells two sources apart by their listing only, not by the image
        bytes: a file rewritten at the same size goes unnoticed.
    """
    lines = sorted(f"{Path(path).relative_to(root).as_posix()}\t{os.stat(path).st_size}"
                   f"\t{int(label)}\n" for path, label in items)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def fingerprint_changes(recorded: dict, current: dict) -> tuple[list[str], list[str]]:
    """(content changes, files only touched) from `recorded` to `current`, in words.

    Splits are compared where either fingerprint has them; a split present in
    one only is a content change. Digests are compared where both sides have
    them (an older record has only the x file's `sampled_sha256`).
    """
    changed, touched = [], []
    for split in sorted(set(recorded) | set(current)):
        if split not in current or split not in recorded:
            changed.append(f"split {split} {'is gone' if split in recorded else 'is new'}")
            continue
        for kind in ("x", "y"):
            old, new = recorded[split][kind], current[split][kind]
            what = [key for key in ("name", "size", "sha256", "sampled_sha256")
                    if key in old and key in new and old[key] != new[key]]
            label = f"{split} {kind} file {new['name']}"
            if "size" in what:
                changed.append(f"{label}: {old['size']} -> {new['size']} bytes")
            elif what:
                changed.append(f"{label}: other {' and '.join(what)}")
            elif old.get("mtime_ns") != new.get("mtime_ns"):
                touched.append(label)
    return changed, touched


def check_same_data(record: dict, data: dict, data_dir: str | os.PathLike) -> str | None:
    """Refuse to resume `record` on data other than its own; a note, or None.

    Args:
        record: the stored record of the run being resumed.
        data: the data section of the folder it would resume on (`data_section`).
        data_dir: that folder (for the message).

    Returns:
        A note when nothing could be compared (a record from before
        fingerprints), when the record's x digests are sampled ones (from before
        whole-file digests: a same-size change in place cannot be seen), or when
        only modification times changed; None otherwise.

    Raises:
        PCamError: naming the run, its data folder and every file whose
            content changed.
    """
    recorded, run = record["data"].get("fingerprint"), record["run"]
    if recorded is None:
        return (f"run {run}'s record has no data fingerprint (written by an older pcam); "
                "resuming without checking that the data are the same")
    changed, touched = fingerprint_changes(recorded, data["fingerprint"])
    if changed:
        raise PCamError(
            f"run {run} started on other data than {data_dir} holds now ("
            f"{'; '.join(changed)}); resume it on the data it started on, or train a new "
            "run on these data (another --run name)")
    notes = []
    sampled = sorted(split for split, files in recorded.items() if "sha256" not in files["x"])
    if sampled:
        notes.append(f"run {run}'s record holds only sampled digests of the x files of "
                     f"{', '.join(sampled)} (written by an older pcam): a same-size change in "
                     "place cannot be detected for them")
    if touched:
        notes.append(f"run {run}: {', '.join(touched)} changed modification time but not "
                     "content")
    return "; ".join(notes) + "; resuming" if notes else None


def check_resume_data(record: dict, data_dir: str | os.PathLike) -> str | None:
    """`check_same_data` for a stored run record against `data_dir` as it is now.

    For the command line to call before a notebook kernel starts, so that the
    refusal or the note reaches the user's terminal, not only the kernel's log.
    It opens the splits training opens: train, valid, and test when present.

    Returns and raises as `check_same_data` (and `open_split` for bad data).
    """
    from pcam.data.h5read import available_splits, open_split

    names = ["train", "valid"] + (["test"] if "test" in available_splits(data_dir) else [])
    splits = {name: open_split(data_dir, name) for name in names}
    return check_same_data(record, {"fingerprint": fingerprint(splits)}, data_dir)


def _sampled_digest(path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= _BLOCK * _BLOCKS:
            digest.update(f.read())
        else:
            for i in range(_BLOCKS):
                f.seek((size - _BLOCK) * i // (_BLOCKS - 1))
                digest.update(f.read(_BLOCK))
    return digest.hexdigest()
