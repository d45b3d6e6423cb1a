"""Run settings: one typed object, validated, with unknown keys rejected.

`TrainConfig` is the one source of defaults. The command line, the notebooks'
`parameters` cells (the same names in UPPER_CASE) and the presets all read it:

- `TrainConfig` field defaults are the generic ones;
- `BACKBONE_DEFAULTS` holds what differs per backbone (the transfer recipe
  trains a head first and starts from ImageNet weights; ResNet50 trains from
  scratch, all layers at once), applied by `TrainConfig.for_model`;
- the presets (`pcam/experiments/presets/*.toml`, read into `pcam.run.presets.PRESETS`)
  are named sets of overrides (`smoke` for CI, `demo`
  for README command 1, `subset` for the first published runs, `full` for real PCam),
  applied on top.

A typo in a setting is an error, never a silently ignored value. Every field
is checked by `pcam.run.settings.check_setting` (its type, and the range the
libraries accept), and text from the command line or `-p NAME=VALUE` is read by
`pcam.run.settings.parse_setting`, so a bad value is refused with one line naming
it before any kernel starts.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any

from pcam.core.errors import PCamError
from pcam.data.spec import AUGMENTATIONS
from pcam.run.presets import PRESETS
from pcam.run.settings import (
    PRECISIONS,
    SCHEDULES,
    STRATEGIES,
    check_run_name,
    check_setting,
    parse_setting,
    short_repr,
)

__all__ = ["AUGMENTATIONS", "BACKBONE_DEFAULTS", "PRECISIONS", "PRESETS", "SCHEDULES",
           "STRATEGIES", "TrainConfig", "check_run_name", "check_setting", "parse_setting"]

# What differs per backbone; everything else is a `TrainConfig` field default. One entry
# per model of `pcam.run.settings.MODELS`.
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

def _field(default: Any, help: str) -> Any:
    """A setting: its default and its help text, which the command line shows
    (`python -m pcam train --help`) and `TrainConfig`'s docstring lists."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved whole in its record.

    Each field carries its default and its help (listed under Args below, and by
    `python -m pcam train --help`); `BACKBONE_DEFAULTS` and the presets change
    some defaults per model. Every value is checked on creation
    (`pcam.run.settings.check_setting`).
    """

    model: str = _field("mobilenet", "backbone: mobilenet or resnet50 (`pcam.models.BACKBONES`)")
    run: str | None = _field(None, "name of the run folder under results/ (default "
                                   "<model>-<UTC time>)")
    data_dir: str | None = _field(None, "PCam-layout data folder (default $PCAM_DATA_DIR or "
                                        "data/)")
    epochs: int = _field(12, "total epochs, >= 1 (transfer: head epochs + fine-tune epochs)")
    head_epochs: int = _field(2, "epochs of phase 1, the new head on a frozen base; 0 "
                                 "fine-tunes from the start, `epochs` trains the head only; "
                                 "from-scratch models take 0")
    batch_size: int = _field(64, "batch per replica, >= 1 (with R replicas the global batch "
                                 "is R times larger)")
    max_samples: int | None = _field(None, "use only the first N training patches of the file "
                                           "(a random sample: files are shuffled); default all")
    max_eval_samples: int | None = _field(None, "use at most N valid/test patches; default all")
    steps_per_epoch: int | None = _field(None, "batches an epoch, drawn anew each epoch from "
                                               "every training patch; default one whole pass "
                                               "(the budget planner sets it only when a budget "
                                               "buys less than one epoch)")
    planned_minutes: float | None = _field(None, "training minutes a budget plan predicted "
                                                 "for these epochs; the record puts the "
                                                 "realised minutes beside them")
    alpha: float = _field(1.0, "MobileNet width: 0.25, 0.5, 0.75 or 1.0")
    image_size: int = _field(96, "transfer: side of the backbone's input, 32-512; above 96 the "
                                 "patch is upsampled inside the model")
    weights: str | None = _field("imagenet", "starting weights: imagenet, none, or a weights "
                                             "file")
    head_units: tuple[int, ...] = _field((128,), "sizes of the new dense layers before the "
                                                 "sigmoid, comma-separated, each 1 to 8192")
    dropout: float = _field(0.5, "dropout before each dense layer, in [0, 1)")
    learning_rate: float = _field(1e-3, "phase-1 (or from-scratch) peak learning rate, > 0")
    finetune_learning_rate: float = _field(1e-4, "fine-tune learning rate, 10-100x below "
                                                 "learning_rate")
    finetune_layers: int = _field(24, "top base layers unfrozen in phase 2 (BatchNorm stays "
                                      "frozen); 24 is MobileNet's last four blocks")
    schedule: str = _field("cosine", "learning-rate schedule: cosine (with warm-up), plateau "
                                     "or constant")
    warmup_epochs: int = _field(1, "linear warm-up epochs of the cosine schedule (from "
                                   "scratch)")
    bn_momentum: float = _field(0.99, "from scratch: momentum of BatchNorm's moving "
                                      "statistics, in (0, 1); short runs need less than "
                                      "Keras' 0.99")
    patience: int = _field(5, "early-stopping patience, epochs without a better valid AUC")
    augment: tuple[str, ...] = _field(AUGMENTATIONS, "training augmentations, comma-separated: "
                                                     f"{','.join(AUGMENTATIONS)}, or none")
    tta: bool = _field(True, "also evaluate with 8-fold dihedral test-time augmentation")
    seed: int = _field(0, "seed of weights, shuffling and augmentation, 0 to 2**32 - 1")
    deterministic: bool = _field(False, "TensorFlow op determinism (slower)")
    strategy: str = _field("auto", "tf.distribute strategy: auto, none, mirrored or "
                                   "multiworker")
    precision: str = _field("auto", "Keras dtype policy: float32, mixed_float16, "
                                    "mixed_bfloat16, or auto (the faster of float32 and the "
                                    "hardware's 16-bit policy for this model, timed)")
    published: bool = _field(False, "put this run in the README table (`python -m pcam "
                                    "report`)")

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # each value's type and range, normalised
            setattr(self, field.name, check_setting(field.name, getattr(self, field.name)))
        if self.head_epochs > self.epochs:
            raise PCamError(f"head_epochs={self.head_epochs} exceeds epochs={self.epochs}")
        if self.model in SCRATCH_ONLY:
            for name, value in SCRATCH_ONLY[self.model].items():
                if getattr(self, name) != value:
                    raise PCamError(f"{name}={getattr(self, name)!r}: {self.model} trains from "
                                    f"scratch, so {name} must stay {value!r}")

    @classmethod
    def for_model(cls, model: str, preset: str | None = None, /,
                  **overrides: Any) -> "TrainConfig":
        """The settings of a `model` run: backbone defaults, then a preset, then `overrides`.

        Args:
            model: a key of `BACKBONE_DEFAULTS` ("mobilenet", "resnet50").
            preset: a key of `PRESETS` ("smoke", "demo", "subset", "full") or None.
            **overrides: field values given last; None is a value like any other
                (`weights=None`: random initialisation), so leave a setting out to
                keep its default. A `model` among them must be `model`.

        Raises:
            PCamError: unknown model, preset or setting, or a bad value.
        """
        defaults = model_defaults(model, preset)  # an unknown model or preset first
        given = dict(overrides)
        if given.pop("model", model) != model:
            raise PCamError(f"model={short_repr(overrides['model'])}: this {model} run takes "
                            "no other model; choose it with --model (pcam notebooks: --models)")
        scratch = model in SCRATCH_ONLY
        unused = sorted(set(given) & set(NOT_FOR_SCRATCH if scratch else NOT_FOR_TRANSFER))
        if unused:
            why = ("trains from scratch and has no fine-tune phase" if scratch else
                   "keeps the pretrained BatchNorm frozen")
            raise PCamError(f"{', '.join(unused)}: {model} {why}; leave these out")
        return cls.from_dict({**defaults, "model": model, **given})

    @classmethod
    def from_notebook(cls, model: str, namespace: dict[str, Any]) -> "TrainConfig":
        """The settings a notebook's parameters cell gives: each field's UPPER_CASE
        name in `namespace` (the notebook's `globals()`), over `model`'s defaults.

        Other names (RESULTS_DIR, COMPARE_WITH, imports) are not settings and are
        left out; a parameter set to None keeps its default.
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"model"}
        given = {name: namespace[name.upper()] for name in names if name.upper() in namespace}
        if given.get("weights") is None:  # WEIGHTS = None in a notebook: the model's default
            given.pop("weights", None)
        return cls.for_model(model, **given)

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


def model_defaults(model: str, preset: str | None = None) -> dict[str, Any]:
    """`BACKBONE_DEFAULTS[model]` with `PRESETS[preset]` applied (field names)."""
    if not isinstance(model, str) or model not in BACKBONE_DEFAULTS:
        raise PCamError(f"unknown model {short_repr(model)}; use one of "
                        f"{', '.join(BACKBONE_DEFAULTS)}")
    values = dict(BACKBONE_DEFAULTS[model])
    if preset is not None:
        if not isinstance(preset, str) or preset not in PRESETS:
            raise PCamError(f"unknown preset {short_repr(preset)}; use one of {', '.join(PRESETS)}")
        values.update(PRESETS[preset].get("both", {}))
        values.update(PRESETS[preset].get(model, {}))
    return values


def field_names() -> list[str]:
    """The names of every `TrainConfig` setting, in declaration order."""
    return [f.name for f in dataclasses.fields(TrainConfig)]


def setting_help(name: str) -> str:
    """The help text of `TrainConfig` field `name` (what the command line shows)."""
    return next(f.metadata["help"] for f in dataclasses.fields(TrainConfig) if f.name == name)


if TrainConfig.__doc__:  # None under python -OO
    TrainConfig.__doc__ += "\n    Args:\n" + "".join(
        f"        {f.name}: {f.metadata['help']} (default {f.default!r}).\n"
        for f in dataclasses.fields(TrainConfig))
