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
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcam.core.errors import PCamError
from pcam.core.paths import PROJ_ROOT
from pcam.run.settings import MODELS, parse_setting

if TYPE_CHECKING:
    from pcam.run.config import TrainConfig

_PATHS = ("data_dir", "weights")
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


def read_presets(path: str | Path) -> dict[str, dict[str, Any]]:
    """The named settings in TOML file `path` (a preset, the recipes): keys at the top
    apply to every model ("both"), a `[model]` table to that model.

    Values are read as in a settings file; `TrainConfig` checks them where they are
    applied (`pcam.run.config.model_defaults`).

    Returns:
        {"both": {...}, model: {...}} for the models the file names.

    Raises:
        PCamError: naming the file: unreadable, not TOML, a table that is not a
            model, or a value that cannot be a setting.
    """
    path = Path(path)
    raw = read_toml(path)
    tables = {name: value for name, value in raw.items() if isinstance(value, dict)}
    unknown = sorted(set(tables) - set(MODELS))
    if unknown:
        raise PCamError(f"{path}: table(s) {', '.join(unknown)} are not models; a table "
                        f"holds one model's settings ({', '.join(MODELS)})")
    both = {name: value for name, value in raw.items() if name not in tables}
    return {"both": settings_values(path, both),
            **{model: settings_values(path, table) for model, table in tables.items()}}


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML document in `path`; an unreadable file or bad TOML is named."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise PCamError(f"cannot read settings file {path} ({error}); it must be a TOML file "
                        "of `name = value` lines (`python -m pcam settings --run RUN` writes "
                        "one)") from None


def settings_values(path: str | Path, raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` (`name = value` pairs of TOML file `path`) as setting values: text read
    as the command line reads it ("none", "2e-3"), lists as tuples, paths made
    absolute from the project root.

    Raises:
        PCamError: naming the file and the key: a table, a bad text value, or a
            path stored as outside the project.
    """
    values = {}
    for name, value in raw.items():
        try:
            if isinstance(value, dict):
                raise PCamError(f"{name}: a table, not a setting")
            if isinstance(value, str):
                value = parse_setting(name, value) if name != "model" else value
            if name in _PATHS and isinstance(value, str) and value != "imagenet":
                value = _project_path(value)
            values[name] = tuple(value) if isinstance(value, list) else value
        except PCamError as error:
            raise PCamError(f"settings file {path}: {error}") from None
    return values


def _project_path(stored: str) -> str:
    if stored.startswith("<external>"):
        raise PCamError(f"{stored!r} was outside the project where the file was written; "
                        "put the folder's real path in the file")
    path = Path(stored).expanduser()
    return str(path if path.is_absolute() else PROJ_ROOT / path)


def config_from_file(path: str | Path, preset: str | None = None,
                     **overrides: Any) -> "TrainConfig":
    """The run the file describes: its model's defaults, `preset`, the file, `overrides`."""
    from pcam.run.config import TrainConfig

    values = read_settings(path)
    model = values.pop("model")
    return TrainConfig.for_model(model, preset, **{**values, **overrides})
