"""Run the two notebooks headless with papermill, with named presets.

The notebooks' `parameters` cell holds the defaults; a preset overrides some of
them (`smoke` for CI, `demo` for README command 1, `full` for real PCam), and
the caller may override any further. papermill rejects nothing by itself, so
unknown names are checked here against the notebook's parameters cell.
"""

import ast
import json
import os
import re
from pathlib import Path
from typing import Any

from pcam.errors import PCamError
from pcam.paths import PROJ_ROOT, display_path

NOTEBOOKS = {
    "mobilenet": PROJ_ROOT / "notebooks" / "01_mobilenet_transfer.ipynb",
    "resnet50": PROJ_ROOT / "notebooks" / "02_resnet50_from_scratch.ipynb",
}

# Per preset: settings shared by both notebooks, then per-notebook ones.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # CI: tiny data, one short epoch per phase; checks that every cell runs.
    "smoke": {
        "both": {"MAX_SAMPLES": 64, "MAX_EVAL_SAMPLES": 64, "BATCH_SIZE": 16, "TTA": True},
        "mobilenet": {"RUN": "mobilenet-smoke", "EPOCHS": 2, "HEAD_EPOCHS": 1, "ALPHA": 0.25},
        # TTA stays on for MobileNet only: tracing 8 ResNet50s costs minutes on a CPU.
        "resnet50": {"RUN": "resnet50-smoke", "EPOCHS": 1, "TTA": False,
                     "COMPARE_WITH": "mobilenet-smoke"},
    },
    # README command 1: synthetic data, a few minutes on a 2-core CPU.
    "demo": {
        "both": {"MAX_EVAL_SAMPLES": 512, "BATCH_SIZE": 32, "TTA": True},
        "mobilenet": {"RUN": "mobilenet-demo", "EPOCHS": 4, "HEAD_EPOCHS": 2, "ALPHA": 0.5,
                      "MAX_SAMPLES": 2048},
        "resnet50": {"RUN": "resnet50-demo", "EPOCHS": 2, "MAX_SAMPLES": 512, "TTA": False,
                     "COMPARE_WITH": "mobilenet-demo"},
    },
    # Full PCam on a GPU: the notebooks' own defaults are the full settings.
    "full": {
        "both": {"PUBLISHED": True},
        "mobilenet": {"RUN": "mobilenet-full"},
        "resnet50": {"RUN": "resnet50-full", "COMPARE_WITH": "mobilenet-full"},
    },
}


_PATH_PARAMETERS = ("DATA_DIR", "RESULTS_DIR", "WEIGHTS")


def _from_root(value: Any) -> Any:
    """A path given from the current folder, rewritten relative to the project root.

    The kernel runs in the project root; relative paths keep machine paths out
    of executed notebooks. Values that are not existing paths or folders to be
    made ("imagenet", None) pass unchanged.
    """
    if not isinstance(value, str) or value in ("imagenet", "none", ""):
        return value
    return os.path.relpath(Path(value).resolve(), PROJ_ROOT)


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The names and default values assigned in the cell tagged `parameters`."""
    cells = json.loads(Path(path).read_text())["cells"]
    for cell in cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            return {
                node.targets[0].id: ast.literal_eval(node.value)
                for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            }
    raise PCamError(f"{path} has no cell tagged 'parameters'")


def run_notebooks(
    preset: str = "demo",
    *,
    out_dir: str | Path,
    models: tuple[str, ...] = ("mobilenet", "resnet50"),
    overrides: dict[str, Any] | None = None,
    log_output: bool = False,
) -> list[Path]:
    """Execute the notebooks top to bottom and write executed copies to `out_dir`.

    Args:
        preset: "smoke", "demo" or "full" (see `PRESETS`).
        out_dir: folder for the executed notebooks; it also becomes the
            notebooks' `RESULTS_DIR` unless `overrides` says otherwise. Relative
            paths (here and in `overrides`) are taken from the project root, so
            executed notebooks carry no machine paths.
        models: which notebooks to run, in order (`NOTEBOOKS` keys).
        overrides: parameter values applied last, to each notebook that has
            that parameter (e.g. `{"DATA_DIR": "data"}`); a name no notebook
            has is an error.
        log_output: stream cell outputs to the terminal.

    Returns:
        Paths of the executed notebooks.
    """
    import papermill

    if preset not in PRESETS:
        raise PCamError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    overrides = {"RESULTS_DIR": str(out_dir), **(overrides or {})}
    overrides = {k: _from_root(v) if k in _PATH_PARAMETERS else v for k, v in overrides.items()}
    for model in models:
        if model not in NOTEBOOKS:
            raise PCamError(f"unknown notebook {model!r}: use one of {', '.join(NOTEBOOKS)}")
    known = {model: notebook_parameters(NOTEBOOKS[model]) for model in models}
    unknown = sorted(set(overrides) - set().union(*known.values()))
    if unknown:
        raise PCamError(
            f"unknown notebook parameter(s) {', '.join(unknown)}; the notebooks take "
            f"{', '.join(sorted(set().union(*known.values())))}"
        )
    written = []
    for model in models:
        source = NOTEBOOKS[model]
        settings = {**PRESETS[preset]["both"], **PRESETS[preset].get(model, {})}
        settings.update(overrides)
        parameters = {k: v for k, v in settings.items() if k in known[model]}
        target = out_dir / source.name
        print(f"running {source.name} ({preset}) -> {target}", flush=True)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # inherited by the kernel
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(PROJ_ROOT),  # relative paths in parameters are from the project root
            progress_bar=False,
            log_output=log_output,
        )
        tidy_executed(target)
        written.append(target)
    return written


# TensorFlow's C++ start-up lines (oneDNN, CUDA probing, absl), which reach stderr
# before any Python setting can silence them.
_TF_LOG = re.compile(r"^([IWE]\d{4} |WARNING: All log messages before absl|To enable the following "
                     r"instructions|$)")


def tidy_executed(path: Path) -> None:
    """Make an executed notebook fit to commit.

    papermill's absolute input/output paths become project-relative, and stderr
    outputs made only of TensorFlow's C++ start-up logs are dropped; every
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
    nbformat.write(nb, path)


def _is_tf_log(output) -> bool:
    return (output.get("output_type") == "stream" and output.get("name") == "stderr"
            and all(_TF_LOG.match(line) for line in output.get("text", "").splitlines()))
