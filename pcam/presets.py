"""Named sets of run settings, applied on top of the backbone defaults.

`smoke` checks in CI that every notebook cell runs; `demo` is README command 1
on synthetic data; `subset` makes the published runs on the PCam subset; `full`
is real PCam on a GPU. `pcam.config.model_defaults` applies them, and every
value is checked by `TrainConfig` like any other setting.
"""

from typing import Any

from pcam.paths import DEMO_WEIGHTS, PROJ_ROOT

# Named overrides on top of `BACKBONE_DEFAULTS`: "both" applies to every model.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # CI: tiny data, one short epoch per phase; checks that every cell runs.
    "smoke": {
        "both": {"max_samples": 64, "max_eval_samples": 64, "batch_size": 16, "tta": True},
        "mobilenet": {"run": "mobilenet-smoke", "epochs": 2, "head_epochs": 1, "alpha": 0.25},
        # TTA stays on for MobileNet only: tracing 8 ResNet50s costs minutes on a CPU.
        "resnet50": {"run": "resnet50-smoke", "epochs": 1, "tta": False},
    },
    # README command 1: synthetic data, a few minutes on a 2-core CPU.
    "demo": {
        "both": {"max_eval_samples": 512, "batch_size": 32, "tta": True},
        "mobilenet": {"run": "mobilenet-demo", "epochs": 4, "head_epochs": 2, "alpha": 0.5,
                      "max_samples": 2048},
        # From scratch, a short run learns when BatchNorm's statistics keep up (momentum
        # 0.9) and the steps are many (batch 8): valid AUC about 0.99 on synthetic data.
        "resnet50": {"run": "resnet50-demo", "epochs": 2, "max_samples": 512, "batch_size": 8,
                     "bn_momentum": 0.9, "tta": False},
    },
    # The published runs: the 23,000-patch PCam subset (`import-images ... --holdout 2000`)
    # on a 2-core CPU, each model with the best recipe of the study (`pcam.study`, chosen
    # on valid) and the same 30-minute training budget, in epochs and patches planned from
    # the costs the study measured (`pcam study ARM --plan-minutes 30`). Patience 10: a
    # long cosine schedule should not be cut by a few flat epochs in the middle.
    "subset": {
        "both": {"data_dir": str(PROJ_ROOT / "data" / "pcam-subset"), "batch_size": 64,
                 "patience": 10, "published": True},
        # Arm finetune-48: MobileNet 0.5 from the ImageNet weights shipped in pcam/assets/,
        # one head epoch, then the top 48 layers fine-tuned.
        "mobilenet": {"run": "mobilenet-subset", "epochs": 48, "head_epochs": 1, "alpha": 0.5,
                      "finetune_layers": 48, "weights": str(DEMO_WEIGHTS)},
        # Arm scratch-bn0.9-lr3e-3: BatchNorm statistics that keep up with few steps (with
        # 0.99, valid AUC stayed at 0.5) and learning rate 3e-3 (valid AUC 86.0 against 85.1
        # at 1e-3). No TTA: eight ResNet50 passes over test cost minutes.
        "resnet50": {"run": "resnet50-subset", "epochs": 3, "max_samples": 12480,
                     "bn_momentum": 0.9, "learning_rate": 3e-3, "tta": False},
    },
    # Full PCam on a GPU: the backbone defaults are the full settings.
    "full": {
        "both": {"published": True},
        "mobilenet": {"run": "mobilenet-full"},
        "resnet50": {"run": "resnet50-full"},
    },
}
