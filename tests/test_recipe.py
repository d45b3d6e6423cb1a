"""The recipe is written once, in the notebooks: the package's `build_model` and
`set_phase` (used by the budget planner, the benchmarks and the quick training
tests) are proven identical to the notebooks' own cells, run here as they are.

For each notebook the model cell is executed with the run's settings; the model
must equal `build_model`'s, layer for layer (the full Keras config). Then, for
each phase, the notebook's statements before its `compile` are executed on that
model and `set_phase` on the package's: the trainable weights and the frozen
BatchNorm layers must be exactly the same.
"""

import ast
import contextlib
import json

import keras
import pytest

from pcam.core.paths import DEMO_WEIGHTS
from pcam.data.spec import PATCH_SHAPE
from pcam.execute.notebooks import NOTEBOOKS
from pcam.models import build_model, set_phase
from pcam.run.config import TrainConfig


class _Run:
    """What the recipe cells use of `pcam.train.session.TrainingRun` before `compile`."""

    scope = staticmethod(contextlib.nullcontext)


def _code_cells(model: str) -> list[str]:
    nb = json.loads(NOTEBOOKS[model].read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def _model_cell(model: str) -> str:
    (cell,) = [c for c in _code_cells(model) if "model = keras.Model(" in c]
    return cell.replace("model.summary(", "(lambda **_: None)(")  # no printing


def _phase_steps(model: str) -> dict[str, str]:
    """{phase: the notebook's statements before that phase's `compile`}."""
    found = {}
    for cell in _code_cells(model):
        if "model.compile(" not in cell:
            continue
        tree = ast.parse(cell)
        phase = next(ast.literal_eval(node.args[1]) for node in ast.walk(tree)
                     if isinstance(node, ast.Call) and getattr(node.func, "attr", "")
                     == "resume")  # start = run.resume(model, "<phase>")
        before = []
        for statement in tree.body:
            if isinstance(statement, ast.With):
                break
            before.append(ast.get_source_segment(cell, statement))
        found[phase] = "\n".join(before)
    return found


def _frozen_batchnorm(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.get_layer("backbone").layers
            if isinstance(layer, keras.layers.BatchNormalization) and not layer.trainable]


CASES = [
    ("mobilenet", {"alpha": 0.5, "weights": str(DEMO_WEIGHTS)}),
    ("mobilenet", {"alpha": 0.5, "weights": str(DEMO_WEIGHTS), "image_size": 128,
                   "head_units": (64, 32), "finetune_layers": 48, "dropout": 0.3}),
    ("resnet50", {"bn_momentum": 0.9, "head_units": (32,)}),
]


@pytest.mark.parametrize(("model", "settings"), CASES, ids=lambda v: str(v)[:40])
def test_the_package_builds_and_phases_the_notebooks_model(model, settings):
    config = TrainConfig.for_model(model, run="r", **settings)
    namespace = {"keras": keras, "PATCH_SHAPE": PATCH_SHAPE, "config": config, "run": _Run()}
    keras.backend.clear_session()  # the same automatic layer names for both builds
    exec(_model_cell(model), namespace)  # the notebook's own model cell
    notebook = namespace["model"]
    keras.backend.clear_session()
    package = build_model(model, alpha=config.alpha, weights=config.weights,
                          head_units=config.head_units, dropout=config.dropout,
                          image_size=config.image_size, bn_momentum=config.bn_momentum)
    assert package.get_config() == notebook.get_config()
    steps = _phase_steps(model)
    assert set(steps) == ({"scratch"} if model == "resnet50" else {"head", "finetune"})
    for phase, statements in steps.items():
        exec(statements, namespace)  # e.g. base.trainable = False
        set_phase(package, phase, finetune_layers=config.finetune_layers)
        assert [w.path for w in package.trainable_weights] == [
            w.path for w in notebook.trainable_weights], phase
        assert _frozen_batchnorm(package) == _frozen_batchnorm(notebook), phase
        assert package.trainable_weights, phase  # every phase trains something
