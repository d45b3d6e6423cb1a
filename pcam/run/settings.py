"""What each run setting takes, and how settings given as text are read.

Every `pcam.run.config.TrainConfig` field is checked by `check_setting` (its type,
and the range the libraries accept: Keras, TensorFlow, numpy); text from the
command line or `pcam notebooks -p NAME=VALUE` is read by `parse_setting` as
the field's type, never guessed. So a bad value is refused with one line that
names it, where it is parsed, before any kernel starts (issue 21, rule 7).
`pcam.core.mplbackend` does the same for the environment's `MPLBACKEND`.
Settings in a TOML file (a run's settings, a preset) are read by
`settings_values` the same way (`read_presets` for the preset files).
"""

import ast
import math
import numbers
import re
import tomllib
from pathlib import Path
from typing import Any

from pcam.core.errors import PCamError
from pcam.core.paths import PROJ_ROOT
from pcam.data.spec import AUGMENTATIONS

# The backbones (`pcam.run.config.BACKBONE_DEFAULTS` has one entry for each).
MODELS = ("mobilenet", "resnet50")
STRATEGIES = ("auto", "none", "mirrored", "multiworker")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
SCHEDULES = ("cosine", "plateau", "constant")

# The ranges the libraries accept. Counts (epochs, batches, patches, layers) stay
# below 2**31, so epochs x steps fits TensorFlow's int64 step counter and tf.data's
# int64 sizes; keras.utils.set_random_seed seeds numpy, which takes 0 to 2**32 - 1.
MAX_COUNT = 2**31 - 1
MAX_SEED = 2**32 - 1
# A head layer at most this wide (MobileNet has 1024 features, ResNet50 2048): wider
# dense layers are gigabytes of weights that no run here needs.
MAX_HEAD_UNITS = 8192
# MobileNet's widths (`pcam.models.BACKBONES["mobilenet"].alphas`); other backbones take 1.0.
MOBILENET_ALPHAS = (0.25, 0.5, 0.75, 1.0)
# Keras holds learning rates in float32: positive, normal and finite there.
FLOAT32_TINY, FLOAT32_MAX = 1.1754943508222875e-38, 3.4028234663852886e38
# How booleans may be written as text (-p published=false, -p tta=no).
BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "1": True,
                 "false": False, "no": False, "off": False, "0": False}

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_run_name(name: Any) -> str:
    """`name` when it is one safe folder name under `results/`, else `PCamError`.

    A run name is 1-100 letters, digits, `.`, `_` or `-`, starting with a letter or
    digit: no `/`, no `..`, never empty, so a run cannot write outside `results/`.
    """
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise PCamError(f"run={short_repr(name)}: a run name is 1-100 letters, digits, '.', '_' or "
                        "'-', starting with a letter or digit (it names one folder under "
                        "results/)")
    return name


# What each field takes. Whole numbers: (minimum, maximum, why); None is allowed for
# the optional ones. Real numbers: (accepted?, what to use); always finite.
_INTEGERS: dict[str, tuple[int, int, str]] = {
    "epochs": (1, MAX_COUNT, ""),
    "head_epochs": (0, MAX_COUNT, ""),
    "batch_size": (1, MAX_COUNT, ""),
    "max_samples": (1, MAX_COUNT, ""),
    "max_eval_samples": (1, MAX_COUNT, ""),
    "steps_per_epoch": (1, MAX_COUNT, ""),
    "image_size": (32, 512, ""),
    "finetune_layers": (0, MAX_COUNT, ""),
    "warmup_epochs": (0, MAX_COUNT, ""),
    "patience": (1, MAX_COUNT, ""),
    "seed": (0, MAX_SEED, " (numpy's seed range)"),
}
_LEARNING_RATE = (lambda v: FLOAT32_TINY <= v <= FLOAT32_MAX,
                  f"use a positive number from {FLOAT32_TINY:.2g} to {FLOAT32_MAX:.2g} "
                  "(Keras keeps it in float32)")
_NUMBERS: dict[str, tuple[Any, str]] = {
    "planned_minutes": (lambda v: v > 0, "use a positive number"),
    "alpha": (lambda v: v in MOBILENET_ALPHAS,
              "use 0.25, 0.5, 0.75 or 1.0 (MobileNet's widths; other models take 1.0)"),
    "dropout": (lambda v: 0 <= v < 1, "use a value in [0, 1)"),
    "learning_rate": _LEARNING_RATE,
    "finetune_learning_rate": _LEARNING_RATE,
    "bn_momentum": (lambda v: 0 < v < 1, "use a value in (0, 1)"),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "model": MODELS, "schedule": SCHEDULES, "strategy": STRATEGIES,
    "precision": PRECISIONS,
}
_FLAGS = ("tta", "deterministic", "published")
_PATHS = ("data_dir", "weights")
_OPTIONAL = ("run", "data_dir", "weights", "max_samples", "max_eval_samples",
             "steps_per_epoch", "planned_minutes")


def check_setting(name: str, value: Any) -> Any:
    """`value` as setting `name` holds it, or `PCamError` naming both.

    The type and the range the libraries accept (see `MAX_COUNT`, `MAX_SEED`,
    `MAX_HEAD_UNITS`, `FLOAT32_MAX`): whole numbers for counts (a bool or 3.0 is
    no count), finite numbers, one of the choices, True or False for flags, text
    for paths. Values are normalised: a whole number where a real one is expected
    becomes a float, lists become tuples, `augment="none"` and `weights="none"`
    become () and None. Settings that depend on each other (head_epochs <= epochs,
    a from-scratch model's fixed settings) are `TrainConfig`'s to check.

    Args:
        name: a `TrainConfig` field name.
        value: the value given (from Python, a notebook cell, or `parse_setting`).

    Returns:
        The normalised value.

    Raises:
        PCamError: an unknown `name`, or a value of the wrong type or range.
    """
    if name not in _KINDS:
        raise PCamError(f"unknown setting {name!r}; known settings: {', '.join(_KINDS)}")
    if value is None and name in _OPTIONAL:
        return None
    shown = short_repr(value)
    if name in _INTEGERS:
        low, high, why = _INTEGERS[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not (
                low <= value <= high):
            raise PCamError(f"{name}={shown}: use a whole number from {low} to {high}{why}"
                            + (", or None" if name in _OPTIONAL else ""))
        return int(value)
    if name in _NUMBERS:
        accepted, what = _NUMBERS[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise PCamError(f"{name}={shown}: use a number, e.g. 0.5 or 1e-3")
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float
            number = math.inf
        if not math.isfinite(number):
            raise PCamError(f"{name}={shown}: use a finite number (not inf or nan)")
        if not accepted(number):
            raise PCamError(f"{name}={shown}: {what}")
        return number
    if name in _CHOICES:
        if not isinstance(value, str) or value not in _CHOICES[name]:
            raise PCamError(f"{name}={shown}: use one of {', '.join(_CHOICES[name])}")
        return value
    if name in _FLAGS:
        if not isinstance(value, bool):
            raise PCamError(f"{name}={shown}: use True or False")
        return value
    if name == "run":
        return check_run_name(value)
    if name == "head_units":
        return _check_units(value)
    if name == "augment":
        return _check_augment(value)
    return _check_path(name, value)


def _check_path(name: str, value: Any) -> str | None:
    if name == "weights" and value in ("none", "None", ""):
        return None
    what = ("'imagenet', 'none' or a weights file" if name == "weights" else
            "a folder, or leave it unset for $PCAM_DATA_DIR or data/")
    if not isinstance(value, str) or not value or "\0" in value:
        raise PCamError(f"{name}={short_repr(value)}: give {what} as a path")
    return value


def _check_units(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise PCamError(f"head_units={short_repr(value)}: give a list of dense layer sizes, e.g. "
                        "[128] or [256, 64] ([] for none)")
    if not all(isinstance(u, numbers.Integral) and not isinstance(u, bool)
               and 1 <= u <= MAX_HEAD_UNITS for u in value):
        raise PCamError(f"head_units={short_repr(value)}: every size must be a whole number from 1 "
                        f"to {MAX_HEAD_UNITS}")
    return tuple(int(u) for u in value)


def _check_augment(value: Any) -> tuple[str, ...]:
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise PCamError(f"augment={short_repr(value)}: give augmentation names, e.g. "
                        f"'{','.join(AUGMENTATIONS)}', or 'none'")
    names = tuple(n.strip() for n in names if n.strip() not in ("", "none"))
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise PCamError(f"augment={short_repr(value)}: {short_repr(unknown[0])} is none of "
                        f"{', '.join(AUGMENTATIONS)}; use any of them, or 'none'")
    if len(set(names)) < len(names):
        raise PCamError(f"augment={short_repr(value)}: name each augmentation once")
    return names


def parse_setting(name: str, text: str) -> Any:
    """The value of setting `name` written as `text` (`-p NAME=VALUE`, a command-line option).

    Read by the field's type, not guessed: `-p data_dir=123` is the folder "123",
    `-p tta=no` is False, `-p epochs=1e20` is no whole number. The range is
    `check_setting`'s to check.

    Args:
        name: a `TrainConfig` field name.
        text: the text given. Whole and real numbers as Python writes them
            ("3", "1e-3", "inf" is read and then refused); flags as true/false,
            yes/no, on/off or 1/0; lists as "128,64" or "[128, 64]"; "none" (or
            "None") for an optional setting's default; a quoted Python string
            ('"data"') is unquoted.

    Returns:
        The value, of the field's type.

    Raises:
        PCamError: an unknown `name`, or text that is no value of its type.
    """
    if name not in _KINDS:
        raise PCamError(f"unknown setting {name!r}; known settings: {', '.join(_KINDS)}")
    kind, word = _KINDS[name], text.strip()
    if name in _OPTIONAL and word in ("none", "None"):
        return None
    if kind == "text":
        return _unquoted(text)
    if kind == "flag":
        if word.lower() not in BOOLEAN_WORDS:
            raise PCamError(f"{name}={short_repr(text)}: use true or false (or yes/no, on/off, "
                            "1/0)")
        return BOOLEAN_WORDS[word.lower()]
    if kind == "integer":
        if not _WHOLE.fullmatch(word):
            low, high, _ = _INTEGERS[name]
            raise PCamError(f"{name}={short_repr(text)}: use a whole number from {low} to {high}")
        return int(word)
    if kind == "number":
        try:
            return float(word)
        except ValueError:
            raise PCamError(f"{name}={short_repr(text)}: use a number, e.g. 0.5 or 1e-3") from None
    items = _listed(word)
    if items is not None or kind == "augment":  # a literal list; augment: "shift,hed" too
        return word if items is None else items
    parts = [i for i in re.split(r"[\s,]+", word) if i]  # head_units: "128,64" or "128 64"
    if not all(_WHOLE.fullmatch(i) for i in parts):
        raise PCamError(f"{name}={short_repr(text)}: give whole numbers, e.g. 128 or 256,64 "
                        "([] for none)")
    return tuple(int(i) for i in parts)


# Whole numbers as text; longer ones are beyond every range (and int() refuses 4,300 digits).
_WHOLE = re.compile(r"[+-]?\d{1,30}")


def short_repr(value: Any) -> str:
    """`repr(value)`, cut to stay one short line."""
    try:
        text = repr(value)
    except ValueError:  # an int of more than 4,300 digits
        return "<a number of over 4300 digits>"
    return text if len(text) <= 80 else text[:77] + "..."


def _unquoted(text: str) -> str:
    word = text.strip()
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":
        try:
            value = ast.literal_eval(word)
        except (ValueError, SyntaxError):
            return text
        return value if isinstance(value, str) else text
    return text


def _listed(word: str) -> tuple | None:
    """A Python list or tuple literal ("[128, 64]", "()") as a tuple, else None."""
    if not word or word[0] not in "[(":
        return None
    try:
        value = ast.literal_eval(word)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return tuple(value) if isinstance(value, list | tuple) else None


_KINDS: dict[str, str] = {
    **{n: "integer" for n in _INTEGERS}, **{n: "number" for n in _NUMBERS},
    **{n: "flag" for n in _FLAGS}, **{n: "text" for n in (*_CHOICES, "run", *_PATHS)},
    "head_units": "units", "augment": "augment",
}


# Settings that hold a path: relative to the project root in a file.
_PATHS = ("data_dir", "weights")


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
