"""Which pretrained weights file a run started from: its SHA-256, for the run record.

`start_run` adds these fields to the record's "backbone" section (see
`pcam/core/record.schema.json`): a weights path is hashed as given; "imagenet"
(Keras' download) is hashed where Keras keeps it, `$KERAS_HOME/models/` (by
default `~/.keras/models/`, `/tmp/.keras/models/` where that is not writable),
when it is there at the start; random initialisation has no file.
"""

import os
from pathlib import Path

from pcam.core.fileio import file_digest

# keras.applications.MobileNet names its no-top file by width and input side.
_MOBILENET_ALPHAS = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}
_MOBILENET_SIDES = (128, 160, 192, 224)  # any other side loads the 224 file


def keras_weights_name(model: str, alpha: float, image_size: int) -> str | None:
    """The file name under which Keras caches a model's ImageNet no-top weights.

    Args:
        model: the backbone name, e.g. "mobilenet".
        alpha: the width multiplier.
        image_size: the backbone's input side in pixels.

    Returns:
        E.g. "mobilenet_5_0_224_tf_no_top.h5"; None for a backbone without one here.
    """
    if model != "mobilenet" or float(alpha) not in _MOBILENET_ALPHAS:
        return None
    side = image_size if image_size in _MOBILENET_SIDES else 224
    return f"mobilenet_{_MOBILENET_ALPHAS[float(alpha)]}_{side}_tf_no_top.h5"


def keras_cache_dir() -> Path:
    """The folder where Keras keeps downloaded weights, chosen as `keras.utils.get_file` does."""
    home = os.environ.get("KERAS_HOME")
    if home is None:
        home = (Path.home() if os.access(Path.home(), os.W_OK) else Path("/tmp")) / ".keras"
    home = Path(home).expanduser()
    if not os.access(home, os.W_OK):  # get_file then falls back to /tmp/.keras
        home = Path("/tmp/.keras")
    return home / "models"


def weights_provenance(config) -> dict:
    """The weights fields of the record's "backbone" section for a run's settings.

    Args:
        config: the run's `pcam.run.config.TrainConfig` (`model`, `alpha`,
            `image_size`, `weights`: "imagenet", None or a path).

    Returns:
        {"weights_file": the file's name or None, "weights_sha256": its SHA-256
        or None, and, when there is no digest, "weights_note" saying why}.
    """
    if config.weights is None:
        return {"weights_file": None, "weights_sha256": None,
                "weights_note": "random initialisation: no weights file"}
    if config.weights != "imagenet":
        path = Path(config.weights).expanduser()
        return {"weights_file": path.name, "weights_sha256": file_digest(path)}
    name = keras_weights_name(config.model, config.alpha, config.image_size)
    if name is None:
        return {"weights_file": None, "weights_sha256": None,
                "weights_note": f"Keras' ImageNet file name for {config.model} is not known "
                                "to pcam; not hashed"}
    cached = keras_cache_dir() / name
    if cached.is_file():
        return {"weights_file": name, "weights_sha256": file_digest(cached)}
    return {"weights_file": name, "weights_sha256": None,
            "weights_note": f"{name} was not in Keras' cache (~/.keras/models) when the run "
                            "started (Keras downloads it when the model is built); not hashed"}
