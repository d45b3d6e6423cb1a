"""Named sets of run settings, applied on top of the backbone defaults.

Each preset is a TOML file in `pcam/experiments/presets/`, named for the preset:
`smoke` checks in CI that every notebook cell runs; `demo` is README command 1
on synthetic data; `subset` made the first published runs on the PCam subset;
`full` is real PCam on a GPU. In a file, keys at the top apply to every model
and a `[model]` table to that model; every key is a `TrainConfig` field, read as
`pcam train --config` reads a settings file. `pcam.run.config.model_defaults`
applies them, and `TrainConfig` checks every value like any other setting.
"""

from pathlib import Path
from typing import Any

from pcam.run.settings import read_presets

# The experiments as files: the presets, and the recipes, study and curves of
# `pcam.study.experiments`.
EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"

# {preset: {"both": settings for every model, model: that model's settings}}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    path.stem: read_presets(path) for path in sorted((EXPERIMENTS_DIR / "presets").glob("*.toml"))}
