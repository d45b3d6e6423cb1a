"""Export a run's model with Keras' `model.export`, then score the artifact by its own runtime.

`export_run` writes the model as a TensorFlow SavedModel, an ONNX file or a
LiteRT (`.tflite`) file, opens it with the runtime made for it
(`pcam.evaluation.runtimes`) and predicts the run's test split with it, beside
the Keras model on the same patches: both are fed the uint8 patches of the
file-order pipeline `pcam evaluate` uses (the preprocessing is a layer inside
the model, so it is exported with it). It reports the largest absolute
difference of the probabilities and both ROC AUCs. A float export that
differs by more than `FLOAT_TOLERANCE` is refused; a quantised LiteRT file
(`quantize="float16"` or `"dynamic"`, dynamic-range int8 weights) is not held
to it and reports its size and AUC beside the float export's. A model saved
in mixed precision is exported, and compared, as its float32 copy: ONNX export
wants float32 layers, and ai-edge-litert cannot run a mixed LiteRT file.

Nothing half-written: the artifact is written to a temporary sibling of
`out`, checked, and only then renamed to `out`; a failure (an export error,
a parity failure, Ctrl-C) removes it. An existing `out` is kept unless
`overwrite`, and then only an earlier export of the same format is replaced.

TensorFlow and Keras are imported inside the functions, so that the command
line lists the formats without starting TensorFlow.

Reference:
    - [keras.Model.export](https://keras.io/api/models/model_saving_apis/export/)
"""

import contextlib
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from pcam.core.errors import PCamError
from pcam.core.fileio import temp_name
from pcam.evaluation.runtimes import PACKAGES, RUNTIME_NAMES, load_artifact, require

FORMATS = tuple(PACKAGES)  # saved_model, onnx, litert
KERAS_FORMATS = {"saved_model": "tf_saved_model", "onnx": "onnx", "litert": "litert"}
SUFFIXES = {"onnx": ".onnx", "litert": ".tflite"}  # a SavedModel is a folder
QUANTIZATIONS = ("float16", "dynamic")
FLOAT_TOLERANCE = 1e-4  # largest |p_export - p_keras| a float export may show


def export_run(run, fmt: str, out, *, quantize: str | None = None,
               max_samples: int | None = None, data_dir=None, overwrite: bool = False,
               batch_size: int | None = None) -> dict:
    """Export run `run`'s model to `out` and score it on the run's test split.

    Args:
        run: run name or folder ("results/NAME").
        fmt: "saved_model" (a folder), "onnx" (a `.onnx` file) or "litert"
            (a `.tflite` file).
        out: where the artifact goes; its folder is created when needed.
        quantize: LiteRT only: None (float32), "float16" (float16 weights) or
            "dynamic" (dynamic-range int8 weights).
        max_samples: score the first `max_samples` test patches (None: all).
        data_dir: data folder whose test split is scored; default the run's own
            (as `pcam evaluate` finds it).
        overwrite: replace an earlier export of the same format at `out`.
        batch_size: patches per batch (default: `pcam evaluate`'s).

    Returns:
        dict: format, quantize, out, bytes (the artifact's size on disk), n
        (patches scored), max_abs_diff, keras_auc, export_auc (None for a
        one-class split), keras_ips and export_ips (patches/s, the pipeline's
        reading included), export_seconds, trained_policy (a mixed precision
        policy the model was saved with: it is exported, and compared, as
        its float32 copy; else None), and with `quantize` float_bytes and
        float_auc (the float LiteRT file's).

    Raises:
        PCamError: a bad argument, `out` exists (without `overwrite`) or holds
            something else than an earlier export, a package the format needs
            is not installed (the one line says what to install), the run or its
            model or data cannot be found, or a float export differs from the
            Keras model by more than `FLOAT_TOLERANCE`. Nothing new is left at
            `out`.
    """
    from pcam.core import paths
    from pcam.data.h5read import open_split
    from pcam.evaluation.evaluate import own_data_dir
    from pcam.evaluation.predict import EVAL_BATCH, predict_split
    from pcam.run.records import RECORD, read_record, run_path

    out = check_out(fmt, out, quantize=quantize, overwrite=overwrite)
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples={max_samples!r}: use a whole number >= 1 or None")
    require(fmt)  # before minutes of work
    folder = run_path(run)
    if not (folder / RECORD).is_file():
        raise PCamError(f"no run record at {folder / RECORD}; give --run a run name "
                        f"(a folder of {paths.results_dir()}) or a run folder with a record")
    record = read_record(folder)
    if data_dir is None:
        try:
            data_dir = own_data_dir(record)
        except PCamError:  # its message speaks of evaluate's records
            raise PCamError(
                f"cannot find the data run {record['run']} trained on: its record names "
                f"{record['data']['dir']}, and {paths.data_dir()} ($PCAM_DATA_DIR, else data/) "
                "does not hold the same data; give the folder whose test split to score "
                "with --data-dir") from None
    data_dir = Path(data_dir)
    split = open_split(data_dir, "test")
    model, policy = _load_run_model(folder)
    batch_size = batch_size or EVAL_BATCH

    keras_pred = predict_split(model, split, max_samples=max_samples, batch_size=batch_size)
    with _staged(out, overwrite) as temp:
        start = time.perf_counter()
        export_model(model, fmt, temp, quantize=quantize)
        export_seconds = time.perf_counter() - start
        probs, seconds = predict_artifact(load_artifact(fmt, temp), split,
                                          max_samples=max_samples, batch_size=batch_size)
        summary = _compare(keras_pred, probs, fmt=fmt, quantize=quantize)
        summary.update(out=str(out), bytes=_size(temp), export_seconds=export_seconds,
                       export_ips=len(probs) / seconds, run=record["run"],
                       data_dir=paths.terminal_path(data_dir), trained_policy=policy)
        if quantize is not None:  # the float file, only to compare size and AUC with
            summary.update(_float_litert(model, split, keras_pred["y_true"],
                                         max_samples=max_samples, batch_size=batch_size))
        elif summary["max_abs_diff"] > FLOAT_TOLERANCE:
            raise PCamError(
                f"the {fmt} export of run {record['run']} differs from its Keras model by up "
                f"to {summary['max_abs_diff']:.2e} on {summary['n']} test patches (limit "
                f"{FLOAT_TOLERANCE:.0e}), so nothing was written to {out}: the export is "
                f"not faithful with these versions ({_versions(fmt)}); use another --format")
    return summary


def export_model(model, fmt: str, path, *, quantize: str | None = None) -> Path:
    """`model.export(path)` in format `fmt`, quietly; the path.

    Args:
        model: a Keras model (float32 weights).
        fmt: "saved_model", "onnx" or "litert" (`path` must then end in `.tflite`).
        path: where to write; nothing may be there.
        quantize: LiteRT only: None, "float16" or "dynamic" (see `export_run`).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r}: use one of {', '.join(FORMATS)}")
    if quantize is not None and (fmt != "litert" or quantize not in QUANTIZATIONS):
        raise ValueError(f"quantize={quantize!r} with fmt={fmt!r}: LiteRT takes "
                         f"{', '.join(QUANTIZATIONS)} or None")
    options = {}
    if quantize is not None:  # TensorFlow's LiteRT converter settings, passed on by Keras
        import tensorflow as tf

        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            options["target_spec"] = {"supported_types": [tf.float16]}
    with warnings.catch_warnings():  # Keras' numpy-2 patch of tf2onnx touches np.object
        warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
        model.export(str(path), format=KERAS_FORMATS[fmt], verbose=False, **options)
    return Path(path)


def predict_artifact(run_batch, split, *, batch_size: int,
                     max_samples: int | None = None) -> tuple:
    """Probabilities of a split's patches by an exported model, in file order, timed.

    Args:
        run_batch: `pcam.evaluation.runtimes.load_artifact`'s function.
        split: a `pcam.data.h5read.Split`.
        max_samples: the first `max_samples` patches (None: all).
        batch_size: patches per batch.

    Returns:
        (float32 probabilities (N,), seconds): the same batches of uint8 patches
        `pcam.evaluation.predict.predict_split` feeds the Keras model; the
        seconds after one untimed warm-up batch.
    """
    import numpy as np

    from pcam.data.pipeline import make_dataset

    ds = make_dataset(split, batch_size=batch_size, max_samples=max_samples, cache=False)
    run_batch(np.zeros([1, *ds.element_spec[0].shape[1:]], np.uint8))
    start = time.perf_counter()
    probs = [run_batch(images.numpy()) for images, _ in ds]  # the whole stream, never cut
    seconds = max(time.perf_counter() - start, 1e-9)
    return np.concatenate(probs).astype(np.float32), seconds


def check_out(fmt: str, out, *, quantize: str | None = None, overwrite: bool = False) -> Path:
    """`out` as a path, after checking the arguments; `PCamError` saying what is wrong.

    Refused: an unknown format or quantisation, a file name without the
    format's suffix (a SavedModel folder named like a file), a parent that is
    not a writable folder, an existing `out` without `overwrite`, and with it
    anything but an earlier export of the same format (never a folder of
    other files).
    """
    if fmt not in FORMATS:
        raise PCamError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    if quantize is not None and (fmt != "litert" or quantize not in QUANTIZATIONS):
        raise PCamError(f"--quantize {quantize} is for --format litert only, as "
                        f"{' or '.join(QUANTIZATIONS)}")
    out = Path(out)
    suffix = SUFFIXES.get(fmt)
    if suffix and out.suffix != suffix:
        raise PCamError(f"--out {out}: a {fmt} file is named *{suffix}, e.g. {out.stem}{suffix}")
    if not suffix and out.suffix.lower() in (*SUFFIXES.values(), ".keras", ".h5", ".pb"):
        raise PCamError(f"--out {out}: a SavedModel is a folder, not a {out.suffix} file; give a "
                        f"folder name, e.g. {out.with_suffix('')}")
    parent = out.parent
    if not parent.is_dir():  # checked before the test split is scored
        what = "a file, not a folder" if parent.exists() else "a folder that does not exist"
        raise PCamError(f"--out {out}: {parent} is {what}; give --out in an existing folder")
    if not os.access(parent, os.W_OK):
        raise PCamError(f"--out {out}: the folder {parent} is not writable; give --out in a "
                        "folder you can write to")
    if not os.path.lexists(out):
        return out
    if not overwrite:
        raise PCamError(f"--out {out} already exists; give another --out, or --overwrite "
                        "to replace it")
    earlier = (out / "saved_model.pb").is_file() if fmt == "saved_model" else (
        out.is_file() and not out.is_symlink())
    if not earlier:
        what = "a SavedModel folder (no saved_model.pb in it)" if fmt == "saved_model" else (
            "a file")
        raise PCamError(f"--out {out} is not {what}: --overwrite replaces only an earlier "
                        f"{fmt} export; move it away or give another --out")
    return out


@contextlib.contextmanager
def _staged(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling of `out` to export to (same suffix: Keras wants `*.tflite`),
    renamed to `out` when the block ends well and removed on any exception."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temp, old = temp_name(out), None
    try:
        yield temp
        if overwrite and out.is_dir() and not out.is_symlink():  # os.replace keeps no folder
            old = temp_name(out)
            os.replace(out, old)
        try:
            os.replace(temp, out)
        except OSError:
            if old is not None:  # put the earlier export back
                os.replace(old, out)
                old = None
            raise
    finally:
        for path in (temp, old):
            if path is not None and os.path.lexists(path):
                _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _load_run_model(folder: Path) -> tuple:
    """(the run's model as its float32 copy, the mixed policy it trained in or None).

    The one place the model is found: inference.keras, else checkpoints/best.keras.
    """
    from pcam.models import float32_copy, load_run_model

    return float32_copy(load_run_model(folder))


def _float_litert(model, split, y_true, *, max_samples, batch_size) -> dict:
    """The float LiteRT file's size and ROC AUC (written to a temporary folder)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pcam-export-") as folder:
        path = export_model(model, "litert", Path(folder) / "float32.tflite")
        probs, _ = predict_artifact(load_artifact("litert", path), split,
                                    max_samples=max_samples, batch_size=batch_size)
        return {"float_bytes": _size(path), "float_auc": _auc(y_true, probs)}


def _compare(keras_pred: dict, probs, *, fmt: str, quantize: str | None) -> dict:
    import numpy as np

    y_true, keras_probs = keras_pred["y_true"], keras_pred["y_prob"]
    if probs.shape != keras_probs.shape:
        raise RuntimeError(f"the {fmt} export gave {probs.shape[0]} probabilities for "
                           f"{keras_probs.shape[0]} patches")
    return {"format": fmt, "quantize": quantize, "n": int(len(probs)),
            "max_abs_diff": float(np.max(np.abs(probs.astype(np.float64) - keras_probs))),
            "keras_auc": _auc(y_true, keras_probs), "export_auc": _auc(y_true, probs),
            "keras_ips": keras_pred["inference"]["images_per_s"]}


def _auc(y_true, probs) -> float | None:
    from pcam.evaluation.metrics import evaluate_predictions

    return evaluate_predictions(y_true, probs, n_boot=0)["roc_auc"]  # None: one class


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _versions(fmt: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = ["tensorflow", "keras"] + [p for _, p in (*PACKAGES[fmt]["export"],
                                                       *PACKAGES[fmt]["score"])]
    found = []
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{name} {version(name)}")
    return ", ".join(found)


def format_summary(summary: dict) -> str:
    """`export_run`'s result as the lines `pcam export` prints."""
    def auc(value):
        return "undefined (one class)" if value is None else f"{value:.4f}"

    name = summary["format"] + (f" {summary['quantize']}" if summary["quantize"] else "")
    runtime = RUNTIME_NAMES[summary["format"]]
    lines = [
        f"export: run {summary['run']} -> {summary['out']} ({name}, "
        f"{summary['bytes'] / 1e6:.2f} MB) in {summary['export_seconds']:.1f} s",
        f"parity on {summary['n']:,} test patches of {summary['data_dir']}: max |p_export - "
        f"p_keras| = {summary['max_abs_diff']:.2e}"
        + (f" (limit {FLOAT_TOLERANCE:.0e}: ok)" if not summary["quantize"] else
           " (quantised: no limit)"),
        f"ROC AUC: keras {auc(summary['keras_auc'])}, {runtime} {auc(summary['export_auc'])}",
        f"patches/s (CPU here, reading included): keras {summary['keras_ips']:,.0f}, "
        f"{runtime} {summary['export_ips']:,.0f}",
    ]
    if summary.get("trained_policy"):
        lines.insert(1, f"the run's model computes in {summary['trained_policy']}: exported, "
                     "and compared, as its float32 copy (the same weights)")
    if summary["quantize"]:
        change = (None if None in (summary["export_auc"], summary["float_auc"]) else
                  summary["export_auc"] - summary["float_auc"])
        lines.append(
            f"vs the float32 LiteRT file: size {summary['bytes'] / 1e6:.2f} MB vs "
            f"{summary['float_bytes'] / 1e6:.2f} MB "
            f"({summary['bytes'] / summary['float_bytes']:.2f}x), ROC AUC "
            f"{auc(summary['export_auc'])} vs {auc(summary['float_auc'])}"
            + ("" if change is None else f" ({change:+.4f})"))
    return "\n".join(lines)
