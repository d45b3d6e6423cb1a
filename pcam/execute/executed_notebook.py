"""An executed notebook made fit to commit: no machine paths, no TensorFlow start-up logs."""

import re
from pathlib import Path

from pcam.core.paths import display_path

# TensorFlow's C++ start-up lines (oneDNN, CUDA probing, absl), which reach stderr
# before any Python setting can silence them.
_TF_LOG = re.compile(r"^([IWE]\d{4} |WARNING: All log messages before absl|To enable the following "
                     r"instructions|$)")


def tidy_executed(path: Path) -> None:
    """Make an executed notebook fit to commit.

    papermill's absolute input/output paths become project-relative, stderr
    outputs made only of TensorFlow's C++ start-up logs are dropped, and a
    warning's location in a cell (`/tmp/ipykernel_123/456.py:1: `, a machine
    path that names nothing a reader can open) is cut from its line; every
    other output stays as the run produced it.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = display_path(meta[key])
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not _is_tf_log(o)]
            for output in cell.outputs:
                if output.get("output_type") == "stream" and output.get("name") == "stderr":
                    output["text"] = _CELL_LOCATION.sub("", output.get("text", ""))
    nbformat.write(nb, path)


_CELL_LOCATION = re.compile(r"^\S*/ipykernel_\d+/\d+\.py:\d+: ", flags=re.M)


def _is_tf_log(output) -> bool:
    return (output.get("output_type") == "stream" and output.get("name") == "stderr"
            and all(_TF_LOG.match(line) for line in output.get("text", "").splitlines()))
