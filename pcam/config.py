"""Run settings: one typed object, validated, with unknown keys rejected.

The notebooks' `parameters` cell and the command line both end up here, so a
typo in a setting is an error, never a silently ignored value.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any

from pcam.data.spec import AUGMENTATIONS
from pcam.errors import PCamError

__all__ = ["AUGMENTATIONS", "PRECISIONS", "SCHEDULES", "STRATEGIES", "TrainConfig"]
STRATEGIES = ("auto", "none", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SCHEDULES = ("cosine", "plateau", "constant")


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved whole in its record.

    Args:
        model: backbone name from `pcam.models.BACKBONES` ("mobilenet", "resnet50", ...).
        run: name of the run folder under `results/`; default "<model>-<UTC time>".
        data_dir: PCam-layout data folder; default `$PCAM_DATA_DIR` or `data/`.
        epochs: total epochs, >= 1 (for transfer: head epochs + fine-tune epochs).
        head_epochs: epochs of phase 1 (new head on a frozen base); 0 trains
            everything from the start (the from-scratch recipe).
        batch_size: batch per replica, >= 1 (the whole batch on one device; with R
            replicas the global batch is R times larger, see `pcam.train.distribute`).
        max_samples: use at most this many training patches (None: all).
        max_eval_samples: use at most this many valid/test patches (None: all).
        alpha: MobileNet width multiplier (0.25, 0.5, 0.75 or 1.0).
        weights: "imagenet", None (random init) or a path to a weights file.
        head_units: sizes of the new dense layers before the sigmoid.
        dropout: dropout rate before each dense layer, in [0, 1).
        learning_rate: phase-1 (or from-scratch) peak learning rate, > 0.
        finetune_learning_rate: phase-2 learning rate, 10-100x below learning_rate
            (default 10x).
        finetune_layers: how many top layers of the base to unfreeze in phase 2
            (BatchNorm layers stay frozen); None uses the backbone's default.
        schedule: "cosine" (with warm-up), "plateau" or "constant".
        warmup_epochs: linear warm-up epochs for the cosine schedule.
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
    epochs: int = 10
    head_epochs: int = 2
    batch_size: int = 64
    max_samples: int | None = None
    max_eval_samples: int | None = None
    alpha: float = 1.0
    weights: str | None = "imagenet"
    head_units: tuple[int, ...] = (128,)
    dropout: float = 0.5
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-4
    finetune_layers: int | None = None
    schedule: str = "cosine"
    warmup_epochs: int = 1
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
        _check_int("epochs", self.epochs, 1)
        _check_int("head_epochs", self.head_epochs, 0)
        if self.head_epochs > self.epochs:
            raise PCamError(f"head_epochs={self.head_epochs} exceeds epochs={self.epochs}")
        _check_int("batch_size", self.batch_size, 1)
        if self.max_samples is not None:
            _check_int("max_samples", self.max_samples, 1)
        if self.max_eval_samples is not None:
            _check_int("max_eval_samples", self.max_eval_samples, 1)
        _check_int("warmup_epochs", self.warmup_epochs, 0)
        _check_int("patience", self.patience, 1)
        if self.finetune_layers is not None:
            _check_int("finetune_layers", self.finetune_layers, 0)
        if any(u < 1 for u in self.head_units):
            raise PCamError(f"head_units={self.head_units}: every size must be >= 1")
        if not 0 <= self.dropout < 1:
            raise PCamError(f"dropout={self.dropout}: use a value in [0, 1)")
        for name in ("learning_rate", "finetune_learning_rate"):
            if not getattr(self, name) > 0:
                raise PCamError(f"{name}={getattr(self, name)}: use a positive number")
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("precision", self.precision, PRECISIONS)
        for name in self.augment:
            _check_choice("augment", name, AUGMENTATIONS + ("none",))

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


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PCamError(f"{name}={value!r}: use an integer >= {minimum}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise PCamError(f"{name}={value!r}: use one of {', '.join(choices)}")
