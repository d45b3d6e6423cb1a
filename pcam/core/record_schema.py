"""The run record as JSON: its schema, validation, migration, reading and atomic writes.

Part of `pcam.run.records` (which re-exports `SCHEMA`, `validate`, `migrate`,
`load_record_file` and `write_json_atomic`), split out to keep both modules
small. The schema file is the field reference: every field has a
description saying what it means, its units and who writes it.
"""

import functools
import json
import math
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from pcam.core.errors import PCamError
from pcam.core.fileio import write_text

SCHEMA = 1
SCHEMA_FILE = "record.schema.json"  # beside this module (package data)

# Upgrades of older records, keyed by the version they upgrade FROM: each
# function takes a record of schema N and returns it as schema N + 1. Empty while
# SCHEMA is 1; a layout change bumps SCHEMA, adds one here and updates the file.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}


@functools.cache
def schema() -> dict:
    """The JSON Schema (draft 2020-12) of the current record layout, parsed once."""
    text = resources.files("pcam.core").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def _validator():
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema())


def to_json(value: Any) -> Any:
    """`value` as plain JSON data, as it would be written.

    numpy scalars and arrays become Python numbers and lists, tuples lists,
    paths POSIX strings, dict keys strings, and NaN and infinities None.
    """
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return value.as_posix()
    return value


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as JSON to `path` (its folder must exist) atomically; returns `path`.

    numpy scalars and arrays are converted, NaN and infinities become null
    (strict JSON); a value that cannot be serialised fails before any write.
    """
    text = json.dumps(to_json(data), indent=1, allow_nan=False) + "\n"
    return write_text(path, text)


def load_record_file(path: str | os.PathLike) -> dict:
    """The record in the file `path`, migrated to the current schema and validated.

    Raises:
        PCamError: naming the file, when it cannot be read, is not valid JSON,
            or is not a valid record (then also the bad field's JSON path).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise PCamError(f"{path} is not valid JSON ({error}); fix or delete that run") from error
    except OSError as error:
        raise PCamError(f"cannot read {path} ({error.strerror or error})") from error
    try:
        record = migrate(data)
        validate(record)
    except PCamError as error:
        raise PCamError(f"{path}: {error}") from None
    return record


def validate(record: Any) -> None:
    """Check `record` (as it would be written) against `pcam/core/record.schema.json`.

    Args:
        record: a run record, current schema (see `migrate` for older ones).

    Raises:
        PCamError: naming the record's run, the JSON path of the first bad
            field (e.g. `$.phases[0].status`) and what was expected there.
    """
    from jsonschema.exceptions import best_match

    data = to_json(record)
    error = best_match(_validator().iter_errors(data))
    if error is None:
        return
    run = data.get("run") if isinstance(data, dict) else None
    path, problem = _describe(error)
    raise PCamError(f"record of run {run!r} is invalid at {path}: {problem} "
                    f"(field reference: pcam/core/{SCHEMA_FILE})")


# Settings added to the schema-1 config after records were written, with the value
# those runs used (the schema lists them as optional; `migrate` fills them in).
ADDED_SETTINGS = {"bn_momentum": 0.99, "image_size": 96, "steps_per_epoch": None,
                  "planned_minutes": None}


def migrate(record: Any) -> dict:
    """Upgrade a record of an older schema to the current `SCHEMA`, in memory.

    Schema 1 is the current and only layout, so a schema-1 record comes back
    as it is, but for `ADDED_SETTINGS` missing from its config, filled in with
    the value the run used; later layout changes add a step to `MIGRATIONS`.

    Args:
        record: a parsed record.json.

    Returns:
        The record in the current layout (the same dict when already current).

    Raises:
        PCamError: when `record` is not a JSON object, has no integer "schema",
            or comes from a newer pcam (a schema above `SCHEMA`).
    """
    if not isinstance(record, dict):
        raise PCamError(f"a run record must be a JSON object, got {type(record).__name__}")
    version = record.get("schema")
    run = record.get("run")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PCamError(f"record of run {run!r} has no valid \"schema\" number "
                        f"(got {version!r}); it was not written by pcam.run.records")
    if version > SCHEMA:
        raise PCamError(f"record of run {run!r} has schema {version}, newer than this "
                        f"pcam's {SCHEMA}; update pcam to read it")
    while version < SCHEMA:
        record = MIGRATIONS[version](record)
        version += 1
        record["schema"] = version
    if isinstance(record.get("config"), dict):
        for name, value in ADDED_SETTINGS.items():
            record["config"].setdefault(name, value)
    return record


def _describe(error) -> tuple[str, str]:
    """(JSON path, what was wrong and what was expected) for a jsonschema error."""
    parts, instance, rule = list(error.absolute_path), error.instance, error.validator
    why = error.schema.get("description") if isinstance(error.schema, dict) else None
    if rule == "required":
        missing = next(k for k in error.validator_value if k not in instance)
        expected = error.schema.get("properties", {}).get(missing)
        reason = f"expected {_expected(expected)}" if expected is not None else why
        return _json_path([*parts, missing]), f"required field missing ({reason or 'see schema'})"
    if "propertyNames" in error.absolute_schema_path:  # a bad key: instance is the key
        return _json_path([*parts, instance]), f"unknown key (expected {_expected(error.schema)})"
    if rule == "not" and isinstance(error.validator_value, dict):
        names = [k for k in error.validator_value.get("required", []) if k in instance]
        return _json_path(parts + names[:1]), f"field not allowed ({why or 'see schema'})"
    if rule == "additionalProperties" and error.validator_value is False:
        extra = sorted(set(instance) - set(error.schema.get("properties", {})))
        return _json_path(parts + extra[:1]), "unknown field (not in the schema)"
    if rule == "type":
        return _json_path(parts), (f"expected {_expected(error.schema)}, "
                                   f"got {_json_type(instance)}")
    if rule in ("enum", "const"):
        return _json_path(parts), f"expected {_expected(error.schema)}, got {instance!r}"
    if rule in ("minItems", "maxItems"):
        bound = "at least" if rule == "minItems" else "at most"
        return _json_path(parts), (f"expected {bound} {error.validator_value} items, "
                                   f"got {len(instance)}")
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    return _json_path(parts), message


def _expected(sub: dict | bool) -> str:
    if not isinstance(sub, dict):
        return "nothing"
    if "$ref" in sub:
        name = sub["$ref"].rsplit("/", 1)[-1]
        target = schema()["$defs"].get(name, {})
        return _expected(target) if "$ref" not in target else name
    if "pattern" in sub:
        return f"a string matching {sub['pattern']}"
    if "enum" in sub:
        return "one of " + ", ".join(repr(v) for v in sub["enum"])
    if "const" in sub:
        return repr(sub["const"])
    kinds = sub.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds or []
    return " or ".join(kinds) or "a value"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                       (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name if not isinstance(value, dict | list) or len(value) else f"empty {name}"
    return type(value).__name__


def _json_path(parts: list) -> str:
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).isidentifier():
            out += f".{part}"
        else:
            out += f"[{json.dumps(str(part))}]"
    return out
