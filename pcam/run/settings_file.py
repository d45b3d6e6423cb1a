"""A run's settings as a TOML file: written from a config or a record, read back as one.

    python -m pcam settings --run mobilenet-subset --out my-run.toml   # from a record
    python -m pcam train --config my-run.toml --epochs 20               # rerun, one change

The file holds `TrainConfig` fields by name (`epochs = 12`, `augment = ["dihedral"]`,
`weights = "none"`), `model` among them. Paths in it are relative to the project
root, as records store them, so a file works from any folder; a path a record
stored as outside the project (`<external>/...`) must be edited to a real one.
Unknown keys and bad values are refused with the file's name, like any setting.
"""

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcam.core.errors import PCamError
from pcam.run.settings import read_toml, settings_values

if TYPE_CHECKING:
    from pcam.run.config import TrainConfig

_HEADER = ("# pcam run settings (pcam.run.config.TrainConfig fields; `python -m pcam train\n"
           "# --help` says what each takes). Rerun with: python -m pcam train --config THIS_FILE\n")


def settings_text(settings: dict[str, Any]) -> str:
    """TOML text of `settings` (a `TrainConfig.to_dict()` or a record's `config`).

    None is written as "none" where the setting reads "none" as None (weights:
    random initialisation) and left out elsewhere (None is then the default).
    Settings the model does not take (a from-scratch model's fine-tune rate) are
    left out, as its notebook leaves them out.
    """
    from pcam.run.config import NOT_FOR_SCRATCH, NOT_FOR_TRANSFER, SCRATCH_ONLY, TrainConfig

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    skip = NOT_FOR_SCRATCH if settings.get("model") in SCRATCH_ONLY else NOT_FOR_TRANSFER
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise PCamError(f"unknown setting(s) {', '.join(unknown)}; known settings: "
                        f"{', '.join(names)}")
    lines = []
    for name in names:
        if name not in settings or name in skip:
            continue
        value = settings[name]
        if value is None:
            if name == "weights":
                lines.append(f'{name} = "none"')
            continue
        lines.append(f"{name} = {_toml_value(value)}")
    return _HEADER + "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise PCamError(f"cannot write {value!r} to a settings file")


def write_settings(path: str | Path, settings: dict[str, Any]) -> Path:
    """Write `settings` to `path` atomically (see `settings_text`)."""
    from pcam.core.fileio import write_text

    return write_text(path, settings_text(settings))


def read_settings(path: str | Path) -> dict[str, Any]:
    """The settings in TOML file `path`, each checked, with `model` among them.

    Raises:
        PCamError: naming the file: unreadable, not TOML, no `model`, an unknown
            key, a value of the wrong type or range, or a path stored as outside
            the project.
    """
    from pcam.run.config import TrainConfig

    path = Path(path)
    raw = read_toml(path)
    if "model" not in raw:
        raise PCamError(f"settings file {path} has no `model = ...` line; add the model "
                        "(mobilenet or resnet50)")
    values = settings_values(path, raw)
    try:  # every value checked, unknown keys refused
        TrainConfig.for_model(values["model"], **{k: v for k, v in values.items()
                                                  if k != "model"})
    except PCamError as error:
        raise PCamError(f"settings file {path}: {error}") from None
    return values


def config_from_file(path: str | Path, preset: str | None = None,
                     **overrides: Any) -> "TrainConfig":
    """The run the file describes: its model's defaults, `preset`, the file, `overrides`."""
    from pcam.run.config import TrainConfig

    values = read_settings(path)
    model = values.pop("model")
    return TrainConfig.for_model(model, preset, **{**values, **overrides})
