"""Run settings: one typed object, validated, with unknown keys rejected.

`TrainConfig` is the one source of defaults. The command line, the notebooks'
`parameters` cells (the same names in UPPER_CASE) and the presets all read it:

- `TrainConfig` field defaults are the generic ones;
- `BACKBONE_DEFAULTS` holds what differs per backbone (the transfer recipe
  trains a head first and starts from ImageNet weights; ResNet50 trains from
  scratch, all layers at once), applied by `TrainConfig.for_model`;
- `pcam.presets.PRESETS` are named sets of overrides (`smoke` for CI, `demo`
  for README command 1, `subset` for the published runs, `full` for real PCam),
  applied on top.

A typo in a setting is an error, never a silently ignored value.
"""

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from pcam.data.spec import AUGMENTATIONS
from pcam.errors import PCamError
from pcam.presets import PRESETS

__all__ = ["AUGMENTATIONS", "BACKBONE_DEFAULTS", "PRECISIONS", "PRESETS", "SCHEDULES",
           "STRATEGIES", "TrainConfig"]

STRATEGIES = ("auto", "none", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SCHEDULES = ("cosine", "plateau", "constant")

# What differs per backbone; everything else is a `TrainConfig` field default.
# The field defaults are the transfer recipe's (MobileNet, the default model): 2 head
# epochs on the frozen ImageNet base, then fine-tuning of the top blocks.
BACKBONE_DEFAULTS: dict[str, dict[str, Any]] = {
    "mobilenet": {},
    # From scratch: random weights, every layer from the first step, warm-up + cosine.
    "resnet50": {"epochs": 20, "head_epochs": 0, "weights": None},
}

# Settings a from-scratch model does not take (its notebook has no such parameter).
SCRATCH_ONLY: dict[str, dict[str, Any]] = {
    "resnet50": {"head_epochs": 0, "alpha": 1.0, "weights": None},
}
NOT_FOR_SCRATCH = ("finetune_learning_rate", "finetune_layers", "image_size")
NOT_FOR_TRANSFER = ("bn_momentum",)  # the pretrained base's BatchNorm stays frozen

@dataclass
class TrainConfig:
    """Everything that defines a training run; saved whole in its record.

    Args:
        model: backbone name from `pcam.models.BACKBONES` ("mobilenet", "resnet50", ...).
        run: name of the run folder under `results/`; default "<model>-<UTC time>".
        data_dir: PCam-layout data folder; default `$PCAM_DATA_DIR` or `data/`.
        epochs: total epochs, >= 1 (for transfer: head epochs + fine-tune epochs).
        head_epochs: epochs of phase 1 (new head on a frozen base); 0 fine-tunes
            from the start, `epochs` trains the head only; from-scratch models take 0.
        batch_size: batch per replica, >= 1 (the whole batch on one device; with R
            replicas the global batch is R times larger, see `pcam.train.distribute`).
        max_samples: use at most this many training patches (None: all).
        max_eval_samples: use at most this many valid/test patches (None: all).
        steps_per_epoch: train this many batches an epoch, drawn anew each epoch
            from every training patch (None: one whole pass). The budget planner
            sets it only when a budget buys less than one whole epoch.
        planned_minutes: the training minutes the budget planner predicted for
            these epochs (None: not planned); the record puts the realised
            minutes beside them.
        alpha: MobileNet width multiplier (0.25, 0.5, 0.75 or 1.0).
        image_size: side of the pretrained backbone's input, 32-512; above 96 the
            patch is upsampled (bilinear) inside the model, nearer ImageNet's scale.
        weights: "imagenet", None (random init) or a path to a weights file.
        head_units: sizes of the new dense layers before the sigmoid.
        dropout: dropout rate before each dense layer, in [0, 1).
        learning_rate: phase-1 (or from-scratch) peak learning rate, > 0.
        finetune_learning_rate: phase-2 learning rate, 10-100x below learning_rate
            (default 10x).
        finetune_layers: how many top layers of the base to unfreeze in phase 2
            (BatchNorm layers stay frozen); 24 is MobileNet's last four blocks.
        schedule: "cosine" (with warm-up), "plateau" or "constant".
        warmup_epochs: linear warm-up epochs for the cosine schedule.
        bn_momentum: momentum of a from-scratch backbone's BatchNorm moving statistics,
            in (0, 1); Keras' 0.99 needs a few hundred steps to catch up, so short
            runs (the demo) use less. Transfer runs keep BatchNorm frozen.
        patience: early-stopping patience in epochs, on validation AUC.
        augment: training augmentations, any of `AUGMENTATIONS` (default: all).
        tta: also evaluate with 8-fold dihedral test-time augmentation.
        seed: seed for weights, shuffling and augmentation.
        deterministic: switch on TensorFlow op determinism (slower).
        strategy: tf.distribute strategy, one of `STRATEGIES`.
        precision: Keras dtype policy, one of `PRECISIONS`.
        published: whether `pcam report` puts this run in the README table.
    """

    model: str = "mobilenet"
    run: str | None = None
    data_dir: str | None = None
    epochs: int = 12
    head_epochs: int = 2
    batch_size: int = 64
    max_samples: int | None = None
    max_eval_samples: int | None = None
    steps_per_epoch: int | None = None
    planned_minutes: float | None = None
    alpha: float = 1.0
    image_size: int = 96
    weights: str | None = "imagenet"
    head_units: tuple[int, ...] = (128,)
    dropout: float = 0.5
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-4
    finetune_layers: int = 24
    schedule: str = "cosine"
    warmup_epochs: int = 1
    bn_momentum: float = 0.99
    patience: int = 5
    augment: tuple[str, ...] = AUGMENTATIONS
    tta: bool = True
    seed: int = 0
    deterministic: bool = False
    strategy: str = "auto"
    precision: str = "float32"
    published: bool = False

    def __post_init__(self) -> None:
        if self.weights in ("none", "None", ""):
            self.weights = None
        self.head_units = tuple(int(u) for u in self.head_units)
        if isinstance(self.augment, str):
            self.augment = tuple(a for a in self.augment.split(",") if a and a != "none")
        self.augment = tuple(self.augment)
        _check_choice("model", self.model, tuple(BACKBONE_DEFAULTS))
        if self.run is not None:
            check_run_name(self.run)
        _check_int("seed", self.seed, 0)
        _check_int("epochs", self.epochs, 1)
        _check_int("head_epochs", self.head_epochs, 0)
        if self.head_epochs > self.epochs:
            raise PCamError(f"head_epochs={self.head_epochs} exceeds epochs={self.epochs}")
        if self.model in SCRATCH_ONLY:
            for name, value in SCRATCH_ONLY[self.model].items():
                if getattr(self, name) != value:
                    raise PCamError(f"{name}={getattr(self, name)!r}: {self.model} trains from "
                                    f"scratch, so {name} must stay {value!r}")
        _check_int("batch_size", self.batch_size, 1)
        if self.max_samples is not None:
            _check_int("max_samples", self.max_samples, 1)
        if self.max_eval_samples is not None:
            _check_int("max_eval_samples", self.max_eval_samples, 1)
        if self.steps_per_epoch is not None:
            _check_int("steps_per_epoch", self.steps_per_epoch, 1)
        if self.planned_minutes is not None:
            _check_float("planned_minutes", self.planned_minutes)
            if not self.planned_minutes > 0:
                raise PCamError(f"planned_minutes={self.planned_minutes}: use a positive number")
        _check_int("warmup_epochs", self.warmup_epochs, 0)
        _check_int("patience", self.patience, 1)
        _check_int("finetune_layers", self.finetune_layers, 0)
        if not (isinstance(self.image_size, int) and 32 <= self.image_size <= 512):
            raise PCamError(f"image_size={self.image_size!r}: use an integer from 32 to 512")
        if any(u < 1 for u in self.head_units):
            raise PCamError(f"head_units={self.head_units}: every size must be >= 1")
        # Non-finite floats (inf, nan: `--learning-rate inf`) fail here, before an epoch.
        _check_float("alpha", self.alpha)
        _check_float("dropout", self.dropout)
        if not 0 < self.bn_momentum < 1:
            raise PCamError(f"bn_momentum={self.bn_momentum}: use a value in (0, 1)")
        if not 0 <= self.dropout < 1:
            raise PCamError(f"dropout={self.dropout}: use a value in [0, 1)")
        for name in ("learning_rate", "finetune_learning_rate"):
            _check_float(name, getattr(self, name))
            if not getattr(self, name) > 0:
                raise PCamError(f"{name}={getattr(self, name)}: use a positive number")
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("precision", self.precision, PRECISIONS)
        for name in self.augment:
            _check_choice("augment", name, AUGMENTATIONS + ("none",))

    @classmethod
    def for_model(cls, model: str, preset: str | None = None, **overrides: Any) -> "TrainConfig":
        """The settings of a `model` run: backbone defaults, then a preset, then `overrides`.

        Args:
            model: a key of `BACKBONE_DEFAULTS` ("mobilenet", "resnet50").
            preset: a key of `PRESETS` ("smoke", "demo", "subset", "full") or None.
            **overrides: field values given last (None values are ignored, so
                unset command-line options keep the defaults).

        Raises:
            PCamError: unknown model, preset or setting, or a bad value.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        scratch = model in SCRATCH_ONLY
        unused = sorted(set(given) & set(NOT_FOR_SCRATCH if scratch else NOT_FOR_TRANSFER))
        if unused:
            why = ("trains from scratch and has no fine-tune phase" if scratch else
                   "keeps the pretrained BatchNorm frozen")
            raise PCamError(f"{', '.join(unused)}: {model} {why}; leave these out")
        return cls.from_dict({**model_defaults(model, preset), "model": model, **given})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build a config from a mapping; unknown keys raise `PCamError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PCamError(
                f"unknown setting(s) {', '.join(unknown)}; "
                f"known settings: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with `changes` applied (and validated)."""
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["head_units"] = list(self.head_units)
        values["augment"] = list(self.augment)
        return values


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_run_name(name: Any) -> str:
    """`name` when it is one safe folder name under `results/`, else `PCamError`.

    A run name is 1-100 letters, digits, `.`, `_` or `-`, starting with a letter or
    digit: no `/`, no `..`, never empty, so a run cannot write outside `results/`.
    """
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise PCamError(f"run={name!r}: a run name is 1-100 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit (it names one folder under results/)")
    return name


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PCamError(f"{name}={value!r}: use an integer >= {minimum}")


def _check_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PCamError(f"{name}={value!r}: use a finite number (not inf or nan)")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise PCamError(f"{name}={value!r}: use one of {', '.join(choices)}")


def model_defaults(model: str, preset: str | None = None) -> dict[str, Any]:
    """`BACKBONE_DEFAULTS[model]` with `PRESETS[preset]` applied (field names)."""
    if model not in BACKBONE_DEFAULTS:
        raise PCamError(f"unknown model {model!r}; use one of {', '.join(BACKBONE_DEFAULTS)}")
    values = dict(BACKBONE_DEFAULTS[model])
    if preset is not None:
        if preset not in PRESETS:
            raise PCamError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
        values.update(PRESETS[preset].get("both", {}))
        values.update(PRESETS[preset].get(model, {}))
    return values


def field_names() -> list[str]:
    """The names of every `TrainConfig` setting, in declaration order."""
    return [f.name for f in dataclasses.fields(TrainConfig)]
