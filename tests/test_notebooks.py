"""The notebooks: committed clean and thin, and runnable top to bottom (smoke preset)."""

import json
import re
import shutil

import pytest

from pcam.errors import PCamError
from pcam.notebooks import NOTEBOOKS, PRESETS, notebook_parameters, run_notebooks
from pcam.paths import PROJ_ROOT
from pcam.records import read_record

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
    # No constant hides outside the parameters cell: settings are UPPER_CASE names there.
    params = notebook_parameters(path)
    assert {"DATA_DIR", "EPOCHS", "BATCH_SIZE", "SEED", "MAX_SAMPLES"} <= set(params)


def test_presets_only_set_existing_parameters():
    for preset in PRESETS.values():
        for model, settings in preset.items():
            targets = NOTEBOOKS if model == "both" else {model: NOTEBOOKS[model]}
            known = set().union(*(notebook_parameters(p) for p in targets.values()))
            assert set(settings) <= known | {"RESULTS_DIR"}, (model, set(settings) - known)


def test_unknown_parameter_is_refused(tmp_path):
    with pytest.raises(PCamError, match="EPOCH"):
        run_notebooks("smoke", out_dir=tmp_path, overrides={"EPOCH": 1})


@pytest.mark.slow
def test_both_notebooks_run_top_to_bottom(tmp_path, synthetic_data_dir, shared_dir_or_none):
    weights = str(shared_dir_or_none / SHARED_WEIGHTS) if shared_dir_or_none else "none"
    written = run_notebooks(
        "smoke", out_dir=tmp_path, overrides={"DATA_DIR": str(synthetic_data_dir),
                                              "WEIGHTS": weights})
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS.values()]
    for path in written:
        cells = _code_cells(path)
        errors = [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
        assert not errors
        assert all(c["execution_count"] is not None for c in cells)
    for run in ("mobilenet-smoke", "resnet50-smoke"):
        record = read_record(tmp_path / run)
        assert record["status"] == "complete"
        assert {"valid", "test"} <= set(record["metrics"])
    # The ResNet50 notebook ends with the paired comparison against the MobileNet run.
    last = _code_cells(written[1])[-1]
    text = json.dumps(last["outputs"])
    assert "McNemar" in text and "ROC AUC difference" in text
    # The conclusion is generated from the record, not typed.
    record = read_record(tmp_path / "mobilenet-smoke")
    conclusion = json.dumps(_code_cells(written[0])[-1]["outputs"])
    accuracy = record["metrics"]["test"]["single"]["at_chosen"]["accuracy"]
    assert f"{100 * accuracy:.1f}%" in conclusion


def test_tidy_executed_keeps_outputs_but_drops_tf_logs_and_machine_paths(tmp_path):
    import nbformat

    from pcam.notebooks import tidy_executed

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text=(
            "WARNING: All log messages before absl::InitializeLog() is called are written\n"
            "I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\n")),
        nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something real\n"),
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
def test_report_reproduces_committed_readme(tmp_path):
    """`python -m pcam report` on the committed records gives the committed README."""
    from pcam.report.build import build_report

    readme = tmp_path / "README.md"
    shutil.copy(PROJ_ROOT / "README.md", readme)
    shutil.copytree(PROJ_ROOT / "images", tmp_path / "images")
    build_report(results=PROJ_ROOT / "results", readme=readme, images=tmp_path / "images",
                 gradcam=False)
    assert readme.read_text() == (PROJ_ROOT / "README.md").read_text()


