"""Import folders of 96x96 RGB patches into PCam-layout HDF5 files.

Layouts (the folder name is the label):
  SRC/{0,1}/*.jpg|png|tif|bmp|webp  one split; `split` says which
  SRC/<split>/{0,1}/*               e.g. the shared PCam subset (train, valid);
                                    `test_from_valid` splits its valid into valid
                                    and test, so that both come from slides that
                                    train does not hold
  SRC/train_labels.csv + SRC/*.tif  Kaggle "Histopathologic Cancer Detection"
                                    (or SRC/train/*.tif); one split, train by default

Every image is checked before anything is written (its size and mode from the
header, before it is decoded), so a bad file leaves the data folder as it was;
entries that are not images are skipped with a printed line naming them
(`pcam.data.image_sources`). All splits and `dataset.json` are swapped in at
once at the end (`pcam.data.staging`). Files are written in a seeded shuffled
order because the input pipeline reads contiguous blocks.
"""

import json
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from pcam.core.errors import PCamError
from pcam.core.paths import data_dir as _resolve_data_dir
from pcam.data.changes import plan_changes
from pcam.data.describe import source_listing_digest
from pcam.data.h5read import BOTH_CLASSES
from pcam.data.h5write import write_dataset_info, write_split_files
from pcam.data.image_sources import find_sources
from pcam.data.names import not_a_file, shown
from pcam.data.spec import DATASET_INFO, PATCH_SHAPE, SPLITS, check_split_name
from pcam.data.staging import finish_interrupted_writes

_SHOWN = 5  # bad files listed in one message


def _read(path: Path) -> np.ndarray | str:
    """The image as uint8 (96, 96, 3), or why it cannot be imported."""
    try:
        with Image.open(path) as image:  # reads the header only
            # Size and mode first: a 144-megapixel file is refused before it is decoded.
            if image.size != PATCH_SHAPE[:2]:
                return f"is {image.size[0]}x{image.size[1]} pixels, not 96x96"
            if image.mode in ("L", "LA", "1", "I;16", "I", "F"):
                return f"is greyscale (mode {image.mode}), not RGB"
            if image.mode != "RGB":
                return f"has mode {image.mode}, not RGB (no alpha, no palette)"
            image.load()  # decodes fully: a truncated file fails here
            return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return f"cannot be read as an image ({error})"


def _decode(items, src: Path, threads: int) -> np.ndarray:
    """All images of `items` as one array; PCamError listing the bad ones."""
    out = np.empty((len(items), *PATCH_SHAPE), np.uint8)
    bad = []
    # Pillow releases the GIL while decoding, so threads help. Its warning about
    # huge images is moot: their size is refused before any decoding.
    with warnings.catch_warnings(), ThreadPoolExecutor(threads) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for i, result in enumerate(pool.map(_read, [p for p, _ in items], chunksize=256)):
            if isinstance(result, str):
                bad.append(f"{shown(items[i][0].relative_to(src))} {result}")
            else:
                out[i] = result
    if bad:
        raise PCamError(
            f"{len(bad)} image(s) in {shown(src)} cannot be imported; every patch must be a 96x96 "
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
    layout, sources = find_sources(src, split, holdout, test_from_valid)
    folder = _resolve_data_dir(data_dir)
    finish_interrupted_writes(folder)  # before reading its dataset.json
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
    orders = {name: rng.permutation(outputs[name][2]) for name in SPLITS if name in outputs}
    counts = {name: (len(index), int(outputs[name][1][index].sum()))
              for name, index in orders.items()}
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
            **{k: dict(info[k]) if isinstance(info.get(k), dict) else {}
               for k in ("source_listing_sha256", "write_ids")}}
    # All splits and dataset.json are swapped in together, or none.
    key = json.dumps([listing, mapping, seed, holdout, test_from_valid, description])
    with changes.write(key) as stage:
        for name, index in orders.items():  # SPLITS order: the same seed gives the same files
            images, labels, _ = outputs[name]
            blocks = (images[index[i:i + 1024]] for i in range(0, len(index), 1024))
            write_split_files(stage.path, name, blocks, labels[index], write_id=stage.write_id)
            info["splits"][name], info["positives"][name] = counts[name]
            info["mapping"][name] = mapping[name]
            info["source_listing_sha256"][name] = listing[name]
            info["write_ids"][name] = stage.write_id
        write_dataset_info(stage.path, info)
    return info


def _previous_info(folder: Path, single: bool) -> dict:
    """Info to extend: an earlier one-split import is kept, anything else starts afresh."""
    empty = {"splits": {}, "positives": {}, "mapping": {}}
    path = folder / DATASET_INFO
    if not (single and path.exists()) or not_a_file(path):  # plan_changes refuses the latter
        return empty
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return empty
    if not isinstance(old, dict) or old.get("source") != "images":
        return empty
    if not all(isinstance(old.get(k), dict) for k in empty):
        return empty
    return old
