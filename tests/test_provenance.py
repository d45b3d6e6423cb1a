"""Provenance: the weights and source digests a record keeps, and what `pcam report`
says about runs from a dirty tree, figures that need a checkpoint and timings."""

import hashlib
import json

import numpy as np
import pytest
from fake_runs import make_run
from PIL import Image

from pcam.core.errors import PCamError
from pcam.core.paths import DEMO_WEIGHTS, PROJ_ROOT
from pcam.report.build import build_report
from pcam.report.cells import round_sig
from pcam.report.table import END, START
from pcam.run import records
from pcam.run.config import TrainConfig
from pcam.train.weights import weights_provenance

README = f"# Title\n\n{START}\nold table\n{END}\n"
DIRTY = ("published run mobilenet-pub (commit 295794b) was trained from a dirty tree "
         "(uncommitted changes, not stored in the record), so the numbers cannot be traced to "
         "a commit; retrain it from a clean committed tree, or pass --allow-dirty to publish "
         "them marked as such under the table")


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# The weights file a run started from.

def test_record_keeps_the_sha256_of_the_weights_file(tmp_path, synthetic_data_dir):
    from pcam.run.runlock import release_lock
    from pcam.train.session import start_run

    config = TrainConfig(model="mobilenet", run="w", data_dir=str(synthetic_data_dir),
                         alpha=0.5, weights=str(DEMO_WEIGHTS), epochs=1, head_epochs=0,
                         max_samples=32, max_eval_samples=32, precision="float32")
    run = start_run(config, results=tmp_path, verbose=0)
    release_lock(run.lock)
    backbone = records.read_record(tmp_path / "w")["backbone"]
    assert backbone["weights_sha256"] == _sha256(DEMO_WEIGHTS)
    assert backbone["weights_file"] == DEMO_WEIGHTS.name and "weights_note" not in backbone
    # the digest pcam/assets/README.md publishes for the shipped file
    assert backbone["weights_sha256"] in (PROJ_ROOT / "pcam/assets/README.md").read_text()


def test_imagenet_weights_are_hashed_in_keras_cache_or_said_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    (tmp_path / "keras" / "models").mkdir(parents=True)
    cached = tmp_path / "keras" / "models" / "mobilenet_5_0_224_tf_no_top.h5"
    cached.write_bytes(b"stand-in for Keras' download")
    found = weights_provenance(TrainConfig(model="mobilenet", alpha=0.5))  # 96 px: the 224 file
    assert found == {"weights_file": cached.name, "weights_sha256": _sha256(cached)}
    missing = weights_provenance(TrainConfig(model="mobilenet", alpha=0.5, image_size=160))
    assert missing["weights_file"] == "mobilenet_5_0_160_tf_no_top.h5"
    assert missing["weights_sha256"] is None
    assert "was not in Keras' cache" in missing["weights_note"]
    random = weights_provenance(TrainConfig(model="resnet50", head_epochs=0, weights=None))
    assert random["weights_sha256"] is None and random["weights_note"].startswith("random")


def test_schema_checks_the_new_digests(tmp_path):
    record = json.loads((make_run(tmp_path, "r") / "record.json").read_text())
    record["backbone"].update(weights_file="w.h5", weights_sha256="a" * 64)
    records.validate(record)
    record["backbone"]["weights_sha256"] = "not a digest"
    with pytest.raises(PCamError, match=r"\$\.backbone\.weights_sha256"):
        records.validate(record)


# The source an import read.

def _images(root, names_by_label):
    for label, names in names_by_label.items():
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            patch = np.full((96, 96, 3), 40 * i + 100 * label, np.uint8)
            Image.fromarray(patch).save(root / str(label) / name)


def test_import_records_a_digest_of_its_source_listing(tmp_path):
    from pcam.data.import_images import import_images

    src = tmp_path / "src"
    _images(src, {0: ["a.png", "b.png"], 1: ["c.png", "d.png"]})
    info = import_images(src, tmp_path / "out", split="test")
    lines = sorted(f"{p.relative_to(src).as_posix()}\t{p.stat().st_size}\t{p.parent.name}\n"
                   for p in src.rglob("*.png"))
    expected = hashlib.sha256("".join(lines).encode()).hexdigest()
    assert info["source_listing_sha256"] == {"test": expected}
    assert json.loads((tmp_path / "out" / "dataset.json").read_text()) == info
    # the record copies dataset.json into data.info, and the schema accepts it
    record = json.loads((make_run(tmp_path / "results", "r") / "record.json").read_text())
    record["data"]["info"] = info
    records.validate(record)

    (src / "1" / "d.png").rename(src / "0" / "d.png")  # the same files, one label changed
    again = import_images(src, tmp_path / "out2", split="test")
    assert again["source_listing_sha256"]["test"] != expected


# What the report says.

@pytest.fixture
def dirty_runs(tmp_path, figures_stubbed):
    """Two published runs, one trained from a dirty tree; figures are placeholders."""
    results = tmp_path / "results"
    make_run(results, "mobilenet-pub", "mobilenet", seed=1)
    make_run(results, "resnet50-pub", "resnet50", seed=2)
    folder = results / "mobilenet-pub"
    record = records.read_record(folder)
    record["environment"]["git"] = {"commit": "295794b" + "0" * 33, "dirty": True}
    records.write_record(folder, record)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    return results, readme, tmp_path / "images"


def test_report_refuses_a_published_run_from_a_dirty_tree(dirty_runs, capsys):
    from pcam.app.cli import main

    results, readme, images = dirty_runs
    with pytest.raises(PCamError) as refused:
        build_report(results, readme, images, gradcam=False)
    assert str(refused.value) == DIRTY
    assert readme.read_text() == README and not images.exists()  # nothing written
    args = ["report", "--results", str(results), "--readme", str(readme), "--images", str(images)]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"error: {DIRTY}"


def test_allow_dirty_publishes_it_with_a_note_under_the_table(dirty_runs):
    from pcam.app.cli import main

    results, readme, images = dirty_runs
    assert main(["report", "--results", str(results), "--readme", str(readme),
                 "--images", str(images), "--allow-dirty"]) == 0
    block = readme.read_text().split(START)[1].split(END)[0]
    note = ("**Dirty tree:** run `mobilenet-pub`: made from a dirty tree at commit 295794b. "
            "The uncommitted changes are not stored")
    assert note in block and "resnet50-pub`: made" not in block
    table, rest = block.split("\n\n", 1)
    assert table.startswith("\n| metric |") and rest.startswith(note)  # right under the table


def test_demo_report_is_not_refused_but_marked(dirty_runs):
    results, readme, images = dirty_runs
    build_report(results, readme, images, gradcam=False, published_only=False)
    assert "made from a dirty tree at commit 295794b" in readme.read_text()


def test_missing_checkpoint_is_named_and_its_figures_marked(dirty_runs, capsys):
    results, readme, images = dirty_runs
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "mobilenet_gradcam.png")  # from an earlier report
    build_report(results, readme, images, allow_dirty=True)
    out = capsys.readouterr().out.splitlines()
    # the terminal names the real files (the folders lie outside the project)
    best = results / "mobilenet-pub" / "checkpoints" / "best.keras"
    assert (f"note: mobilenet-pub: mobilenet Grad-CAM ({images / 'mobilenet_gradcam.png'}) "
            f"needs {best}, which is missing (checkpoints are not committed); the file an "
            "earlier report drew is kept") in out
    best = results / "resnet50-pub" / "checkpoints" / "best.keras"
    assert (f"note: resnet50-pub: resnet50 diagram ({images / 'resnet50_model.png'}) needs "
            f"{best}, which is missing (checkpoints are not committed); not drawn") in out
    assert not any("<external>" in line for line in out)
    text = readme.read_text()
    assert "[mobilenet Grad-CAM](images/mobilenet_gradcam.png)†" in text
    assert "[mobilenet curves](images/mobilenet_curves.png) ·" in text  # no mark: records only
    assert "\n\n† needs the run's checkpoint (not committed): `pcam report` redraws" in text


# Timings.

@pytest.mark.parametrize(("value", "text"), [
    (19.6, "20"), (876.4, "880"), (1234.0, "1,200"), (5.14, "5.1"), (0.0473, "0.047"),
    (9.96, "10"), (647.2, "650"), (73.0, "73"), (0.0, "0"),
])
def test_timings_have_two_significant_figures(value, text):
    assert round_sig(value) == text


def test_protocol_says_timings_vary(dirty_runs):
    results, readme, images = dirty_runs
    build_report(results, readme, images, gradcam=False, allow_dirty=True)
    lines = readme.read_text().splitlines()
    # 2,701 s and 2,702 s
    assert "| train minutes (planned / realised) | – / 45 |  |  |  | – / 45 |  |  |  |" in lines
    assert ("Timings are rounded to two significant figures: on a shared machine they vary up "
            "to 2x between runs.") in readme.read_text()


def test_display_path_keeps_the_project_name_of_a_linked_data_folder(tmp_path, monkeypatch):
    """data/pcam-subset as a link to a folder elsewhere is recorded as data/pcam-subset,
    so `pcam report` finds it again; a folder outside the project keeps only its last parts."""
    from pcam.core import paths

    project, elsewhere = tmp_path / "repo", tmp_path / "store" / "pcam-subset"
    (project / "data").mkdir(parents=True)
    elsewhere.mkdir(parents=True)
    (project / "data" / "pcam-subset").symlink_to(elsewhere)
    monkeypatch.setattr(paths, "PROJ_ROOT", project)

    assert paths.display_path(project / "data" / "pcam-subset") == "data/pcam-subset"
    assert paths.from_display_path("data/pcam-subset") == project / "data" / "pcam-subset"
    assert paths.display_path(elsewhere) == "<external>/store/pcam-subset"
    assert paths.from_display_path("<external>/store/pcam-subset") is None
    # messages name the real place of what lies outside the project, never <external>
    assert paths.terminal_path(elsewhere) == str(elsewhere)
    assert paths.terminal_path(project / "data" / "pcam-subset") == "data/pcam-subset"


def test_messages_show_real_paths_outside_the_project(tmp_path, capsys):
    """`pcam report --readme` outside the project: its one-line refusal names the file."""
    from pcam.app.cli import main

    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert main(["report", "--results", str(tmp_path / "none"), "--readme", str(readme)]) != 0
    err = capsys.readouterr().err
    assert str(readme) in err and "<external>" not in err


def test_git_state_is_dirty_for_code_changes_not_for_results(tmp_path, monkeypatch):
    """A change to tracked code makes a run dirty; one under results/ (a record, the
    study's plan.json, written by runs themselves) does not."""
    import subprocess

    from pcam.core import environment

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "results" / "study").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "study" / "plan.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "start")
    monkeypatch.setattr(environment, "PROJ_ROOT", tmp_path)

    assert environment.git_state()["dirty"] is False
    (tmp_path / "results" / "study" / "plan.json").write_text('{"arms": {}}\n')
    (tmp_path / "untracked.h5").write_bytes(b"data")
    assert environment.git_state()["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    state = environment.git_state()
    assert state["dirty"] is True and len(state["commit"]) == 40


@pytest.mark.parametrize("git", [{"commit": None, "dirty": None},
                                 {"commit": "295794b" + "0" * 33, "dirty": None},
                                 {"commit": None, "dirty": False}])
def test_a_run_whose_git_state_is_unknown_is_refused_like_a_dirty_one(figures_stubbed, tmp_path,
                                                                      git):
    """git missing or unreadable ("dubious ownership") when the run was made: provenance
    fails closed."""
    results = tmp_path / "results"
    folder = make_run(results, "mobilenet-pub", "mobilenet", seed=1)
    record = records.read_record(folder)
    record["environment"]["git"] = git
    records.write_record(folder, record)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    with pytest.raises(PCamError, match="mobilenet-pub: the record does not say which commit "
                                        ".* cannot be traced"):
        build_report(results, readme, tmp_path / "images", gradcam=False)
    assert readme.read_text() == README and not (tmp_path / "images").exists()
    build_report(results, readme, tmp_path / "images", gradcam=False, allow_dirty=True)
    assert ("run `mobilenet-pub`: commit or tree state unknown (git unavailable when it ran)"
            in readme.read_text())
