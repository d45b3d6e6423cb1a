"""What a writer replaces or removes in a data folder: checked before, announced after.

`plan_changes` refuses, before anything is written, to replace files this
package did not write (the official download) or, without `overwrite`, files it
did; `FolderChanges.write` then stages the new files and swaps them in at once
(`pcam.data.staging`), printing one line per file replaced or removed.
"""

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py

from pcam.core.errors import PCamError
from pcam.core.fileio import stale_temps
from pcam.core.paths import data_dir as _resolve_data_dir
from pcam.data.h5write import WRITER_ATTR, make_folder
from pcam.data.names import not_a_file, shown
from pcam.data.spec import DATASET_INFO, SPEC, SPLITS
from pcam.data.staging import Stage, finish_interrupted_writes, staged_write


def _written_here(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return WRITER_ATTR in f.attrs
    except OSError:
        return False


@dataclass(frozen=True)
class FolderChanges:
    """The existing files a writer replaces or removes; from `plan_changes`."""

    folder: Path
    replaced: dict[str, list[Path]]  # split -> its existing files, rewritten
    removed: list[Path]
    kind: str  # what the folder held, e.g. "synthetic patches, seed 0"
    owned: tuple[str, ...] = ()  # every file name of the splits written or removed
    had_info: bool = False  # whether dataset.json existed

    @contextlib.contextmanager
    def write(self, key: str) -> Iterator[Stage]:
        """Stage the new files; at the end swap them all in and print what changed.

        Args:
            key: what fixes the new files' bytes (the writer's arguments); its
                digest is the write id, so the same arguments give the same files.

        Yields:
            The `pcam.data.staging.Stage` to write into; an exception in the
            block leaves the folder as it was.
        """
        folder = make_folder(self.folder)
        for name in [*(f.name for s in SPLITS for f in (SPEC[s].x, SPEC[s].y, SPEC[s].meta)),
                     DATASET_INFO]:  # temporary files an older pcam's killed writer left
            for stale in stale_temps(folder / name):
                stale.unlink(missing_ok=True)
        write_id = hashlib.sha256(key.encode()).hexdigest()[:16]
        with staged_write(folder, delete=self.owned, write_id=write_id) as stage:
            yield stage
        self.announce()

    def announce(self) -> None:
        """Print one line per file replaced or removed (call after the commit).

        A meta file the writer did not write again (import-images) was removed.
        """
        for split in SPLITS:
            for path in self.replaced.get(split, []):
                print(f"{'replaced' if path.exists() else 'removed'} {shown(path)} "
                      f"({self.kind})", flush=True)
        for path in self.removed:
            print(f"removed {shown(path)} ({self.kind})", flush=True)
        if (self.replaced or self.removed) and self.had_info:
            print(f"replaced {shown(self.folder / DATASET_INFO)} (its description of the "
                  "files above)", flush=True)


def plan_changes(data_dir, write: Iterable[str], remove: Iterable[str], *, overwrite: bool,
                 command: str) -> FolderChanges:
    """Check, before anything is written, what writing and removing splits would destroy.

    An interrupted earlier write is finished or dropped first
    (`pcam.data.staging.finish_interrupted_writes`), so the plan sees the folder
    as it really is.

    Args:
        data_dir: the target folder (it need not exist).
        write: the splits about to be written.
        remove: the splits about to be deleted (they would not fit the new ones).
        overwrite: allow replacing and deleting files this package wrote.
        command: the command's name, for the message ("synthetic", "import-images").

    Returns:
        A `FolderChanges`; write the new files inside its `write(key)`.

    Raises:
        PCamError: the folder holds a PCam file this package did not write (the
            official download or a damaged file: never replaced, even with
            `overwrite`) or something that is not a file under a PCam name, or
            `overwrite` is False and existing files would be replaced or deleted.
    """
    folder = _resolve_data_dir(data_dir)
    finish_interrupted_writes(folder)
    every = [f.name for s in SPLITS for f in (SPEC[s].x, SPEC[s].y, SPEC[s].meta)]
    for name in [*every, DATASET_INFO]:  # opening a FIFO would block
        if what := not_a_file(folder / name):
            raise PCamError(f"{shown(folder / name)} is {what}, not a file; move it out of the "
                            "data folder, or choose another --data-dir")
    names = [f.name for s in [*write, *remove] for f in (SPEC[s].x, SPEC[s].y, SPEC[s].meta)]
    for split in SPLITS:
        for file in (SPEC[split].x, SPEC[split].y):
            path = folder / file.name
            if path.exists() and not _written_here(path):
                raise PCamError(
                    f"{shown(path)} was not written by pcam (the official download or a "
                    "damaged file); refusing to overwrite it, even with --overwrite: choose "
                    "another --data-dir, or delete it yourself"
                )
    replaced = {s: _existing(folder, s) for s in write}
    replaced = {s: paths for s, paths in replaced.items() if paths}
    gone = [s for s in remove if _existing(folder, s)]
    kind = _kind(folder)
    if (replaced or gone) and not overwrite:
        if replaced and gone:
            what = f"{_names(replaced)} would be replaced and {_names(gone)} deleted"
        else:
            what = f"{_names(replaced or gone)} would be {'replaced' if replaced else 'deleted'}"
        raise PCamError(
            f"{shown(folder)} already holds {kind}: {what} by `{command}`; rerun with "
            "--overwrite to do that, or choose another --data-dir"
        )
    removed = [path for s in gone for path in _existing(folder, s)]
    return FolderChanges(folder, replaced, removed, kind, tuple(names),
                         (folder / DATASET_INFO).exists())


def _existing(folder: Path, split: str) -> list[Path]:
    paths = (folder / SPEC[split].x.name, folder / SPEC[split].y.name,
             folder / SPEC[split].meta.name)
    return [path for path in paths if path.exists()]


def _names(splits) -> str:
    splits = list(splits)
    return ", ".join(splits[:-1]) + " and " + splits[-1] if len(splits) > 1 else splits[0]


def _kind(folder: Path) -> str:
    """What the folder's files are, from its dataset.json, for messages."""
    try:
        info = json.loads((folder / DATASET_INFO).read_text())
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict):
        return "PCam files written by pcam"
    if info.get("source") == "synthetic":
        return f"synthetic patches, seed {info.get('seed', '?')}"
    if info.get("source") == "images":
        return f"imported patches, {info.get('label') or info.get('folder') or 'images'}"
    return "PCam files written by pcam"
