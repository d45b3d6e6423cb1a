"""Project folders, all derived from the repository root.

`PCAM_DATA_DIR` overrides the data folder and `PCAM_RESULTS_DIR` the results
folder; nothing else in the package hard-codes a path.
"""

import os
from pathlib import Path

PROJ_ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = PROJ_ROOT / "images"
README = PROJ_ROOT / "README.md"
# ImageNet MobileNet v1 (alpha 0.5, no top) shipped for the offline demo and
# tests; real runs use weights="imagenet". See pcam/assets/README.md.
DEMO_WEIGHTS = PROJ_ROOT / "pcam" / "assets" / "mobilenet_v1_0.5_imagenet_no_top.h5"


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The PCam data folder: `path`, else `$PCAM_DATA_DIR`, else `data/`."""
    if path is None:
        path = os.environ.get("PCAM_DATA_DIR") or PROJ_ROOT / "data"
    return Path(path).expanduser()


def results_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder of run records: `path`, else `$PCAM_RESULTS_DIR`, else `results/`."""
    if path is None:
        path = os.environ.get("PCAM_RESULTS_DIR") or PROJ_ROOT / "results"
    return Path(path).expanduser()


def display_path(path: str | os.PathLike) -> str:
    """`path` relative to the project when inside it, else its last two parts.

    Used for anything written into records and figures, so committed files
    carry no machine paths.
    """
    path = Path(path).resolve()
    try:
        return path.relative_to(PROJ_ROOT).as_posix()
    except ValueError:
        return "<external>/" + "/".join(path.parts[-2:])


def from_display_path(stored: str | None) -> Path | None:
    """The folder a `display_path` names, or None when it lay outside the project."""
    if not stored or stored.startswith("<external>"):
        return None
    return PROJ_ROOT / stored
