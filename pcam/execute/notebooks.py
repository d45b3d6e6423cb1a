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

from pcam.core import paths
from pcam.core.errors import PCamError, wrapped_message
from pcam.core.native_stderr import stderr_fd_to
from pcam.core.paths import PROJ_ROOT, display_path, results_dir, terminal_path
from pcam.execute.executed_notebook import tidy_executed
from pcam.run.config import TrainConfig, check_setting, field_names, parse_setting
from pcam.run.runlock import (
    claim_folder,
    inherited_by_children,
    refuse_if_locked,
    release_lock,
    remove_claimed,
)

NOTEBOOKS = {
    "mobilenet": PROJ_ROOT / "notebooks" / "01_mobilenet_transfer.ipynb",
    "resnet50": PROJ_ROOT / "notebooks" / "02_resnet50_from_scratch.ipynb",
}
# Notebook parameters that are not run settings.
EXTRA_PARAMETERS = ("RESULTS_DIR", "COMPARE_WITH")
_PATH_FIELDS = ("data_dir", "weights")
_INLINE = "module://matplotlib_inline.backend_inline"  # figures shown in the notebook
# What reaches the terminal from a running notebook: Keras' epoch lines (verbose=2) and
# the dtype policy "auto" chose (pcam.train.precision).
_EPOCH_LINE = re.compile(r"Epoch \d+/\d+|^\d+/\d+ - .*val_auc|^precision auto: ")


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


def parse_parameters(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`pcam notebooks -p NAME=VALUE` pairs as settings, each read by its type and checked.

    NAME is a setting or its notebook parameter (`epochs` or `EPOCHS`); VALUE is
    read as that setting's type (`pcam.run.config.parse_setting`: `-p data_dir=123` is
    the folder "123", `-p tta=no` is False) and checked with the range the
    libraries accept, whichever models then take it, before any kernel starts.
    RESULTS_DIR is the records folder.

    Returns:
        {setting: value}, for `run_notebooks(overrides=...)`.

    Raises:
        PCamError: one line naming the setting: unknown, given twice, `model`
            (chosen with --models), or a value of the wrong type or range.
    """
    values: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for name, text in pairs:
        key = name.lower()
        if key in seen:
            raise PCamError(f"-p {seen[key]} and -p {name}={text} both set {key}; give it once")
        seen[key] = f"{name}={text}"
        if key == "model":
            raise PCamError(f"-p {name}={text!r}: the notebooks are chosen with --models "
                            f"({', '.join(NOTEBOOKS)}), not with -p")
        if key == "results_dir":
            folder = text.strip()
            if not folder or "\0" in folder:
                raise PCamError(f"-p {name}={text!r}: give the records folder as a path")
            values[key] = None if folder in ("none", "None") else folder
            continue
        values[key] = check_setting(key, parse_setting(key, text))
    return values


def run_notebook(config: TrainConfig, *, results: str | Path | None = None,
                 compare_with: str | None = None, log_output: bool = False,
                 skip_complete: bool = False) -> Path:
    """Train `config` by executing its model's notebook; returns the executed copy.

    Args:
        config: the run's settings (validated); `config.run` names the folder.
        results: records folder; default `$PCAM_RESULTS_DIR` or `results/`.
        compare_with: the ResNet50 notebook's `COMPARE_WITH` run (None: skip).
        log_output: stream every cell output to the terminal, not just epochs.
        skip_complete: a complete run is kept (one line) instead of refused.

    Returns:
        `results/<run>/<notebook>.ipynb`, executed.

    Raises:
        PCamError: a bad setting, a complete run, a run folder locked by a live
            process, or an error a user can fix raised inside the notebook (its
            message, without the notebook's traceback). The run folder's lock is
            taken before anything in it is read, and held (the kernel joins it)
            until the notebook ends; a refusal leaves the folder as it was, and
            a folder this call made is removed when nothing was trained in it.
    """
    source = notebook_for(config.model)
    if config.run is None:
        raise PCamError("give the run a name (--run NAME)")
    if config.data_dir is None:  # $PCAM_DATA_DIR relative to here, not to the kernel's folder
        config = config.replace(data_dir=str(paths.data_dir()))
    known = notebook_parameters(source)
    values = config.to_dict()
    for name in _PATH_FIELDS:  # the kernel runs in the project root; no machine paths
        values[name] = _from_root(values[name])
    if values["weights"] is None:  # random weights; WEIGHTS = None would mean the default
        values["weights"] = "none"
    values.update(results_dir=_from_root(str(results_dir(results))), compare_with=compare_with)
    parameters = {k.upper(): v for k, v in values.items() if k.upper() in known}
    missing = sorted(set(known) - set(parameters))
    if missing:
        raise PCamError(f"{source.name} has parameters that are not settings: {missing}")
    folder = results_dir(results) / config.run
    target = folder / source.name
    if not _is_chief():  # other workers of a multi-worker run write nothing beside the record
        _run_worker(source, config.run, parameters, log_output)
        return target
    lock, created = claim_folder(folder)  # before anything in the folder is read or written
    staged, moved = None, False
    try:
        if (refusal := _complete(folder, config.run)) is not None:
            if skip_complete:
                _check_same_settings(folder, config)
                print(f"{config.run} is complete; kept ({terminal_path(folder)})", flush=True)
                return target
            raise PCamError(refusal)
        from pcam.models import check_weights

        check_weights(config.model, config.alpha, config.weights)  # offline: before a kernel
        _check_capped_classes(config)
        _check_resumed_data(folder, config)  # under the lock, on the terminal
        for stale in folder.glob(f"{_STAGE}*"):  # left by a killed command; the lock is ours
            shutil.rmtree(stale, ignore_errors=True)
        # The kernel writes its notebook and log apart; they join the run folder only when
        # the run changed, so a refusal (a complete run, other settings) leaves it as it was.
        staged = Path(tempfile.mkdtemp(prefix=_STAGE, dir=folder)) / source.name
        before = _read_bytes(folder / "record.json")
        print(f"running {source.name} -> {terminal_path(target)}", flush=True)
        try:
            with _environ(inherited_by_children(lock)):  # the kernel joins this lock
                _execute(source, staged, parameters, log_output)
        finally:
            moved = _read_bytes(folder / "record.json") != before
            if moved:
                _place(staged, target)
            shutil.rmtree(staged.parent, ignore_errors=True)
    except BaseException as error:
        note = f"(in {terminal_path(target)})"
        if created and not _has_history(folder):  # failed before anything of value
            remove_claimed(folder, lock)
            note = f"(in {terminal_path(source)}; the new run folder was removed)"
        elif not moved:
            note = f"(in {terminal_path(source)}; {terminal_path(folder)} was left as it was)"
        if isinstance(error, PCamError) and staged is not None:
            where = terminal_path(staged)
            raise PCamError(str(error).replace(f"(in {where})", note).replace(
                where, terminal_path(target if moved else source))) from None
        raise
    finally:
        release_lock(lock)
    return target


_STAGE = ".notebook-"  # the folder a running notebook is written to, inside its run folder


def _complete(folder: Path, run: str) -> str | None:
    """The refusal for a run folder whose record says "complete", else None."""
    path = folder / "record.json"
    try:
        status = json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None  # no record, or a bad one: the kernel's start_run says what is wrong
    if status != "complete":
        return None
    return (f"run {run} is already complete ({path}); choose another --run name, or use "
            f"`python -m pcam evaluate --run {run}` to evaluate it again")


def _check_capped_classes(config: TrainConfig) -> None:
    """`max_samples` / `max_eval_samples` that leave train or valid one class are refused
    here, as the kernel's `start_run` would refuse them, before a kernel starts."""
    from pcam.data.h5read import BOTH_CLASSES, check_classes, open_split, read_labels

    for name in BOTH_CLASSES:
        cap = config.max_samples if name == "train" else config.max_eval_samples
        if cap is None:
            continue
        split = open_split(config.data_dir, name)
        setting = "max_samples" if name == "train" else "max_eval_samples"
        check_classes(name, read_labels(split)[:cap], split.y_path, f"{setting}={cap}")


def _check_resumed_data(folder: Path, config: TrainConfig) -> None:
    """A run being resumed must meet the data it started on: refused, or noted, here on
    the terminal before a kernel starts (the kernel checks again, into its log)."""
    from pcam.data.describe import check_resume_data
    from pcam.run.records import RECORD, load_record_file

    if not (folder / RECORD).is_file():
        return
    note = check_resume_data(load_record_file(folder / RECORD), paths.data_dir(config.data_dir))
    if note:
        print(f"note: {note}", flush=True)


def _check_same_settings(folder: Path, config: TrainConfig) -> None:
    """A complete run kept in place of a new one must have the settings asked for."""
    from pcam.run.records import record_settings

    stored = json.loads((folder / "record.json").read_text()).get("config") or {}
    wanted = record_settings(config.to_dict())
    changed = sorted(k for k in wanted if stored.get(k, wanted[k]) != wanted[k])
    if changed:
        raise PCamError(
            f"run {config.run} is complete with other settings ({', '.join(changed)}: "
            + "; ".join(f"{stored.get(k)!r} -> {wanted[k]!r}" for k in changed)
            + f"), so it cannot stand for this one; delete {folder} or start afresh "
            "(`python -m pcam demo --fresh`)")


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _place(staged: Path, target: Path) -> None:
    """Move an executed notebook (and its kernel.log) from its staging folder into place."""
    log = staged.with_name("kernel.log")
    if log.exists():
        os.replace(log, target.with_name("kernel.log"))
    if not staged.exists():
        return
    with contextlib.suppress(Exception):  # papermill's output_path names the staging folder
        import nbformat

        nb = nbformat.read(staged, as_version=4)
        nb.metadata.get("papermill", {})["output_path"] = display_path(target)
        nbformat.write(nb, staged)
    os.replace(staged, target)


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """Set environment variables (inherited by a kernel started meanwhile), then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_worker(source: Path, run: str, parameters: dict, log_output: bool) -> None:
    """Execute a non-chief worker's notebook in a temporary folder, removed afterwards.

    The kernel's temporary files (its own worker folder) go there too (TMPDIR),
    so nothing is left in the system's temporary folder, even by a killed kernel.
    """
    tempfile.gettempdir()  # this process keeps its own temporary folder
    with tempfile.TemporaryDirectory(prefix=f"pcam-worker-{run}-",
                                     ignore_cleanup_errors=True) as scratch:
        staged = Path(scratch) / source.name
        try:
            with _environ({"TMPDIR": scratch}):
                _execute(source, staged, parameters, log_output)
        except PCamError as error:
            raise PCamError(str(error).replace(terminal_path(staged), terminal_path(source))
                            ) from None


def _has_history(folder: Path) -> bool:
    """Whether `folder/record.json` has a trained epoch (then the folder is kept)."""
    try:
        return bool(json.loads((folder / "record.json").read_text()).get("history"))
    except (OSError, ValueError, AttributeError):
        return False


def run_notebooks(preset: str = "demo", *, models: tuple[str, ...] = ("mobilenet", "resnet50"),
                  overrides: dict[str, Any] | None = None, results: str | Path | None = None,
                  log_output: bool = False, skip_complete: bool = False) -> list[Path]:
    """Train each of `models` with `preset` through its notebook, in order.

    Args:
        preset: a preset of `pcam/experiments/presets/` ("smoke", "demo", "subset", "full").
        models: notebooks to run (`NOTEBOOKS` keys); ResNet50 is compared with
            the MobileNet run when both run.
        overrides: settings applied last, by field name or notebook name
            (`{"data_dir": "data"}` or `{"DATA_DIR": "data"}`), to every model.
        results: records folder; default `$PCAM_RESULTS_DIR` or `results/`.
        log_output: stream every cell output.
        skip_complete: keep complete runs (one line each) instead of refusing them.

    Returns:
        Paths of the executed notebooks.

    Raises:
        PCamError: before any model trains, when two models would share a run
            folder, or one's run is complete or locked by a live process.
    """
    given = {k.lower(): v for k, v in (overrides or {}).items()}
    results = given.pop("results_dir", results)
    unknown = sorted(set(given) - set(field_names()))
    if unknown:
        raise PCamError(f"unknown setting(s) {', '.join(unknown)}; known settings: "
                        f"{', '.join(field_names())}")
    configs = {model: TrainConfig.for_model(model, preset, **_applicable(model, given))
               for model in models}
    _check_runs(configs, results, skip_complete)  # every refusal before the first model trains
    written = []
    for model, config in configs.items():
        other = configs.get("mobilenet") if model == "resnet50" else None
        written.append(run_notebook(config, results=results, log_output=log_output,
                                    compare_with=other.run if other else None,
                                    skip_complete=skip_complete))
    return written


def _check_runs(configs: dict[str, TrainConfig], results, skip_complete: bool) -> None:
    """Refuse, before anything trains, runs that `run_notebook` would refuse later."""
    names = {}
    for model, config in configs.items():
        if config.run is None:
            raise PCamError(f"give the {model} run a name (-p run=NAME, one model at a time)")
        if config.run in names:
            raise PCamError(f"run={config.run!r} names one run folder for both {names[config.run]}"
                            f" and {model}; give each model its own run (one --models at a time "
                            "with -p run=NAME), or leave run unset")
        names[config.run] = model
    if not _is_chief():
        return
    for config in configs.values():
        folder = results_dir(results) / config.run
        refuse_if_locked(folder)
        if not skip_complete and (refusal := _complete(folder, config.run)) is not None:
            raise PCamError(refusal)


def _is_chief() -> bool:
    if not os.environ.get("TF_CONFIG", "").strip():
        return True
    from pcam.train.distribute import is_chief  # imports TensorFlow: multi-worker runs only

    return is_chief()


def _applicable(model: str, given: dict) -> dict:
    from pcam.run.config import NOT_FOR_SCRATCH, NOT_FOR_TRANSFER, SCRATCH_ONLY

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
        # The exception the cell raised (ename, evalue), never text found in its traceback.
        message = error.evalue if error.ename == "PCamError" else wrapped_message(error.evalue)
        if message:  # ours, or ours wrapped by TensorFlow (a corrupt chunk met by fit)
            raise PCamError(f"{message} (in {terminal_path(target)})") from None
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
