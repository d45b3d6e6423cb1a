"""Import folders of 96x96 RGB patches into PCam-layout HDF5 files.

Layouts (the folder name is the label):
  SRC/{0,1}/*.jpg|png|tif           one split; `split` says which
  SRC/<split>/{0,1}/*               e.g. the shared PCam subset (train, valid);
                                    `test_from_valid` splits its valid into valid
                                    and test, so that both come from slides that
                                    train does not hold
  SRC/train_labels.csv + SRC/*.tif  Kaggle "Histopathologic Cancer Detection"
                                    (or SRC/train/*.tif); one split, train by default

Every image is decoded and checked before anything is written, so a bad file
leaves the data folder as it was. Files are written in a seeded shuffled order
because the input pipeline reads contiguous blocks.
"""

import csv
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from pcam.data.describe import source_listing_digest
from pcam.data.h5read import BOTH_CLASSES
from pcam.data.h5write import plan_changes, write_dataset_info, write_split
from pcam.data.spec import DATASET_INFO, PATCH_SHAPE, SPLITS, check_split_name
from pcam.errors import PCamError
from pcam.paths import data_dir as _resolve_data_dir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
KAGGLE_CSV = "train_labels.csv"
_SHOWN = 5  # bad files listed in one message


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _class_folders(folder: Path) -> list[tuple[Path, int]] | None:
    """[(image, label)] from folder/{0,1}/, or None when the layout does not match."""
    if not ((folder / "0").is_dir() and (folder / "1").is_dir()):
        return None
    return [(p, label) for label in (0, 1) for p in _images_in(folder / str(label))]


def _listing(items, total) -> str:
    more = f" and {total - _SHOWN} more" if total > _SHOWN else ""
    return ", ".join(str(i) for i in items[:_SHOWN]) + more


def _kaggle(src: Path) -> list[tuple[Path, int]]:
    csv_path = src / KAGGLE_CSV
    folder = src / "train" if (src / "train").is_dir() else src
    try:
        with csv_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PCamError(f"cannot read {csv_path} ({error}); it must be a UTF-8 CSV") from None
    if not rows or not {"id", "label"} <= set(rows[0]):
        raise PCamError(f"{csv_path} must have a header `id,label` and one row per image")
    labels = {}
    for row in rows:
        if row["label"] not in ("0", "1"):
            raise PCamError(
                f"{csv_path}: label {row['label']!r} for id {row['id']!r} is not 0 or 1"
            )
        labels[row["id"]] = int(row["label"])
    images = {p.stem: p for p in _images_in(folder)}
    missing = sorted(set(labels) - set(images))
    if missing:
        raise PCamError(
            f"{len(missing)} id(s) in {csv_path.name} have no image in {folder.name}/: "
            f"{_listing(missing, len(missing))}; restore the images or delete their rows"
        )
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        raise PCamError(
            f"{len(unlabelled)} image(s) in {folder.name}/ have no row in {csv_path.name}: "
            f"{_listing([images[i].name for i in unlabelled], len(unlabelled))}; "
            "add their labels or move them out"
        )
    return [(images[i], labels[i]) for i in sorted(labels)]


def _find_sources(src: Path, split: str | None, holdout: int,
                  test_from_valid: int = 0) -> tuple[str, dict]:
    """(layout, {source split: [(image, label)]}) after checking the arguments."""
    if not src.is_dir():
        raise PCamError(f"{src} is not a folder of images")
    one_split = "one split"
    if (src / KAGGLE_CSV).exists():
        layout, sources = "kaggle", {split or "train": _kaggle(src)}
    elif (items := _class_folders(src)) is not None:
        if split is None and not holdout:
            raise PCamError(
                f"{src.name}/ holds one split (0/ and 1/): say which with --split train|valid|test"
            )
        layout, sources = one_split, {split or "train": items}
    else:
        layout = "split folders"
        sources = {s: _class_folders(src / s) for s in SPLITS if (src / s).is_dir()}
        sources = {s: items for s, items in sources.items() if items is not None}
        if not sources:
            raise PCamError(
                f"{src} has none of the known layouts: SRC/0 and SRC/1, SRC/<split>/0 and "
                f"SRC/<split>/1 (split: {', '.join(SPLITS)}), or {KAGGLE_CSV} with .tif files"
            )
        if split is not None:
            if split not in sources:
                raise PCamError(f"{src.name}/ has no {split}/0 and {split}/1 folders")
            sources = {split: sources[split]}
    if holdout:
        if layout != "split folders" and split not in (None, "train"):
            raise PCamError(f"--holdout takes patches from train, but --split is {split!r}")
        if "train" not in sources:
            raise PCamError(f"--holdout {holdout} needs a train split in {src.name}/")
        if "test" in sources:
            raise PCamError(
                f"--holdout maps {src.name}/valid to test, but {src.name}/test exists too: "
                "import without --holdout"
            )
    if test_from_valid:
        if holdout:
            raise PCamError("--holdout and --test-from-valid are two ways to make test: use one")
        if "valid" not in sources:
            raise PCamError(f"--test-from-valid {test_from_valid} needs a valid split: "
                            f"{src.name}/valid/0 and {src.name}/valid/1")
        if "test" in sources:
            raise PCamError(f"--test-from-valid makes test from {src.name}/valid, but "
                            f"{src.name}/test exists too: import without --test-from-valid")
    for name, items in sources.items():
        if not items:
            raise PCamError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found for {name} in {src}")
    return layout, sources


def _read(path: Path) -> np.ndarray | str:
    """The image as uint8 (96, 96, 3), or why it cannot be imported."""
    try:
        with Image.open(path) as image:
            image.load()  # decodes fully: a truncated file fails here
            if image.size != PATCH_SHAPE[:2]:
                return f"is {image.size[0]}x{image.size[1]} pixels, not 96x96"
            if image.mode in ("L", "LA", "1", "I;16", "I", "F"):
                return f"is greyscale (mode {image.mode}), not RGB"
            if image.mode != "RGB":
                return f"has mode {image.mode}, not RGB (no alpha, no palette)"
            return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return f"cannot be read as an image ({error})"


def _decode(items, src: Path, threads: int) -> np.ndarray:
    """All images of `items` as one array; PCamError listing the bad ones."""
    out = np.empty((len(items), *PATCH_SHAPE), np.uint8)
    bad = []
    # Pillow releases the GIL while decoding, so threads help.
    with ThreadPoolExecutor(threads) as pool:
        for i, result in enumerate(pool.map(_read, [p for p, _ in items], chunksize=256)):
            if isinstance(result, str):
                bad.append(f"{items[i][0].relative_to(src)} {result}")
            else:
                out[i] = result
    if bad:
        raise PCamError(
            f"{len(bad)} image(s) in {src} cannot be imported; every patch must be a 96x96 "
            "RGB image. Convert or remove these and rerun: " + "; ".join(bad[:_SHOWN])
            + (f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")
        )
    return out


def _stratified_holdout(labels: np.ndarray, holdout: int, rng,
                        option: str = "--holdout", split: str = "train") -> np.ndarray:
    """Boolean mask of `holdout` items keeping the class balance of `labels`."""
    if holdout >= len(labels):
        raise PCamError(f"{option} {holdout} must be smaller than the {len(labels)} "
                        f"{split} images")
    mask = np.zeros(len(labels), bool)
    n_pos = int(round(holdout * labels.mean()))
    for label, k in ((1, n_pos), (0, holdout - n_pos)):
        mask[rng.choice(np.flatnonzero(labels == label), size=k, replace=False)] = True
    return mask


def _looks_like_subset(sources: dict) -> bool:
    names = [p.name for items in sources.values() for p, _ in items]
    return all(re.fullmatch(r"patch\d+\.jpg", n) for n in names)


def import_images(src, data_dir=None, split=None, holdout=0, seed=0, *, test_from_valid=0,
                  description=None, threads=4, overwrite=False):
    """Convert a folder of patch images into PCam-layout HDF5 files.

    Args:
        src: the image folder (layouts in the module docstring).
        data_dir: target folder (default: `$PCAM_DATA_DIR` or `data/`). A folder
            holding the official download is refused.
        split: the split name for a one-split folder; with SRC/<split>/ folders,
            import only this split.
        holdout: if > 0, hold out this many SRC train patches (stratified by
            label) and write them as valid; SRC valid is then written as test.
        seed: seed of the hold-out draw and of the shuffled file order.
        description: label for records, e.g. "PCam subset (JPEG)"; guessed
            when None.
        threads: decoding threads.
        overwrite: replace split files already in `data_dir` and delete those
            that would not fit the import (e.g. synthetic ones), printing one
            line per file; without it such a folder is refused. A one-split
            import beside earlier imported splits keeps them and needs no flag.

    Returns:
        The `dataset.json` content written.

    Raises:
        PCamError: a bad layout or image (nothing is written), train or valid
            with one class only, or a folder `overwrite` would be needed for.
    """
    src = Path(src)
    if split is not None:
        check_split_name(split)
    for option, value in (("--holdout", holdout), ("--test-from-valid", test_from_valid)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PCamError(f"{option} must be an integer >= 0, got {value!r}")
    layout, sources = _find_sources(src, split, holdout, test_from_valid)
    folder = _resolve_data_dir(data_dir)
    targets = set(sources)
    if holdout:  # train -> train + valid, valid -> test
        targets = {"train", "valid"} | ({"test"} if "valid" in sources else set())
    if test_from_valid:  # valid -> valid + test
        targets |= {"test"}
    info = _previous_info(folder, single=len(sources) == 1 and not holdout)
    changes = plan_changes(
        folder, [s for s in SPLITS if s in targets],
        [s for s in SPLITS if s not in targets and s not in info["splits"]],
        overwrite=overwrite, command="import-images",
    )
    rng = np.random.default_rng(seed)

    # Decode and check everything first, so nothing is written half-way. Splits
    # are (images, indices into them) so the hold-out and shuffle copy nothing.
    outputs, mapping, listing = {}, {}, {}
    for name, items in sources.items():
        images = _decode(items, src, threads)
        labels = np.array([label for _, label in items], np.uint8)
        index = np.arange(len(items))
        target = name
        if holdout and name == "train":
            held = _stratified_holdout(labels, holdout, rng)
            outputs["valid"] = (images, labels, index[held])
            mapping["valid"] = f"{holdout} held out from {src.name}/train (stratified, seed {seed})"
            index = index[~held]
            mapping["train"] = f"{src.name}/train minus the {holdout} held out"
        elif holdout and name == "valid":
            target = "test"
        elif test_from_valid and name == "valid":
            held = _stratified_holdout(labels, test_from_valid, rng, "--test-from-valid", name)
            outputs["test"] = (images, labels, index[held])
            mapping["test"] = (f"{test_from_valid} of {src.name}/valid (stratified, seed {seed}; "
                               "the same slides as valid, none of train's)")
            index = index[~held]
            mapping["valid"] = (f"{src.name}/valid minus the {test_from_valid} moved to test "
                                "(slides that train does not hold)")
        mapping.setdefault(target, f"{src.name}/{name}" if layout == "split folders" else src.name)
        outputs[target] = (images, labels, index)
        digest = source_listing_digest(items, src)  # for every split made from these images
        listing.update({s: digest for s in outputs if s not in listing})

    for name in BOTH_CLASSES:  # nothing is written yet
        classes = np.unique(outputs[name][1][outputs[name][2]]) if name in outputs else (0, 1)
        if len(classes) < 2:
            raise PCamError(f"{name} ({mapping[name]}) would hold class {classes[0]} only; "
                            f"{name} needs both 0 and 1: add images of class {1 - classes[0]}"
                            + (" or raise --holdout" if holdout else "")
                            + (" or change --test-from-valid" if test_from_valid else ""))
    counts = {}
    for name in SPLITS:  # fixed order: the same seed gives the same files
        if name in outputs:
            images, labels, index = outputs[name]
            index = rng.permutation(index)
            blocks = (images[index[i:i + 1024]] for i in range(0, len(index), 1024))
            write_split(folder, name, blocks, labels[index])
            changes.announce(name)
            counts[name] = (len(index), int(labels[index].sum()))
    changes.remove()
    if description is None:
        description = (
            "PCam subset (JPEG)" if _looks_like_subset(sources)
            else "Kaggle Histopathologic Cancer Detection" if layout == "kaggle"
            else f"images from {src.name}"
        )
    info = {"source": "images", "synthetic": False, "folder": src.name, "layout": layout,
            "label": description, "seed": seed, "holdout": holdout,
            "test_from_valid": test_from_valid,
            **{k: info[k] for k in ("splits", "positives", "mapping")},
            "source_listing_sha256": dict(info.get("source_listing_sha256") or {})}
    for name, (n, positives) in counts.items():
        info["splits"][name] = n
        info["positives"][name] = positives
        info["mapping"][name] = mapping[name]
        info["source_listing_sha256"][name] = listing[name]
    write_dataset_info(folder, info)
    return info


def _previous_info(folder: Path, single: bool) -> dict:
    """Info to extend: an earlier one-split import is kept, anything else starts afresh."""
    import json

    empty = {"splits": {}, "positives": {}, "mapping": {}}
    path = folder / DATASET_INFO
    if not (single and path.exists()):
        return empty
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return empty
    if old.get("source") != "images" or not all(k in old for k in empty):
        return empty
    return old
