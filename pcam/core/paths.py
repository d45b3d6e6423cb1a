"""Project folders, all derived from the repository root.

`PCAM_DATA_DIR` overrides the data folder, `PCAM_RESULTS_DIR` the results
folder and `PCAM_CACHE_DIR` the per-machine cache; nothing else in the package
hard-codes a path.
"""

import os
from pathlib import Path

from pcam.core.errors import PCamError

PROJ_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = PROJ_ROOT / "images"
README = PROJ_ROOT / "README.md"
DOCS_DIR = PROJ_ROOT / "docs"
# ImageNet MobileNet v1 (alpha 0.5, no top) shipped for the offline demo and
# tests; real runs use weights="imagenet". See pcam/assets/README.md.
DEMO_WEIGHTS = PROJ_ROOT / "pcam" / "assets" / "mobilenet_v1_0.5_imagenet_no_top.h5"


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The PCam data folder: `path`, else `$PCAM_DATA_DIR`, else `data/`.

    The folder need not exist yet (the writers create it).

    Raises:
        PCamError: the folder, or a folder above it, is a file.
    """
    env = os.environ.get("PCAM_DATA_DIR")
    folder = Path(path if path is not None else env or PROJ_ROOT / "data").expanduser()
    blocker = _file_in_the_way(folder)
    if blocker is None:
        return folder
    kind = _kind(blocker)
    what = f"{blocker} is {kind}, not a folder"
    if path is not None:
        where = f"data folder {folder}: " if blocker != folder else ""
        raise PCamError(f"{where}{what}; give --data-dir (DATA_DIR in a notebook) a folder "
                        "(it is created if missing)")
    if env:
        what = what if blocker != folder else f"is {kind}, not a folder"
        raise PCamError(f"PCAM_DATA_DIR={env}{': ' if blocker != folder else ' '}{what}; set "
                        "PCAM_DATA_DIR to a folder (it is created if missing) or unset it")
    raise PCamError(f"{blocker} is {kind}, not the data folder; move it or set PCAM_DATA_DIR")


def _kind(path: Path) -> str:
    """"a file", "a FIFO", "a socket" or "a device": what stands where a folder should."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return "a file"
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "a file"


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing part of `folder` when it is not a folder, else None."""
    for part in (folder, *folder.parents):
        try:
            if part.exists():
                return None if part.is_dir() else part
        except OSError:  # unreadable parent: let the later open or mkdir say so
            return None
    return None


def results_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder of run records: `path`, else `$PCAM_RESULTS_DIR`, else `results/`."""
    if path is None:
        path = os.environ.get("PCAM_RESULTS_DIR") or PROJ_ROOT / "results"
    return Path(path).expanduser()


def cache_dir() -> Path:
    """Per-machine cache (measured precision choices): `$PCAM_CACHE_DIR`, else
    `$XDG_CACHE_HOME/pcam`, else `~/.cache/pcam`. Deleting it only costs re-measuring."""
    path = os.environ.get("PCAM_CACHE_DIR")
    if not path:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pcam"
    return Path(path).expanduser()


def display_path(path: str | os.PathLike) -> str:
    """`path` relative to the project when inside it, else its last two parts.

    Used for anything written into records and figures, so committed files
    carry no machine paths.
    """
    # a link inside the project (data/pcam-subset -> elsewhere) keeps its
    # project name, so the report can find the folder again from the record
    for candidate in (Path(os.path.abspath(path)), Path(path).resolve()):
        try:
            return candidate.relative_to(PROJ_ROOT).as_posix()
        except ValueError:
            continue
    tail = [part for part in candidate.parts[-2:] if part != candidate.anchor]
    return "<external>/" + "/".join(tail)


def terminal_path(path: str | os.PathLike) -> str:
    """`path` as messages show it: relative to the project inside it (as `display_path`),
    else its absolute path, so a user can find it (committed files say `<external>`)."""
    shown = display_path(path)
    return os.path.abspath(path) if shown.startswith("<external>") else shown


def from_display_path(stored: str | None) -> Path | None:
    """The folder a `display_path` names, or None when it lay outside the project."""
    if not stored or stored.startswith("<external>"):
        return None
    return PROJ_ROOT / stored
