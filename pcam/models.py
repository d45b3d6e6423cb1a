"""Model builders: a small registry of `keras.applications` backbones.

Every model takes raw uint8 patches (96x96x3); the backbone's preprocessing is
a layer inside the model, so a saved checkpoint needs no outside code. Layer
names are fixed because Grad-CAM and the evaluation look them up:

    image (uint8) -> "preprocess" -> "backbone" -> "pool"
        -> "head_dropout_1" -> "head_dense_1" -> ... -> "head_dropout_{k+1}" -> "prediction"

`load_run_model` loads a run's model for inference: its `inference.keras`,
else its best checkpoint.

Reference:
    - [Transfer learning & fine-tuning](https://keras.io/guides/transfer_learning/)
"""

import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras

from pcam.core.errors import PCamError

PHASES = ("head", "finetune", "scratch")


@dataclass(frozen=True)
class Backbone:
    """One registry entry.

    Args:
        constructor: `keras.applications` function (called with `include_top=False`).
        preprocessing: factory of the layer that maps uint8 [0, 255] to the
            backbone's expected input; it becomes the layer named "preprocess".
        preprocessing_note: the preprocessing in words, for records and docs.
        recipe: "transfer" (head on frozen base, then fine-tune) or "scratch".
        finetune_layers: default number of top base layers unfrozen in phase 2.
        alphas: width multipliers offered; None when the backbone has none.
    """

    constructor: Callable[..., keras.Model]
    preprocessing: Callable[[], keras.layers.Layer]
    preprocessing_note: str
    recipe: str
    finetune_layers: int = 0
    alphas: tuple[float, ...] | None = None


def _minus_one_to_one() -> keras.layers.Layer:
    # Same as keras.applications.mobilenet.preprocess_input: x / 127.5 - 1.
    return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")


def _zero_to_one() -> keras.layers.Layer:
    return keras.layers.Rescaling(1 / 255, name="preprocess")


BACKBONES: dict[str, Backbone] = {
    "mobilenet": Backbone(
        keras.applications.MobileNet,
        _minus_one_to_one,
        "x / 127.5 - 1 (keras.applications.mobilenet.preprocess_input)",
        recipe="transfer",
        finetune_layers=24,  # the last 4 depthwise-separable blocks
        alphas=(0.25, 0.5, 0.75, 1.0),
    ),
    # From scratch any consistent scaling works; [0, 1] is the simplest. ImageNet
    # ResNet50 weights would need caffe-style BGR mean subtraction instead, so
    # "imagenet" is refused for this entry rather than silently mismatched.
    "resnet50": Backbone(
        keras.applications.ResNet50,
        _zero_to_one,
        "x / 255 (scaling to [0, 1]; from scratch, not caffe-style)",
        recipe="scratch",
    ),
}


def get_backbone(name: str) -> Backbone:
    """The registry entry `name`; `PCamError` listing the choices otherwise."""
    if name not in BACKBONES:
        raise PCamError(f"unknown model {name!r}; use one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def default_weights(name: str) -> str | None:
    """"imagenet" for transfer backbones, None for those trained from scratch."""
    return "imagenet" if get_backbone(name).recipe == "transfer" else None


def build_model(
    name: str = "mobilenet",
    *,
    alpha: float = 1.0,
    weights: str | None = "imagenet",
    head_units: tuple[int, ...] = (128,),
    dropout: float = 0.5,
    input_shape: tuple[int, int, int] = (96, 96, 3),
    image_size: int | None = None,
    bn_momentum: float | None = None,
) -> keras.Model:
    """Build a binary classifier on a registry backbone, not compiled: the model the
    notebooks build in their own cells (`tests/test_recipe.py` proves them identical:
    the full model config and, per phase with `set_phase`, the trainable weights and
    the frozen BatchNorm layers). The budget planner and the benchmarks use it.

    Args:
        name: key of `BACKBONES` ("mobilenet" or "resnet50").
        alpha: width multiplier, one of the backbone's `alphas` (1.0 when it has none).
        weights: "imagenet" (downloaded by Keras; needs internet), None (random
            initialisation) or a path to a weights file in Keras applications layout.
        head_units: sizes of the dense ReLU layers between pooling and the sigmoid.
        dropout: dropout rate before each dense layer, in [0, 1).
        input_shape: patch shape; the input dtype is always uint8.
        image_size: the backbone's input side; when larger than the patch, the
            preprocessed patch is upsampled (bilinear) to it (None: the patch size).
        bn_momentum: from scratch, the momentum of every BatchNorm layer of the
            backbone, as notebook 02 sets it (None: Keras' default).

    Returns:
        A `keras.Model` with one sigmoid output of shape (None, 1), float32.
    """
    backbone = get_backbone(name)
    size = image_size or input_shape[0]
    kwargs = _constructor_kwargs(name, backbone, alpha, weights, (size, size, input_shape[2]))
    base = _make_base(name, backbone, kwargs, weights)
    if bn_momentum is not None and backbone.recipe == "scratch":
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum

    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = backbone.preprocessing()(inputs)
    if size != input_shape[0]:
        x = keras.layers.Resizing(size, size, name="upsample")(x)
    # As notebook 01: training=False keeps the transfer base's BatchNorm in inference
    # mode, even once it is unfrozen for fine-tuning (Keras transfer-learning guide).
    # A base trained from scratch (notebook 02) needs its BatchNorm statistics to learn.
    x = base(x, training=False) if backbone.recipe == "transfer" else base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    for i, units in enumerate(head_units, start=1):
        x = keras.layers.Dropout(dropout, name=f"head_dropout_{i}")(x)
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense_{i}")(x)
    x = keras.layers.Dropout(dropout, name=f"head_dropout_{len(head_units) + 1}")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="prediction")(x)
    return keras.Model(inputs, outputs, name=f"pcam_{name}")


def set_phase(model: keras.Model, phase: str, *, finetune_layers: int | None = None) -> int:
    """Set which weights train; compile the model again afterwards.

    Args:
        model: a model from `build_model`.
        phase: "head" (backbone frozen), "finetune" (the top `finetune_layers`
            layers of the backbone trainable, BatchNorm kept frozen) or
            "scratch" (everything trainable).
        finetune_layers: layers to unfreeze in "finetune"; None uses the
            backbone's default from the registry.

    Returns:
        The number of trainable parameters after the change.
    """
    if phase not in PHASES:
        raise ValueError(f"phase={phase!r}: use one of {', '.join(PHASES)}")
    base = model.get_layer("backbone")
    if finetune_layers is None:
        finetune_layers = get_backbone(model.name.removeprefix("pcam_")).finetune_layers
    cut = len(base.layers) - finetune_layers if phase == "finetune" else 0
    base.trainable = phase != "head"
    # Set every layer explicitly: Keras does not undo an earlier phase's per-layer flags.
    for i, layer in enumerate(base.layers):
        bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = phase == "scratch" or (phase == "finetune" and i >= cut and not bn)
    return count_params(model.trainable_weights)


def count_params(weights: list) -> int:
    """Total number of values in a list of Keras variables."""
    return int(sum(keras.ops.size(w) for w in weights))


def _constructor_kwargs(name, backbone, alpha, weights, input_shape) -> dict:
    kwargs = {"include_top": False, "input_shape": tuple(input_shape), "name": "backbone"}
    if backbone.alphas is not None:
        if float(alpha) not in backbone.alphas:
            allowed = ", ".join(str(a) for a in backbone.alphas)
            raise PCamError(f"alpha={alpha}: {name} offers alpha {allowed}")
        kwargs["alpha"] = float(alpha)
    elif alpha != 1.0:
        raise PCamError(f"alpha={alpha}: {name} has no width multiplier; leave alpha at 1.0")
    if weights == "imagenet" and backbone.recipe == "scratch":
        raise PCamError(
            f"{name} is trained from scratch here (its preprocessing does not match ImageNet "
            f"weights); use --weights none (weights=None)"
        )
    if weights not in ("imagenet", None):
        _check_weights_file(str(weights))
    return kwargs


def _check_weights_file(path: str) -> None:
    """`PCamError` for a weights path that is no readable weights file, before Keras sees it."""
    file, choices = Path(path), "'imagenet' (download) or 'none' (random initialisation)"
    if not file.is_file():
        problem = ("path {} is a folder, not a file; give the weights file in it (e.g. "
                   "mobilenet_<alpha>_224_tf_no_top.h5)" if file.is_dir() else
                   "file {} does not exist; give a path to a file")
        raise PCamError(f"weights {problem.format(path)}, {choices}")
    if (file.suffix == ".keras" or not h5py.is_hdf5(file)) and not zipfile.is_zipfile(file):
        raise PCamError(f"weights file {path} is not an HDF5 weights file (no HDF5 signature: a "
                        "text or HTML page saved by mistake?); give Keras' no-top .h5 weights "
                        f"file, {choices}")
    try:
        if h5py.is_hdf5(file):
            h5py.File(file, "r").close()
    except OSError as error:  # h5py: "truncated file: eof = ..."
        raise PCamError(f"weights file {path} is damaged or incomplete (cut short while "
                        "downloading or copying?); download or copy it again") from error


def _make_base(name: str, backbone: Backbone, kwargs: dict, weights) -> keras.Model:
    try:
        with warnings.catch_warnings():
            # No-top ImageNet weights fit any input size; Keras warns below 128 px anyway.
            warnings.filterwarnings("ignore", message="`input_shape` is undefined or non-square",
                                    category=UserWarning)
            return backbone.constructor(weights=weights, **kwargs)
    except Exception as error:
        if weights == "imagenet" and _is_download_failure(error):
            raise PCamError(
                f"could not download the ImageNet weights for {name} ({error}). Offline, "
                f"pass a local no-top weights file of the same alpha with --weights PATH "
                f"(notebook: WEIGHTS = PATH; e.g. Keras' mobilenet_<alpha>_224_tf_no_top.h5 "
                f"copied from a machine with internet, where it lies in ~/.keras/models) or "
                f"train from random weights with --weights none"
            ) from error
        if weights not in ("imagenet", None) and isinstance(error, ValueError | OSError):
            raise PCamError(_mismatch_message(name, kwargs.get("alpha"), weights, error)) from error
        raise


def _is_download_failure(error: Exception) -> bool:
    text = str(error)
    return isinstance(error, OSError) or "URL fetch failure" in text or "download" in text.lower()


def _mismatch_message(name: str, alpha: float | None, path: str, error: Exception) -> str:
    file_alpha = _file_alpha(path) if alpha is not None else None
    if alpha is None:
        why = "; pass a weights file for this architecture or --weights none"
    elif file_alpha is not None and file_alpha != alpha:
        why = (f": the file looks like alpha={file_alpha:g}, the model has alpha={alpha:g}; "
               "pass the matching --alpha or the file made for this alpha")
    else:  # no MobileNet conv1 kernel of another width: some other file
        why = (f": it is not Keras' no-top {name} weights file for alpha={alpha:g} (.h5); "
               "give that file or --weights none")
    return f"weights file {path} does not fit {name}{why} ({error})"


def _file_alpha(path: str) -> float | None:
    # MobileNet's first convolution has 32 * alpha filters.
    try:
        with h5py.File(path, "r") as f:
            group = f["conv1"] if "conv1" in f else f["layers/conv1/vars"]
            kernels = []
            group.visititems(lambda _, obj: kernels.append(obj) if isinstance(
                obj, h5py.Dataset) and len(obj.shape) == 4 else None)
            return kernels[0].shape[-1] / 32 if kernels else None
    except (OSError, KeyError):
        return None


def check_weights(name: str, alpha: float = 1.0, weights: str | None = "imagenet") -> None:
    """Raise `PCamError` unless the backbone can be built with `weights`, before training.

    Builds the base once (about a second): "imagenet" is then downloaded, or
    found in Keras' cache, and a weights file is loaded, so that no notebook
    cell fails minutes later offline or on a file of another width.
    """
    backbone = get_backbone(name)
    kwargs = _constructor_kwargs(name, backbone, alpha, weights, (96, 96, 3))
    if weights is not None:
        _make_base(name, backbone, kwargs, weights)


def load_checkpoint(path: str | Path, advice: str, *, into: keras.Model | None = None,
                    name: str | None = None) -> keras.Model:
    """Load a `.keras` checkpoint: the whole model (not compiled), or its state `into` one.

    Raises `PCamError` naming the file (as `name`) and ending in `advice` when it is
    missing, damaged (not a whole .keras zip: Keras says "File not found") or does not fit.
    """
    path, name = Path(path), name or str(path)
    if not path.is_file():
        raise PCamError(f"{name} is missing; {advice}")
    try:
        if into is None:
            return keras.models.load_model(path, compile=False)
        with warnings.catch_warnings():  # Keras warns when it skips the optimizer
            warnings.simplefilter("ignore")
            into.load_weights(path)
        return into
    except Exception as error:
        if not zipfile.is_zipfile(path):
            raise PCamError(f"{name} is damaged or incomplete (not a complete .keras file: "
                            f"a kill or a full disk while it was copied?); {advice}") from error
        if not isinstance(error, ValueError | KeyError | TypeError | OSError):
            raise
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise PCamError(f"{name} could not be loaded ({reason}); {advice}") from error


INFERENCE_MODEL = "inference.keras"  # a run's inference-only model: weights, no optimizer
BEST_CHECKPOINT = "checkpoints/best.keras"  # as pcam.run.records.CHECKPOINTS["best"]


def run_model_file(run_dir: str | Path) -> Path:
    """The model file of a run folder: `inference.keras`, else `checkpoints/best.keras`.

    Raises:
        PCamError: neither file exists; the message names both and says how to
            train the run again.
    """
    folder = Path(run_dir)
    for name in (INFERENCE_MODEL, BEST_CHECKPOINT):
        if (folder / name).is_file():
            return folder / name
    run = folder.name
    raise PCamError(
        f"run {run} has no model: neither {folder / INFERENCE_MODEL} nor "
        f"{folder / BEST_CHECKPOINT} exists (checkpoints are not committed with a run); train "
        f"it again under a new name, from its settings (`python -m pcam settings --run {run} "
        f"--out {run}.toml`, then `python -m pcam train --config {run}.toml --run NEW-NAME`) or, "
        "for a published run, from its preset (`python -m pcam train --model MODEL --preset "
        "PRESET --run NEW-NAME`), and give --run NEW-NAME")


def save_inference_model(run_dir: str | Path) -> Path:
    """Write `run_dir/inference.keras`: the best checkpoint without its optimizer state.

    A third of the checkpoint's size (a MobileNet 0.5 of a few MB can be committed
    with its run), and the file `load_run_model` loads first. Written beside the
    target and renamed, so a kill leaves the old file or the new one.

    Raises:
        PCamError: the run has no loadable best checkpoint (named).
    """
    folder = Path(run_dir)
    model = load_checkpoint(folder / BEST_CHECKPOINT, "train the run again (another --run name)")
    target = folder / INFERENCE_MODEL
    partial = target.with_name(f".{target.stem}.partial.keras")  # Keras wants the suffix
    try:
        model.save(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def load_run_model(run_dir: str | Path) -> keras.Model:
    """A run's model for inference, not compiled (`run_model_file` says which file).

    It takes uint8 patches (96, 96, 3) and holds its own preprocessing, as
    every model of `build_model` does.

    Raises:
        PCamError: the run has no model file, or it is damaged or does not load
            (`load_checkpoint`); the message names the file.
    """
    path = run_model_file(run_dir)
    if path.name == INFERENCE_MODEL:
        advice = (f"restore it, or move it away to use {BEST_CHECKPOINT} when the run has one")
    else:
        advice = "restore it, or train the run again (another --run name)"
    return load_checkpoint(path, advice)


def float32_copy(model: keras.Model) -> tuple[keras.Model, str | None]:
    """(the model computing in float32, the policy it was saved with other than float32 or None).

    A run trained in mixed precision keeps its layers' mixed policy in the checkpoint;
    Scoring runs in float32 (`pcam.evaluation`), ONNX export wants float32 layers
    (Keras' note), and a mixed LiteRT file needs TensorFlow's Flex ops, which
    ai-edge-litert's interpreter lacks. The copy has the same weights (a mixed
    policy keeps its variables in float32); a float32 model is returned as it is.
    """
    found = set()

    def to_float32(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and node["config"]["name"] != "float32":
                found.add(node["config"]["name"])
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {k: ("float32" if k == "dtype" and v in ("float16", "bfloat16") else
                        to_float32(v)) for k, v in node.items()}
        return [to_float32(v) for v in node] if isinstance(node, list) else node

    config = to_float32(model.get_config())
    if not found:
        return model, None
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    kept = {layer.dtype_policy.name for layer in _layers(copy)
            if not isinstance(layer, keras.layers.InputLayer)} - {"float32"}
    if kept:
        raise RuntimeError(f"the float32 copy of model {model.name} kept policies {kept}")
    return copy, ", ".join(sorted(found))


def _layers(model):
    for layer in model.layers:
        yield layer
        yield from _layers(layer) if hasattr(layer, "layers") else ()
