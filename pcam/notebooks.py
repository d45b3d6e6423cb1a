"""Run the notebooks headless (papermill): `pcam train`, `pcam notebooks` and the demo.

The notebooks hold the experiments' Keras recipes, so training from the
command line executes them: a `TrainConfig` becomes the notebook's
`parameters` (each field in UPPER_CASE) and the executed copy is written into
the run folder beside its record. A terminal sees one line per notebook and
one per epoch; every other output stays in the executed notebook.
"""

import ast
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from pcam.config import TrainConfig, field_names
from pcam.errors import PCamError, wrapped_message
from pcam.native_stderr import stderr_fd_to
from pcam.paths import PROJ_ROOT, display_path, results_dir
from pcam.runlock import LOCK, acquire_lock, lock_holder, release_lock

NOTEBOOKS = {
    "mobilenet": PROJ_ROOT / "notebooks" / "01_mobilenet_transfer.ipynb",
    "resnet50": PROJ_ROOT / "notebooks" / "02_resnet50_from_scratch.ipynb",
}
# Notebook parameters that are not run settings.
EXTRA_PARAMETERS = ("RESULTS_DIR", "COMPARE_WITH")
_PATH_FIELDS = ("data_dir", "weights")
_INLINE = "module://matplotlib_inline.backend_inline"  # figures shown in the notebook
# What reaches the terminal from a running notebook: Keras' epoch lines (verbose=2).
_EPOCH_LINE = re.compile(r"Epoch \d+/\d+|^\d+/\d+ - .*val_auc")


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


def notebook_for(model: str) -> Path:
    """The notebook that trains `model`."""
    if model not in NOTEBOOKS:
        raise PCamError(f"no notebook trains {model!r}: use one of {', '.join(NOTEBOOKS)}")
    return NOTEBOOKS[model]


def run_notebook(config: TrainConfig, *, results: str | Path | None = None,
                 compare_with: str | None = None, log_output: bool = False) -> Path:
    """Train `config` by executing its model's notebook; returns the executed copy.

    Args:
        config: the run's settings (validated); `config.run` names the folder.
        results: records folder; default `$PCAM_RESULTS_DIR` or `results/`.
        compare_with: the ResNet50 notebook's `COMPARE_WITH` run (None: skip).
        log_output: stream every cell output to the terminal, not just epochs.

    Returns:
        `results/<run>/<notebook>.ipynb`, executed.

    Raises:
        PCamError: a bad setting, or an error a user can fix raised inside the
            notebook (its message, without the notebook's traceback).
    """
    source = notebook_for(config.model)
    if config.run is None:
        raise PCamError("give the run a name (--run NAME)")
    known = notebook_parameters(source)
    values = config.to_dict()
    for name in _PATH_FIELDS:  # the kernel runs in the project root; no machine paths
        values[name] = _from_root(values[name])
    if values["weights"] is None:  # the notebook's for_model ignores None: say "none"
        values["weights"] = "none"
    values.update(results_dir=_from_root(str(results_dir(results))), compare_with=compare_with)
    parameters = {k.upper(): v for k, v in values.items() if k.upper() in known}
    missing = sorted(set(known) - set(parameters))
    if missing:
        raise PCamError(f"{source.name} has parameters that are not settings: {missing}")
    target = results_dir(results) / config.run / source.name
    if not _is_chief():  # other workers of a multi-worker run write nothing beside the record
        target = Path(tempfile.mkdtemp(prefix=f"pcam-worker-{config.run}-")) / source.name
    folder = target.parent
    created = not folder.exists()
    if not created:  # a run being trained: refuse before its notebook is overwritten
        release_lock(acquire_lock(folder))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"running {source.name} -> {display_path(target)}", flush=True)
    try:
        _execute(source, target, parameters, log_output)
    except BaseException as error:
        if created and not _has_history(folder):  # failed before anything of value
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(error, PCamError):
                raise PCamError(str(error).replace(
                    f"(in {display_path(target)})",
                    f"(in {display_path(source)}; the new run folder was removed)")) from None
        raise
    finally:
        if folder.exists() and lock_holder(folder / LOCK) is None:
            (folder / LOCK).unlink(missing_ok=True)  # left by the kernel, now ended
    return target


def _has_history(folder: Path) -> bool:
    """Whether `folder/record.json` has a trained epoch (then the folder is kept)."""
    try:
        return bool(json.loads((folder / "record.json").read_text()).get("history"))
    except (OSError, ValueError, AttributeError):
        return False


def run_notebooks(preset: str = "demo", *, models: tuple[str, ...] = ("mobilenet", "resnet50"),
                  overrides: dict[str, Any] | None = None, results: str | Path | None = None,
                  log_output: bool = False) -> list[Path]:
    """Train each of `models` with `preset` through its notebook, in order.

    Args:
        preset: a key of `pcam.presets.PRESETS` ("smoke", "demo", "subset", "full").
        models: notebooks to run (`NOTEBOOKS` keys); ResNet50 is compared with
            the MobileNet run when both run.
        overrides: settings applied last, by field name or notebook name
            (`{"data_dir": "data"}` or `{"DATA_DIR": "data"}`), to every model.
        results: records folder; default `$PCAM_RESULTS_DIR` or `results/`.
        log_output: stream every cell output.

    Returns:
        Paths of the executed notebooks.
    """
    given = {k.lower(): v for k, v in (overrides or {}).items()}
    results = given.pop("results_dir", results)
    unknown = sorted(set(given) - set(field_names()))
    if unknown:
        raise PCamError(f"unknown setting(s) {', '.join(unknown)}; known settings: "
                        f"{', '.join(field_names())}")
    configs = {model: TrainConfig.for_model(model, preset, **_applicable(model, given))
               for model in models}
    written = []
    for model, config in configs.items():
        other = configs.get("mobilenet") if model == "resnet50" else None
        written.append(run_notebook(config, results=results, log_output=log_output,
                                    compare_with=other.run if other else None))
    return written


def _is_chief() -> bool:
    if not os.environ.get("TF_CONFIG", "").strip():
        return True
    from pcam.train.distribute import is_chief  # imports TensorFlow: multi-worker runs only

    return is_chief()


def _applicable(model: str, given: dict) -> dict:
    from pcam.config import NOT_FOR_SCRATCH, NOT_FOR_TRANSFER, SCRATCH_ONLY

    skip = (*SCRATCH_ONLY[model], *NOT_FOR_SCRATCH) if model in SCRATCH_ONLY else NOT_FOR_TRANSFER
    return {k: v for k, v in given.items() if k not in skip}


def _abandoned_cell(record: logging.LogRecord) -> bool:
    """False for asyncio's "Task exception was never retrieved" about the cell an interrupt
    left running: its kernel was shut down on purpose, so its DeadKernelError is expected."""
    from nbclient.exceptions import DeadKernelError

    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, DeadKernelError)


def _execute(source: Path, target: Path, parameters: dict, log_output: bool) -> None:
    import papermill

    env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
           "MPLBACKEND": _INLINE}  # inherited by the kernel; inline: figures in the notebook
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    handler = _EpochLines(log_output)
    logger = logging.getLogger("papermill")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        # The kernel inherits fd 2: its TensorFlow start-up lines and warnings go to kernel.log.
        with stderr_fd_to(None if log_output else target.with_name("kernel.log")):
            papermill.execute_notebook(str(source), str(target), parameters=parameters,
                                       kernel_name="python3", cwd=str(PROJ_ROOT),
                                       progress_bar=False, log_output=True)
    except KeyboardInterrupt:  # papermill shut the kernel down: the cell it left fails late
        logging.getLogger("asyncio").addFilter(_abandoned_cell)
        raise
    except papermill.PapermillExecutionError as error:
        message = error.evalue if error.ename == "PCamError" else wrapped_message(error.evalue)
        if message:  # ours, or ours wrapped by TensorFlow (a corrupt chunk met by fit)
            raise PCamError(f"{message} (in {display_path(target)})") from None
        raise
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if target.exists():  # a failure here (a full disk) must not hide the first one
            with contextlib.suppress(OSError) if sys.exc_info()[0] else contextlib.nullcontext():
                tidy_executed(target)


class _EpochLines(logging.Handler):
    """Prints the epoch lines of papermill's streamed cell output (all lines if asked)."""

    def __init__(self, everything: bool):
        super().__init__(logging.INFO)
        self.everything = everything

    def emit(self, record: logging.LogRecord) -> None:
        for line in record.getMessage().splitlines():
            line = line.rstrip()
            if line and (self.everything or _EPOCH_LINE.search(line.strip())):
                print(f"  {line.strip()}", flush=True)


def _from_root(value: Any) -> Any:
    """A path given from the current folder, rewritten relative to the project root.

    The kernel runs in the project root; relative paths keep machine paths out
    of executed notebooks. Values that are not paths ("imagenet", None) pass.
    Links are kept, not resolved: `data/pcam-subset` stays that even when it
    links to a folder elsewhere, so no machine path reaches the notebook.
    """
    if not isinstance(value, str) or value in ("imagenet", "none", ""):
        return value
    return os.path.relpath(os.path.abspath(os.path.expanduser(value)), PROJ_ROOT)


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
