"""The README results block: markers, idempotence, published runs, numbers traced."""

import json

import pytest
from fake_runs import make_run

from pcam.core.errors import PCamError
from pcam.report.build import build_report
from pcam.report.cells import round_sig
from pcam.report.table import END, START, replace_block
from pcam.run import records

README = f"# Title\n\nIntro text.\n\n{START}\nold table\n{END}\n\n## Reference results\nkept\n"


def _two_runs(tmp_path):
    results = tmp_path / "results"
    make_run(results, "mobilenet-pub", "mobilenet", seed=1)
    make_run(results, "resnet50-pub", "resnet50", seed=2)
    make_run(results, "mobilenet-demo", "mobilenet", published=False, seed=3)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    return results, readme, tmp_path / "images"


@pytest.fixture
def two_runs(tmp_path, figures_stubbed):
    """Two published runs and a demo run; the report's figures are placeholders."""
    return _two_runs(tmp_path)


@pytest.fixture
def two_runs_drawn(tmp_path):
    """The same runs, for tests that look at the figures the report draws."""
    return _two_runs(tmp_path)


def _block(readme):
    text = readme.read_text()
    return text.split(START)[1].split(END)[0]


def _row(label, cells):
    """One table line as the README shows it."""
    return f"| {label} | " + " | ".join(cells) + " |"


def _pct(numbers, key):
    """A metric with its CI as the table writes it: "86.1 ± 0.7" (percent, CI half-width)."""
    group, _, name = key.rpartition(".")
    lo, hi = numbers["ci"][key]
    value = numbers[group][name] if group else numbers[name]
    return f"{100 * value:.1f} ± {100 * (hi - lo) / 2:.1f}"


def _model_cells(record, key, history_key):
    """One model's cells (train, valid, test, test TTA) of the metric row `key`."""
    best = max(record["history"], key=lambda h: h["val_auc"])  # train: best epoch, no CI
    metrics = record["metrics"]
    return [f"{100 * best[history_key]:.1f}", _pct(metrics["valid"]["single"], key),
            _pct(metrics["test"]["single"], key), _pct(metrics["test"]["tta"], key)]


def test_report_rewrites_only_between_markers_and_is_idempotent(two_runs_drawn, request):
    results, readme, images = two_runs_drawn
    build_report(results, readme, images, gradcam=False)
    first = readme.read_text()
    head, tail = README.split(START)[0], README.split(END)[1]
    assert first.startswith(head + START) and first.endswith(END + tail)
    assert "old table" not in first
    for name in ("mobilenet_curves", "resnet50_curves", "compare_curves", "compare_roc_pr",
                 "compare_confusion", "compare_reliability"):
        assert (images / f"{name}.png").stat().st_size > 5000
        assert f"(images/{name}.png)" in first
    request.getfixturevalue("figures_stubbed")  # the text does not depend on the drawing
    build_report(results, readme, images, gradcam=False)
    assert readme.read_text() == first
    assert not list(readme.parent.glob(".README*tmp"))


def test_table_numbers_are_the_records_numbers(two_runs):
    from pcam.report.progress import progress_cell

    results, readme, images = two_runs
    build_report(results, readme, images, gradcam=False)
    block = _block(readme)
    assert "mobilenet-demo" not in block  # unpublished runs stay out
    lines = block.splitlines()
    columns = ("train", "valid", "test", "test TTA")
    assert _row("metric", [f"{m} {c}" for m in ("mobilenet", "resnet50") for c in columns]) in lines
    records = [json.loads((results / run / "record.json").read_text())
               for run in ("mobilenet-pub", "resnet50-pub")]
    for label, key, history_key in (
        ("accuracy (%)", "at_chosen.accuracy", "accuracy"),
        ("precision (%)", "at_chosen.precision", "precision"),
        ("recall (%)", "at_chosen.recall", "recall"),
        ("F1 (%)", "at_chosen.f1", "f1"),
        ("ROC AUC (%)", "roc_auc", "auc"),
    ):
        cells = [c for r in records for c in _model_cells(r, key, history_key)]
        assert _row(label, cells) in lines
    seconds = [[""] + [round_sig(r['metrics'][s]['inference'][k]) for s, k in (
        ("valid", "seconds"), ("test", "seconds"), ("test", "tta_seconds"))] for r in records]
    assert seconds[0][1:] == ["1.2", "2.2", "10"]  # 1.25, 2.25, 10.5 s, from fake_runs
    assert _row("inference time (s)", seconds[0] + seconds[1]) in lines
    # unplanned runs: no planned minutes; 2,701 s and 2,702 s realised
    assert _row("train minutes (planned / realised)", ["– / 45", "", "", ""] * 2) in lines
    ends = [progress_cell(r) for r in records]
    assert ends[0].startswith(("improving", "flat, schedule ended", "plateaued"))
    assert _row("end of training", [ends[0], "", "", "", ends[1], "", "", ""]) in lines
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


def test_no_published_runs_keeps_the_table_or_says_how_to_publish(figures_stubbed, tmp_path,
                                                                   capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    (tmp_path / "results").mkdir()
    with pytest.raises(PCamError, match=r"no published run in .*results, so the results "
                       r"block of .*README.md was kept; train one with --published"):
        build_report(tmp_path / "results", readme, tmp_path / "images")
    assert readme.read_text() == README  # a table it cannot rebuild is never removed
    assert "is kept as it is" in capsys.readouterr().out
    # Only an empty block (a fresh file) gets the note on how to publish.
    readme.write_text(README.replace("old table\n", ""))
    build_report(tmp_path / "results", readme, tmp_path / "images")
    assert "No published run yet" in _block(readme)


def test_one_model_without_tta_or_test_split(figures_stubbed, tmp_path):
    results = tmp_path / "results"
    make_run(results, "only", "mobilenet", splits=("valid",), tta=False)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    build_report(results, readme, tmp_path / "images", gradcam=False)
    lines = _block(readme).splitlines()
    assert _row("metric", ["mobilenet train", "mobilenet valid", "mobilenet test"]) in lines
    accuracy = next(line for line in lines if line.startswith("| accuracy (%) |"))
    assert accuracy.endswith(" | – |")  # no test split: a dash, and no TTA column
    assert (tmp_path / "images" / "compare_roc_pr.png").exists()  # on valid


def test_missing_checkpoint_skips_gradcam_with_a_note(two_runs, capsys):
    results, readme, images = two_runs
    build_report(results, readme, images)
    assert "note: mobilenet-pub: mobilenet Grad-CAM (" in capsys.readouterr().out
    assert not (images / "mobilenet_gradcam.png").exists()


def test_cli_report(two_runs):
    from pcam.app.cli import main

    results, readme, images = two_runs
    assert main(["report", "--results", str(results), "--readme", str(readme),
                 "--images", str(images)]) == 0
    assert "mobilenet test" in readme.read_text()


@pytest.mark.parametrize("model_file", ["checkpoints/best.keras", "inference.keras"])
def test_report_draws_gradcam_and_diagram_from_checkpoint(figures_stubbed, tmp_path, monkeypatch,
                                                          capsys, model_file):
    """From the best checkpoint, or from the inference model a clone carries."""
    import numpy as np
    from test_gradcam import _dark_blob_model, _patches_with_blobs

    from pcam.data.describe import fingerprint
    from pcam.data.h5read import open_split
    from pcam.data.h5write import write_split

    results = tmp_path / "results"
    run_dir = make_run(results, "tiny", "mobilenet", n=24)
    (run_dir / model_file).parent.mkdir(exist_ok=True)
    _dark_blob_model().save(run_dir / model_file)
    with np.load(run_dir / "predictions" / "test.npz") as npz:
        labels = npz["y_true"]
    images = _patches_with_blobs([(20, 20 + 2 * i) for i in range(len(labels))])
    monkeypatch.setenv("PCAM_DATA_DIR", str(tmp_path / "data"))
    write_split(tmp_path / "data", "test", images, labels)
    record = json.loads((run_dir / "record.json").read_text())
    record["data"]["dir"] = "<external>/x/data"  # outside the project: $PCAM_DATA_DIR is used
    record["data"]["fingerprint"] = fingerprint({"test": open_split(tmp_path / "data", "test")})
    (run_dir / "record.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text(README)
    build_report(results, readme, tmp_path / "images")
    assert (tmp_path / "images" / "mobilenet_gradcam.png").stat().st_size > 5000
    assert "(images/mobilenet_gradcam.png)" in readme.read_text()
    if __import__("shutil").which("dot"):
        assert (tmp_path / "images" / "mobilenet_model.png").exists()

    # Other data under $PCAM_DATA_DIR (same labels, other patches): not the run's data, so
    # its Grad-CAM is not redrawn from them; the earlier figure stays.
    drawn = (tmp_path / "images" / "mobilenet_gradcam.png").read_bytes()
    write_split(tmp_path / "data", "test", images[::-1].copy(), labels)
    build_report(results, readme, tmp_path / "images")
    assert "is not the data run tiny was trained on" in capsys.readouterr().out
    assert (tmp_path / "images" / "mobilenet_gradcam.png").read_bytes() == drawn


def test_data_outside_the_project_is_named_with_the_variable_that_finds_it(
        two_runs, tmp_path, monkeypatch, capsys):
    """Records keep no path outside the project, so the note says where the run's data
    was (as the record names it) and to set PCAM_DATA_DIR, not to download PCam."""
    results, readme, images = two_runs
    record_file = results / "mobilenet-pub" / "record.json"
    record = json.loads(record_file.read_text())
    record["data"]["dir"] = "<external>/elsewhere/pcam"
    record_file.write_text(json.dumps(record))
    monkeypatch.setenv("PCAM_DATA_DIR", str(tmp_path / "empty"))
    build_report(results, readme, images)
    out = capsys.readouterr().out
    assert ("run mobilenet-pub used data outside the project (<external>/elsewhere/pcam), and "
            f"{tmp_path / 'empty'} does not hold its train split; set PCAM_DATA_DIR") in out
    assert "pcam download" not in out


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


def test_evaluated_train_split_is_used_with_its_ci(figures_stubbed, tmp_path):
    results = tmp_path / "results"
    run_dir = make_run(results, "all", "resnet50", splits=("train", "valid", "test"))
    readme = tmp_path / "README.md"
    readme.write_text(README)
    build_report(results, readme, tmp_path / "images", gradcam=False)
    block = _block(readme)
    columns = ("train", "valid", "test", "test TTA")
    assert _row("metric", [f"resnet50 {c}" for c in columns]) in block.splitlines()
    train = json.loads((run_dir / "record.json").read_text())["metrics"]["train"]["single"]
    assert f"| F1 (%) | {_pct(train, 'at_chosen.f1')} | " in block  # first column: train
    assert "the first training patches of the file (N below) evaluated like valid and test" in block


def test_a_deleted_predictions_file_keeps_the_block_instead_of_shrinking_it(two_runs, capsys):
    """Without a run's test predictions the paired comparison and the ROC/calibration
    figures cannot be rebuilt: the block is kept and the cause named, unless told."""
    results, readme, images = two_runs
    build_report(results, readme, images, gradcam=False)
    before = readme.read_text()
    assert "**Paired comparison** " in before and "compare_roc_pr.png" in before
    (results / "resnet50-pub" / "predictions" / "test.npz").unlink()
    # another history for that run: its curves figure would change
    record = records.read_record(results / "resnet50-pub")
    record["history"][0]["val_auc"] = 0.01
    records.write_record(results / "resnet50-pub", record)
    figures = {p.name: p.read_bytes() for p in images.glob("*.png")}
    with pytest.raises(PCamError, match="would lose the link to images/compare_reliability.png"
                                        ".*the paired comparison.*--drop-missing"):
        build_report(results, readme, images, gradcam=False)
    assert readme.read_text() == before
    # the figures too are as they were: the table and its figures stay one state
    assert {p.name: p.read_bytes() for p in images.glob("*.png")} == figures
    build_report(results, readme, images, gradcam=False, drop_missing=True)
    assert "**Paired comparison** " not in readme.read_text()


@pytest.mark.parametrize("damage", ["truncate", "nan", "not-npz", "no-y_prob"])
def test_damaged_predictions_are_named_with_what_to_do(two_runs, figures_stubbed, damage):
    import numpy as np

    results, readme, images = two_runs
    path = results / "resnet50-pub" / "predictions" / "test.npz"
    with np.load(path) as npz:
        arrays = dict(npz)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "nan":
        arrays["y_prob"][3] = np.nan
        np.savez(path, **arrays)
    elif damage == "not-npz":
        path.write_text("hello")
    else:
        del arrays["y_prob"]
        np.savez(path, **arrays)
    with pytest.raises(PCamError, match=r"resnet50-pub/predictions/test.npz.*rerun `python -m "
                                        r"pcam evaluate --run resnet50-pub`"):
        build_report(results, readme, images, gradcam=False)
    assert readme.read_text() == README
    assert figures_stubbed == []  # named before any figure was drawn


def test_a_metric_that_is_not_a_number_shows_a_dash_not_nan():
    from pcam.report.cells import percent_cell

    assert percent_cell(float("nan"), [0.1, 0.2]) == "–"
    assert percent_cell(0.5, [float("nan"), float("nan")]) == "50.0"
    assert percent_cell(0.5, [0.4, 0.6]) == "50.0 ± 10.0"


def test_a_read_only_readme_is_named_before_any_figure_is_drawn(two_runs, monkeypatch):
    """(`os.access` stands in for a read-only file: CI runs as root, who may write any.)"""
    import os

    results, readme, images = two_runs
    monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) != os.fspath(readme))
    with pytest.raises(PCamError, match=r"README.md is a read-only file, so the report cannot "
                                        r"update it; .*nothing was changed"):
        build_report(results, readme, images, gradcam=False)
    assert not images.exists() and readme.read_text() == README


def test_a_linked_readme_is_updated_through_its_link(two_runs):
    results, readme, images = two_runs
    target = readme.with_name("real.md")
    readme.rename(target)
    readme.symlink_to(target.name)
    build_report(results, readme, images, gradcam=False)
    assert readme.is_symlink() and "| metric |" in target.read_text()


def test_images_that_is_a_file_is_named_before_anything_is_drawn(two_runs):
    results, readme, images = two_runs
    images.write_text("not a folder")
    with pytest.raises(PCamError, match="is a file, not a folder: give --images"):
        build_report(results, readme, images, gradcam=False)
    assert readme.read_text() == README
