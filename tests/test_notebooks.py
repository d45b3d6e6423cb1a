"""The notebooks: committed clean and thin, and runnable top to bottom (smoke preset)."""

import json
import re
import shutil

import pytest

from pcam.core.errors import PCamError
from pcam.core.paths import PROJ_ROOT
from pcam.execute.notebooks import EXTRA_PARAMETERS, NOTEBOOKS, notebook_parameters, run_notebooks
from pcam.run.config import (
    NOT_FOR_SCRATCH,
    NOT_FOR_TRANSFER,
    SCRATCH_ONLY,
    TrainConfig,
    field_names,
)
from pcam.run.records import read_record

SHARED_WEIGHTS = "weights/imagenet-mobilenet-v1/mobilenet_v1_0.25_imagenet_no_top.h5"


def _code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("model", sorted(NOTEBOOKS))
def test_committed_notebook_is_clean_and_thin(model):
    path = NOTEBOOKS[model]
    cells = _code_cells(path)
    source = "\n".join("".join(c["source"]) for c in cells)
    assert all(not c["outputs"] and c["execution_count"] is None for c in cells), "stale outputs"
    assert not re.search(r"^\s*(def|class) ", source, re.M), "logic belongs in pcam"
    assert not re.search(r"/(home|root|work|Users)/", source), "machine path"
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    # The recipe is on the page: the Keras steps a student should see.
    for step in ("keras.applications.", "include_top=False", "keras.layers.Dense(",
                 "model.compile(", "model.fit(", "run.resume(model"):
        assert step in source, step
    if model == "mobilenet":
        for step in ("training=False", "base.trainable = False", "base.trainable = True",
                     "BatchNormalization", '"finetune"'):
            assert step in source, step


def _expected_parameters(model: str) -> set[str]:
    names = set(field_names()) - {"model"}
    if model in SCRATCH_ONLY:
        names -= set(SCRATCH_ONLY[model]) | set(NOT_FOR_SCRATCH)
    else:
        names -= set(NOT_FOR_TRANSFER)
    return {n.upper() for n in names}


@pytest.mark.parametrize("model", sorted(NOTEBOOKS))
def test_parameters_are_the_settings_with_their_defaults(model):
    params = notebook_parameters(NOTEBOOKS[model])
    assert set(params) - set(EXTRA_PARAMETERS) == _expected_parameters(model)
    defaults = TrainConfig.for_model(model).to_dict()
    for name, value in params.items():
        if name in EXTRA_PARAMETERS or name in ("RUN", "DATA_DIR"):
            continue
        given = TrainConfig.for_model(model, **{name.lower(): value}).to_dict()[name.lower()]
        assert given == defaults[name.lower()], (name, value, defaults[name.lower()])


def test_every_train_option_is_a_notebook_parameter():
    from pcam.app.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    options = {a.dest for a in train._actions} - {"help", "model", "preset", "results",
                                                  "log_output", "config"}
    assert options == set(field_names()) - {"model"}
    for model in NOTEBOOKS:
        assert {o.upper() for o in options} & _expected_parameters(model) <= set(
            notebook_parameters(NOTEBOOKS[model]))


def test_unknown_setting_is_refused(tmp_path):
    with pytest.raises(PCamError, match="unknown setting.*epoch"):
        run_notebooks("smoke", results=tmp_path, overrides={"EPOCH": 1})


def _plot_cells(path):
    return [c for c in _code_cells(path)
            if re.search(r"^plots\.plot_|display\(Image", "".join(c["source"]), re.M)]


@pytest.mark.slow
def test_both_notebooks_run_top_to_bottom(tmp_path, synthetic_data_dir, shared_dir_or_none):
    weights = str(shared_dir_or_none / SHARED_WEIGHTS) if shared_dir_or_none else "none"
    written = run_notebooks(
        "smoke", results=tmp_path, overrides={"DATA_DIR": str(synthetic_data_dir),
                                              "WEIGHTS": weights})
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS.values()]
    for path in written:
        cells = _code_cells(path)
        errors = [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
        assert not errors
        assert all(c["execution_count"] is not None for c in cells)
        # Every figure shows inline: an image/png output in each plotting cell.
        plotting = _plot_cells(path)
        assert len(plotting) >= 7
        for cell in plotting:
            shown = any("image/png" in o.get("data", {}) for o in cell["outputs"])
            if "plot_model_diagram" in "".join(cell["source"]) and shutil.which("dot") is None:
                # Without graphviz the diagram is skipped, saying so; every other figure shows.
                assert not shown
                assert "graphviz" in json.dumps(cell["outputs"]), cell["source"]
                continue
            assert shown, cell["source"]
        assert "History object at 0x" not in path.read_text()
    for run, notebook in zip(("mobilenet-smoke", "resnet50-smoke"), written, strict=True):
        assert notebook.parent == tmp_path / run  # the executed copy lies beside its record
        record = read_record(tmp_path / run)
        assert record["status"] == "complete"
        assert {"valid", "test"} <= set(record["metrics"])
    phases = read_record(tmp_path / "mobilenet-smoke")["phases"]
    assert [p["phase"] for p in phases] == ["head", "finetune"]
    assert phases[0]["trainable_params"] < phases[1]["trainable_params"]
    # (The package's builder and phases are proven identical to the cells: test_recipe.py.)
    # The ResNet50 notebook ends with the paired comparison against the MobileNet run.
    last = _code_cells(written[1])[-1]
    text = json.dumps(last["outputs"])
    assert "McNemar" in text and "ROC AUC difference" in text
    # The conclusion is generated from the record, not typed.
    record = read_record(tmp_path / "mobilenet-smoke")
    conclusion = json.dumps(_code_cells(written[0])[-1]["outputs"])
    accuracy = record["metrics"]["test"]["single"]["at_chosen"]["accuracy"]
    assert f"{100 * accuracy:.1f}%" in conclusion


@pytest.mark.slow
def test_error_inside_a_notebook_is_one_clear_line(tmp_path, capsys):
    from pcam.app.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["train", "--model", "mobilenet", "--preset", "smoke", "--weights", "none",
                 "--data-dir", str(empty), "--results", str(tmp_path / "res")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: no PCam files in") and "Traceback" not in err[0]


def test_tidy_executed_keeps_outputs_but_drops_tf_logs_and_machine_paths(tmp_path):
    import nbformat

    from pcam.execute.notebooks import tidy_executed

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text=(
            "WARNING: All log messages before absl::InitializeLog() is called are written\n"
            "I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\n")),
        nbformat.v4.new_output("stream", name="stderr", text=(
            "/tmp/ipykernel_8855/1796717023.py:1: UserWarning: something real\n")),
        nbformat.v4.new_output("stream", name="stdout", text="Epoch 1/2\n"),
    ]
    nb.cells = [cell]
    nb.metadata["papermill"] = {"input_path": str(PROJ_ROOT / "notebooks" / "x.ipynb"),
                                "output_path": str(PROJ_ROOT / "results" / "x.ipynb")}
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    tidy_executed(path)
    tidied = nbformat.read(path, as_version=4)
    assert [o["text"] for o in tidied.cells[0].outputs] == ["UserWarning: something real\n",
                                                           "Epoch 1/2\n"]
    assert tidied.metadata["papermill"] == {"input_path": "notebooks/x.ipynb",
                                            "output_path": "results/x.ipynb"}


def test_report_reproduces_committed_readme(tmp_path, figures_stubbed):
    """`python -m pcam report` on the committed records gives the committed README.

    Without --allow-dirty: the published runs were trained from a clean tree. The text
    is compared; the figures are placeholders (the plot tests draw them).
    """
    from pcam.report.build import build_report

    readme = tmp_path / "README.md"
    shutil.copy(PROJ_ROOT / "README.md", readme)
    shutil.copytree(PROJ_ROOT / "images", tmp_path / "images")
    shutil.copytree(PROJ_ROOT / "docs", tmp_path / "docs")
    # it writes model cards; models and logs are not read (gradcam=False) and a local
    # checkpoint can be hundreds of MB
    shutil.copytree(PROJ_ROOT / "results", tmp_path / "results",
                    ignore=shutil.ignore_patterns("checkpoints", "*.keras", "tensorboard"))
    pages = sorted((tmp_path / "docs").glob("*.md"))
    build_report(results=tmp_path / "results", readme=readme, images=tmp_path / "images",
                 gradcam=False, pages=pages)
    assert readme.read_text() == (PROJ_ROOT / "README.md").read_text()
    for page in pages:  # the study's block lives in docs/study.md
        assert page.read_text() == (PROJ_ROOT / "docs" / page.name).read_text(), page.name
    for card in (tmp_path / "results").rglob("MODEL_CARD.md"):
        committed = PROJ_ROOT / card.relative_to(tmp_path)
        assert card.read_text() == committed.read_text(), committed


