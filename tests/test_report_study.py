"""The recipe study's README block and figure, from fake but schema-complete arm records."""

import json

import pytest
from fake_runs import make_run

from pcam import records
from pcam.errors import PCamError
from pcam.report.build import build_report
from pcam.report.study import END, START, pending_arms, study_rows, study_table

ARMS = {"baseline": "the recipe as published", "aug-none": "no augmentation",
        "size-160": "input upsampled to 160 px"}


@pytest.fixture
def study_folder(tmp_path):
    folder = tmp_path / "results" / "study"
    folder.mkdir(parents=True)
    plan = {"budget_minutes": 10.0, "hardware": {}, "arms": {
        arm: {"what": what, "cost_key": {}, "costs": {}, "settings": {}}
        for arm, what in ARMS.items()}}
    (folder / "plan.json").write_text(json.dumps(plan))
    for seed, arm in enumerate(("baseline", "aug-none")):
        make_run(folder, arm, published=False, seed=seed)
    running = make_run(folder, "size-160", published=False, seed=5)
    record = records.read_record(running)
    record["status"] = "running"
    records.write_record(running, record)
    return folder


def test_table_has_a_row_per_complete_arm_in_plan_order(study_folder):
    rows = study_rows(study_folder)
    assert [r["arm"] for r in rows] == ["baseline", "aug-none"]
    assert pending_arms(study_folder) == ["size-160"]
    table = study_table(rows, pending_arms(study_folder))
    lines = table.splitlines()
    assert lines[0].startswith("| arm | change | epochs | patches an epoch | train min | "
                               "valid AUC (%) |")
    baseline = rows[0]["record"]
    auc = baseline["metrics"]["test"]["single"]["roc_auc"]
    low, high = baseline["metrics"]["test"]["single"]["ci"]["roc_auc"]
    row = lines[2].split(" | ")
    assert row[0] == "| `baseline`" and row[1] == "the recipe as published"
    max_samples = baseline["config"]["max_samples"]
    assert row[3] == (f"{max_samples:,}" if max_samples else "all")
    assert row[4] == "45"  # 2700 s of training
    assert row[6] == f"{100 * auc:.1f} ± {100 * (high - low) / 2:.1f}"
    assert "Not complete yet: `size-160`." in table


def test_report_rebuilds_the_study_block_and_figure(study_folder, tmp_path):
    results = study_folder.parent
    make_run(results, "mobilenet-x")
    readme = tmp_path / "README.md"
    readme.write_text("# R\n<!-- results:start -->\n<!-- results:end -->\n"
                      f"## Study\n{START}\nstale text\n{END}\ntail\n")
    images = tmp_path / "images"
    build_report(results=results, readme=readme, images=images, gradcam=False)
    text = readme.read_text()
    block = text.split(START)[1].split(END)[0]
    assert "| `baseline` |" in block and "| `aug-none` |" in block and "stale text" not in block
    assert "![Recipe study: valid and test ROC AUC per arm](images/study.png)" in block
    assert (images / "study.png").stat().st_size > 10_000
    assert text.endswith(f"{END}\ntail\n")
    build_report(results=results, readme=readme, images=images, gradcam=False)
    assert readme.read_text() == text  # deterministic


def test_unreadable_plan_names_the_file(study_folder):
    (study_folder / "plan.json").write_text("{")
    with pytest.raises(PCamError, match=r"cannot read the study plan .*plan.json"):
        study_rows(study_folder)


def test_arms_from_a_dirty_tree_are_named_under_the_table(study_folder):
    """An arm whose record says it trained with uncommitted changes is named with its
    commit; a clean arm is not."""
    path = study_folder / "aug-none"
    record = records.read_record(path)
    record["environment"]["git"] = {"commit": "40fb09e" + "0" * 33, "dirty": True}
    records.write_record(path, record)
    rows = study_rows(study_folder)
    assert not rows[0]["record"]["environment"]["git"]["dirty"]  # baseline stays clean

    table = study_table(rows)
    assert ("**Dirty tree:** `aug-none` (commit 40fb09e) trained with uncommitted changes "
            "in the tree") in table
    assert "`baseline`" not in table.split("**Dirty tree:**")[1]


def test_rows_put_mobilenet_first_and_each_seed_after_its_arm(tmp_path):
    """Plan order is the order arms were first run; the table groups by model and puts
    `<arm>-seed<N>` under `<arm>`."""
    folder = tmp_path / "study"
    folder.mkdir()
    arms = {"baseline": "mobilenet", "scratch-x": "resnet50", "aug-none": "mobilenet",
            "baseline-seed1": "mobilenet", "scratch-x-seed1": "resnet50"}
    plan = {"budget_minutes": 10.0, "hardware": {}, "arms": {
        arm: {"what": arm, "cost_key": {}, "costs": {}, "settings": {}} for arm in arms}}
    (folder / "plan.json").write_text(json.dumps(plan))
    for seed, (arm, model) in enumerate(arms.items()):
        make_run(folder, arm, model, published=False, seed=seed)
    assert [r["arm"] for r in study_rows(folder)] == [
        "baseline", "baseline-seed1", "aug-none", "scratch-x", "scratch-x-seed1"]
