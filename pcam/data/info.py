"""`dataset.json`: what a data folder written by `pcam synthetic` or `pcam import-images` holds.

`read_dataset_info` is the one reader of that file: `pcam check` and training
(the run record's "data.info") refuse the same files with the same message.
The file is checked against the record schema's `data.info`
(`pcam/core/record.schema.json`), so a file that a record could not hold is refused
before a run starts. The official download has no such file.
"""

import functools
import json
import os

from pcam.core.errors import PCamError
from pcam.core.paths import data_dir as _resolve_data_dir
from pcam.data.names import not_a_file, shown
from pcam.data.spec import DATASET_INFO
from pcam.data.staging import finish_interrupted_writes

OFFICIAL_INFO = {"source": "PCam, Zenodo record 2546921", "synthetic": False}


def read_dataset_info(data_dir: str | os.PathLike | None = None) -> dict:
    """What the data folder holds: the content of its `dataset.json`, checked.

    Returns `{"source": "PCam, Zenodo record 2546921", "synthetic": False}`
    when the file is absent (the official download has none).

    Raises:
        PCamError: naming the file: not a regular file, unreadable, not JSON,
            not an object, or a field of the wrong type.
    """
    folder = _resolve_data_dir(data_dir)
    finish_interrupted_writes(folder)
    path = folder / DATASET_INFO
    redo = ("fix or delete it (it is rewritten by `python -m pcam synthetic` and "
            "`python -m pcam import-images`)")
    if what := not_a_file(path):
        raise PCamError(f"{shown(path)} is {what}, not a file; {redo}")
    if not path.exists():
        return dict(OFFICIAL_INFO)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise PCamError(f"cannot read {shown(path)} ({reason}); {redo}") from None
    if not isinstance(info, dict):
        raise PCamError(f"{shown(path)} must hold a JSON object, got {type(info).__name__}; "
                        f"{redo}")
    if problem := _info_problem(info):
        raise PCamError(f"{shown(path)}: {problem}; {redo}")
    return info


def _info_problem(info: dict) -> str | None:
    """What in `info` the record schema's `data.info` refuses, in words; None if nothing."""
    from jsonschema.exceptions import best_match

    error = best_match(_info_validator().iter_errors(info))
    if error is None:
        return None
    where = "".join(f"[{part!r}]" for part in error.absolute_path) or "the object"
    message = error.message if len(error.message) <= 120 else error.message[:120] + "..."
    return f"{where} is invalid ({message})"


@functools.cache
def _info_validator():
    from jsonschema import Draft202012Validator

    from pcam.core.record_schema import schema

    return Draft202012Validator({"$defs": schema()["$defs"],
                                 "$ref": "#/$defs/data/properties/info"})
