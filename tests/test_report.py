"""The README results block: markers, idempotence, published runs, numbers traced."""

import json

import pytest
from fake_runs import make_run

from pcam.errors import PCamError
from pcam.report.build import build_report
from pcam.report.table import END, START, parse_table, replace_block

README = f"# Title\n\nIntro text.\n\n{START}\nold table\n{END}\n\n## Reference results\nkept\n"


@pytest.fixture
def two_runs(tmp_path):
    results = tmp_path / "results"
    make_run(results, "mobilenet-pub", "mobilenet", seed=1)
    make_run(results, "resnet50-pub", "resnet50", seed=2)
    make_run(results, "mobilenet-demo", "mobilenet", published=False, seed=3)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    return results, readme, tmp_path / "images"


def _block(readme):
    text = readme.read_text()
    return text.split(START)[1].split(END)[0]


def test_report_rewrites_only_between_markers_and_is_idempotent(two_runs):
    results, readme, images = two_runs
    build_report(results, readme, images, gradcam=False)
    first = readme.read_text()
    head, tail = README.split(START)[0], README.split(END)[1]
    assert first.startswith(head + START) and first.endswith(END + tail)
    assert "old table" not in first
    build_report(results, readme, images, gradcam=False)
    assert readme.read_text() == first
    for name in ("mobilenet_curves", "resnet50_curves", "compare_curves", "compare_roc_pr",
                 "compare_confusion", "compare_reliability"):
        assert (images / f"{name}.png").stat().st_size > 5000
        assert f"(images/{name}.png)" in first
    assert not list(readme.parent.glob(".README*tmp"))


def test_table_numbers_are_the_records_numbers(two_runs):
    results, readme, images = two_runs
    build_report(results, readme, images, gradcam=False)
    block = _block(readme)
    assert "mobilenet-demo" not in block  # unpublished runs stay out
    table = "\n".join(line for line in block.splitlines() if line.startswith("|"))
    cells = parse_table(table)
    for run, model in (("mobilenet-pub", "mobilenet"), ("resnet50-pub", "resnet50")):
        record = json.loads((results / run / "record.json").read_text())
        test = record["metrics"]["test"]["single"]
        lo, hi = test["ci"]["at_chosen.recall"]
        assert cells[("recall (%)", f"{model} test")] == (
            f"{100 * test['at_chosen']['recall']:.1f} ± {100 * (hi - lo) / 2:.1f}")
        value = float(cells[("ROC AUC (%)", f"{model} valid")].split(" ± ")[0])
        assert value == pytest.approx(100 * record["metrics"]["valid"]["single"]["roc_auc"],
                                      abs=0.051)
        tta = record["metrics"]["test"]["tta"]["at_chosen"]["accuracy"]
        assert cells[("accuracy (%)", f"{model} test TTA")].startswith(f"{100 * tta:.1f} ± ")
        assert cells[("train time (min)", f"{model} train")] == (
            f"{record['timings']['train_seconds'] / 60:.1f}")
        assert cells[("inference time (s)", f"{model} test TTA")] == "10.5"
        best = max(record["history"], key=lambda h: h["val_auc"])
        assert cells[("F1 (%)", f"{model} train")] == f"{100 * best['f1']:.1f}"
    assert "**Data:** PCam subset (JPEG), not the PCam test split." in block
    assert "**Split mapping:** test: valid; valid: 2,000 held out from train." in block
    assert "McNemar" in block and "p = " in block
    assert "threshold 0.550;" in block
    assert "**Threshold rule:** max balanced accuracy on valid." in block
    assert "Keras' running metrics at the best epoch" in block


def test_missing_markers_is_an_error_and_leaves_readme_alone(two_runs):
    results, readme, images = two_runs
    readme.write_text("# no markers here\n")
    with pytest.raises(PCamError, match="results:start"):
        build_report(results, readme, images, gradcam=False)
    assert readme.read_text() == "# no markers here\n"
    assert not images.exists()
    with pytest.raises(PCamError, match="exactly one"):
        replace_block(f"{END}\n{START}\n", "x")


def test_two_published_runs_of_one_model_name_both(two_runs):
    results, readme, images = two_runs
    make_run(results, "mobilenet-again", "mobilenet", seed=4)
    with pytest.raises(PCamError, match="'mobilenet-again' and 'mobilenet-pub'"):
        build_report(results, readme, images, gradcam=False)


def test_no_published_runs_says_how_to_publish(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    build_report(tmp_path / "results", readme, tmp_path / "images")
    assert "No published run yet" in _block(readme)


def test_one_model_without_tta_or_test_split(tmp_path):
    results = tmp_path / "results"
    make_run(results, "only", "mobilenet", splits=("valid",), tta=False)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    build_report(results, readme, tmp_path / "images", gradcam=False)
    cells = parse_table("\n".join(
        line for line in _block(readme).splitlines() if line.startswith("|")))
    assert cells[("accuracy (%)", "mobilenet test")] == "–"
    assert ("accuracy (%)", "mobilenet test TTA") not in cells
    assert (tmp_path / "images" / "compare_roc_pr.png").exists()  # on valid


def test_missing_checkpoint_skips_gradcam_with_a_note(two_runs, capsys):
    results, readme, images = two_runs
    build_report(results, readme, images)
    assert "no checkpoint" in capsys.readouterr().out
    assert not (images / "mobilenet_gradcam.png").exists()


def test_cli_report(two_runs):
    from pcam.cli import main

    results, readme, images = two_runs
    assert main(["report", "--results", str(results), "--readme", str(readme),
                 "--images", str(images)]) == 0
    assert "mobilenet test" in readme.read_text()


def test_report_draws_gradcam_and_diagram_from_checkpoint(tmp_path, monkeypatch):
    import numpy as np
    from test_gradcam import _dark_blob_model, _patches_with_blobs

    from pcam.data.h5write import write_split

    results = tmp_path / "results"
    run_dir = make_run(results, "tiny", "mobilenet", n=24)
    (run_dir / "checkpoints").mkdir()
    _dark_blob_model().save(run_dir / "checkpoints" / "best.keras")
    with np.load(run_dir / "predictions" / "test.npz") as npz:
        labels = npz["y_true"]
    images = _patches_with_blobs([(20, 20 + 2 * i) for i in range(len(labels))])
    record = json.loads((run_dir / "record.json").read_text())
    record["data"]["dir"] = "<external>/x/data"  # outside the project: $PCAM_DATA_DIR is used
    (run_dir / "record.json").write_text(json.dumps(record))
    monkeypatch.setenv("PCAM_DATA_DIR", str(tmp_path / "data"))
    write_split(tmp_path / "data", "test", images, labels)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    build_report(results, readme, tmp_path / "images")
    assert (tmp_path / "images" / "mobilenet_gradcam.png").stat().st_size > 5000
    assert "(images/mobilenet_gradcam.png)" in readme.read_text()
    if __import__("shutil").which("dot"):
        assert (tmp_path / "images" / "mobilenet_model.png").exists()


@pytest.mark.parametrize(("data", "expected"), [
    ({"synthetic": True, "info": {"source": "synthetic"}}, "synthetic patches"),
    ({"info": {"source": "PCam, Zenodo record 2546921"}}, "PCam, official HDF5 files and splits"),
    ({"info": {"source": "images", "label": "PCam subset (JPEG)"}},
     "PCam subset (JPEG), not the PCam test split"),
    ({"info": {"source": "images", "folder": "kaggle"}},
     "images imported from `kaggle`, not the PCam test split"),
])
def test_data_label(data, expected):
    from pcam.report.protocol import data_label

    assert data_label({"data": data}).startswith(expected)


def test_evaluated_train_split_is_used_with_its_ci(tmp_path):
    results = tmp_path / "results"
    run_dir = make_run(results, "all", "resnet50", splits=("train", "valid", "test"))
    readme = tmp_path / "README.md"
    readme.write_text(README)
    build_report(results, readme, tmp_path / "images", gradcam=False)
    block = _block(readme)
    cells = parse_table("\n".join(line for line in block.splitlines() if line.startswith("|")))
    train = json.loads((run_dir / "record.json").read_text())["metrics"]["train"]["single"]
    f1 = f"{100 * train['at_chosen']['f1']:.1f} ± "
    assert cells[("F1 (%)", "resnet50 train")].startswith(f1)
    assert "the first training patches of the file (N below) evaluated like valid and test" in block
