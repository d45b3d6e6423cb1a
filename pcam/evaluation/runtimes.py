"""The runtimes that read an exported model, each the one its format is made for.

    format       exported by `model.export` as     scored by
    saved_model  tf_saved_model (TensorFlow)        tf.saved_model.load, "serving_default"
    onnx         onnx (needs tf2onnx and onnx)      onnxruntime
    litert       litert (TensorFlow's converter)    ai-edge-litert's Interpreter

Each artifact is fed uint8 patches (N, 96, 96, 3), as the Keras model is: its
preprocessing is a layer inside it, so the export holds it too.
`tf.lite.Interpreter` is not used: TensorFlow deprecates it for ai-edge-litert.
"""

import importlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pcam.core.environment import usable_cores
from pcam.core.errors import PCamError

# (module, pip package) each format needs: to export it, then to score it.
PACKAGES = {
    "saved_model": {"export": (), "score": ()},
    "onnx": {"export": (("tf2onnx", "tf2onnx"), ("onnx", "onnx")),
             "score": (("onnxruntime", "onnxruntime"),)},
    "litert": {"export": (), "score": (("ai_edge_litert", "ai-edge-litert"),)},
}
RUNTIME_NAMES = {"saved_model": "TensorFlow (tf.saved_model)", "onnx": "onnxruntime",
                 "litert": "LiteRT (ai-edge-litert)"}


def require(fmt: str) -> None:
    """Raise one `PCamError` line naming what to install when `fmt` cannot be exported
    and scored here: a package that is missing or does not import.

    Args:
        fmt: one of `PACKAGES` ("saved_model", "onnx", "litert").
    """
    missing, reasons = [], []
    for module, package in (*PACKAGES[fmt]["export"], *PACKAGES[fmt]["score"]):
        try:
            importlib.import_module(module)
        except ImportError as error:  # not installed, or built for other versions
            missing.append(package)
            reasons.append((str(error).strip().splitlines() or [module])[0][:160])
    if missing:
        raise PCamError(
            f"--format {fmt} needs {' and '.join(missing)}, which cannot be imported here "
            f"({'; '.join(reasons)}): install the versions requirements.txt pins, "
            f"`pip install -r requirements.txt` (or `pip install {' '.join(missing)}`)")


def load_artifact(fmt: str, path: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    """Open an exported model with its own runtime.

    Args:
        fmt: "saved_model", "onnx" or "litert".
        path: the SavedModel folder, the `.onnx` file or the `.tflite` file.

    Returns:
        A function from a uint8 batch (N, 96, 96, 3) to the probabilities, float32 (N,).
    """
    require(fmt)
    path = Path(path)
    if fmt == "saved_model":
        return _saved_model(path)
    if fmt == "onnx":
        return _onnx(path)
    if fmt == "litert":
        return _litert(path)
    raise ValueError(f"fmt={fmt!r}: use one of {', '.join(PACKAGES)}")


def _saved_model(path: Path):
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    (name,) = serve.structured_input_signature[1]  # the one input, by its name ("image")

    def run(batch: np.ndarray) -> np.ndarray:
        (out,) = serve(**{name: tf.constant(batch)}).values()
        return out.numpy().reshape(-1).astype(np.float32)

    return run


def _onnx(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: batch})[0].reshape(-1).astype(np.float32)

    return run


def _litert(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=usable_cores())
    given = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    shape = [None]

    def run(batch: np.ndarray) -> np.ndarray:
        if shape[0] != batch.shape:  # the batch dimension is dynamic (-1) in the file
            interpreter.resize_tensor_input(given, batch.shape)
            interpreter.allocate_tensors()
            shape[0] = batch.shape
        interpreter.set_tensor(given, np.ascontiguousarray(batch))
        interpreter.invoke()
        return interpreter.get_tensor(output).reshape(-1).astype(np.float32)

    return run
