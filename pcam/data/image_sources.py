"""The images an import reads and their labels, found by the source folder's layout
(the layouts are listed in `pcam.data.import_images`).

Only regular image files directly in a class folder are read; anything else
there (other suffixes, hidden files, subfolders, FIFOs) is skipped with one
printed line per folder naming it, never silently. A Kaggle CSV is refused with
the id and lines when an id has two rows.
"""

import csv
from pathlib import Path

from pcam.core.errors import PCamError
from pcam.data.names import not_a_file, shown
from pcam.data.spec import SPLITS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
KAGGLE_CSV = "train_labels.csv"
_SHOWN = 5  # bad files listed in one message


def _images_in(folder: Path, src: Path, expected: tuple[str, ...] = ()) -> list[Path]:
    """The image files directly in `folder`; one printed line names what was skipped.

    Args:
        folder: a class folder (or the Kaggle image folder).
        src: the source folder, for the printed names.
        expected: names that belong there and are not images (the Kaggle CSV).
    """
    images, skipped = [], []
    for path in sorted(folder.iterdir()):
        what = not_a_file(path)
        if path.name in expected:
            continue
        if path.name.startswith("."):
            skipped.append(f"{shown(path.name)} (hidden)")
        elif what:
            skipped.append(f"{shown(path.name)} ({what})")
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(shown(path.name))
        else:
            images.append(path)
    if skipped:
        where = folder.relative_to(src.parent).as_posix()
        print(f"skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} of "
              f"{shown(where)} that are not image files ({' '.join(IMAGE_SUFFIXES)}; "
              f"subfolders are not searched): {_listing(skipped, len(skipped))}", flush=True)
    return images


def _class_folders(folder: Path, src: Path) -> list[tuple[Path, int]] | None:
    """[(image, label)] from folder/{0,1}/, or None when the layout does not match."""
    if not ((folder / "0").is_dir() and (folder / "1").is_dir()):
        return None
    return [(p, label) for label in (0, 1) for p in _images_in(folder / str(label), src)]


def _listing(items, total) -> str:
    more = f" and {total - _SHOWN} more" if total > _SHOWN else ""
    return ", ".join(str(i) for i in items[:_SHOWN]) + more


def _kaggle(src: Path) -> list[tuple[Path, int]]:
    csv_path = src / KAGGLE_CSV
    folder = src / "train" if (src / "train").is_dir() else src
    if what := not_a_file(csv_path):
        raise PCamError(f"{shown(csv_path)} is {what}, not a CSV file; replace it with the "
                        "labels file (`id,label`, one row per image)")
    try:
        # utf-8-sig: a CSV saved by Excel starts with a byte-order mark
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PCamError(f"cannot read {shown(csv_path)} ({error}); it must be a UTF-8 "
                        "CSV") from None
    if not rows or not {"id", "label"} <= set(rows[0]):
        raise PCamError(f"{shown(csv_path)} must have a header `id,label` and one row per image")
    labels, lines = {}, {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        image_id, label = row["id"], row["label"]
        if label not in ("0", "1"):
            raise PCamError(f"{shown(csv_path)}, line {line}: label {label!r} for id "
                            f"{image_id!r} is not 0 or 1")
        if image_id in labels:
            raise PCamError(
                f"{shown(csv_path)}: id {image_id!r} has two rows (lines {lines[image_id]} and "
                f"{line}, labels {labels[image_id]} and {label}); keep one row per image")
        labels[image_id], lines[image_id] = int(label), line
    images = {p.stem: p for p in _images_in(folder, src, expected=(KAGGLE_CSV,))}
    missing = sorted(set(labels) - set(images))
    if missing:
        raise PCamError(
            f"{len(missing)} id(s) in {csv_path.name} have no image in {shown(folder.name)}/: "
            f"{_listing([repr(i) for i in missing], len(missing))}; restore the images or "
            "delete their rows"
        )
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        names = [shown(images[i].name) for i in unlabelled]
        raise PCamError(
            f"{len(unlabelled)} image(s) in {shown(folder.name)}/ have no row in "
            f"{csv_path.name}: {_listing(names, len(names))}; add their labels or move them out"
        )
    return [(images[i], labels[i]) for i in sorted(labels)]


def find_sources(src: Path, split: str | None, holdout: int,
                  test_from_valid: int = 0) -> tuple[str, dict]:
    """The images an import reads, by source split, after checking the arguments.

    Args:
        src: the source folder; split, holdout, test_from_valid: as for
            `pcam.data.import_images.import_images`.

    Returns:
        `(layout, {source split: [(image path, label)]})`; layout is "kaggle",
        "one split" or "split folders".

    Raises:
        PCamError: an unknown layout, missing folders, no images, a bad
            Kaggle CSV, or options that do not fit the layout.
    """
    name, where = shown(src.name), shown(src)  # as written in messages
    if not src.is_dir():
        raise PCamError(f"{where} is not a folder of images")
    one_split = "one split"
    if (src / KAGGLE_CSV).exists():
        layout, sources = "kaggle", {split or "train": _kaggle(src)}
    elif (items := _class_folders(src, src)) is not None:
        if split is None and not holdout:
            raise PCamError(
                f"{name}/ holds one split (0/ and 1/): say which with --split train|valid|test"
            )
        layout, sources = one_split, {split or "train": items}
    else:
        layout = "split folders"
        sources = {s: _class_folders(src / s, src) for s in SPLITS if (src / s).is_dir()}
        sources = {s: items for s, items in sources.items() if items is not None}
        if not sources:
            raise PCamError(
                f"{where} has none of the known layouts: SRC/0 and SRC/1, SRC/<split>/0 and "
                f"SRC/<split>/1 (split: {', '.join(SPLITS)}), or {KAGGLE_CSV} with .tif files"
            )
        if split is not None:
            if split not in sources:
                raise PCamError(f"{name}/ has no {split}/0 and {split}/1 folders")
            sources = {split: sources[split]}
    if holdout:
        if layout != "split folders" and split not in (None, "train"):
            raise PCamError(f"--holdout takes patches from train, but --split is {split!r}")
        if "train" not in sources:
            raise PCamError(f"--holdout {holdout} needs a train split in {name}/")
        if "test" in sources:
            raise PCamError(
                f"--holdout maps {name}/valid to test, but {name}/test exists too: "
                "import without --holdout"
            )
    if test_from_valid:
        if holdout:
            raise PCamError("--holdout and --test-from-valid are two ways to make test: use one")
        if "valid" not in sources:
            raise PCamError(f"--test-from-valid {test_from_valid} needs a valid split: "
                            f"{name}/valid/0 and {name}/valid/1")
        if "test" in sources:
            raise PCamError(f"--test-from-valid makes test from {name}/valid, but "
                            f"{name}/test exists too: import without --test-from-valid")
    for split_name, items in sources.items():
        if not items:
            raise PCamError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found for {split_name} in "
                            f"{where}")
    return layout, sources
