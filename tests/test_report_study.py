"""The study's and the curves' README blocks and figures, from fake but schema-complete records."""

import json
import shutil

import numpy as np
import pytest
from fake_runs import make_run

from pcam.core.errors import PCamError
from pcam.report import curves, progress
from pcam.report.build import build_report
from pcam.report.study import (
    END,
    START,
    SUMMARY_END,
    SUMMARY_START,
    paired_differences,
    pending_arms,
    shown_arms,
    study_rows,
    study_table,
    summary_arms,
    verdict,
)
from pcam.run import records

ARMS = {"baseline": ("the recipe", None), "baseline-seed1": ("the recipe, seed 1", None),
        "aug-none": ("no augmentation", "baseline"),
        "aug-none-seed1": ("no augmentation, seed 1", "baseline-seed1"),
        "size-160": ("input upsampled to 160 px", "baseline")}


def _plan(folder, arms):
    plan = {"hardware": {}, "arms": {
        arm: {"what": what, "budget_minutes": 10.0, "baseline": base, "cost_key": {},
              "costs": {}, "settings": {}} for arm, (what, base) in arms.items()}}
    (folder / "plan.json").write_text(json.dumps(plan))


@pytest.fixture
def study_folder(tmp_path):
    folder = tmp_path / "results" / "study"
    folder.mkdir(parents=True)
    _plan(folder, ARMS)
    for seed, arm in enumerate(("baseline", "baseline-seed1", "aug-none", "aug-none-seed1")):
        make_run(folder, arm, published=False, seed=seed)
    running = make_run(folder, "size-160", published=False, seed=5)
    record = records.read_record(running)
    record["status"] = "running"
    records.write_record(running, record)
    return folder


def test_rows_pair_each_seed_with_the_baseline_of_that_seed(study_folder):
    rows = study_rows(study_folder)
    assert [(r["arm"], r["name"], r["seed"], r["baseline"]) for r in rows] == [
        ("baseline", "baseline", 0, None), ("baseline-seed1", "baseline", 1, None),
        ("aug-none", "aug-none", 0, "baseline"),
        ("aug-none-seed1", "aug-none", 1, "baseline-seed1")]
    assert pending_arms(study_folder) == ["size-160"]


def test_paired_difference_is_the_arm_minus_its_baseline_on_valid(study_folder):
    from sklearn.metrics import roc_auc_score

    rows = study_rows(study_folder)
    diffs = paired_differences(study_folder, rows)
    assert set(diffs) == {"aug-none", "aug-none-seed1"}
    for arm, base in (("aug-none", "baseline"), ("aug-none-seed1", "baseline-seed1")):
        with np.load(study_folder / arm / "predictions" / "valid.npz") as a, \
                np.load(study_folder / base / "predictions" / "valid.npz") as b:
            expected = (roc_auc_score(a["y_true"], a["y_prob"])
                        - roc_auc_score(b["y_true"], b["y_prob"]))
        assert diffs[arm]["diff"] == pytest.approx(expected)
        low, high = diffs[arm]["ci"]
        assert low <= diffs[arm]["diff"] <= high and diffs[arm]["unit"] == "patches"


@pytest.mark.parametrize("cis, words", [
    ([(0.01, 0.03), (0.002, 0.02)], "better"),
    ([(-0.03, -0.01), (-0.02, -0.001)], "worse"),
    ([(0.01, 0.03), (-0.001, 0.02)], "no difference detected at this budget"),
    ([(0.01, 0.03), (-0.03, -0.01)], "no difference detected at this budget"),
    ([(0.01, 0.03)], "one seed: not claimed"),
    ([(0.01, 0.03), None], "one seed: not claimed"),
])
def test_verdict_claims_an_effect_only_when_every_seed_excludes_zero(cis, words):
    diffs = [None if ci is None else {"diff": sum(ci) / 2, "ci": list(ci)} for ci in cis]
    assert verdict(diffs) == words


def test_table_shows_valid_only_with_the_paired_differences_and_the_rule(study_folder):
    rows = study_rows(study_folder)
    diffs = paired_differences(study_folder, rows)
    table = study_table(rows, pending_arms(study_folder), diffs)
    lines = table.splitlines()
    assert lines[0] == ("| arm | change | seed | epochs | minutes | end | valid AUC (%) | "
                        "Δ valid AUC vs baseline (points, 95% CI) | verdict |")
    assert "test" not in lines[0]
    aug = [line.split(" | ") for line in lines if "| `aug-none` |" in line][0]
    d = diffs["aug-none"]
    assert aug[7] == (f"{100 * d['diff']:+.1f} [{100 * d['ci'][0]:+.1f}, "
                      f"{100 * d['ci'][1]:+.1f}]")
    assert aug[8].rstrip(" |") == verdict([diffs["aug-none"], diffs["aug-none-seed1"]])
    assert aug[4] == "– / 45"  # unplanned fake runs: 2700 s realised
    assert "Not complete yet: `size-160`." in table
    # every row counts for the keep-what-was-shown guard, the first (baseline) one too
    assert shown_arms(table) == {"baseline", "baseline-seed1", "aug-none", "aug-none-seed1"}
    assert "excludes zero, in the same direction, for every seed" in table
    # as the records say: patience 5 cannot stop a 5-epoch run
    assert "early stopping is off, so every arm spends its budget" in table


def test_report_rebuilds_the_study_block_and_figure(study_folder, tmp_path, request):
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
    assert "](images/study.png)" in block
    assert (images / "study.png").stat().st_size > 10_000
    assert text.endswith(f"{END}\ntail\n")
    request.getfixturevalue("figures_stubbed")  # the text does not depend on the drawing
    build_report(results=results, readme=readme, images=images, gradcam=False)
    assert readme.read_text() == text  # deterministic


def test_report_keeps_the_study_block_when_an_arm_it_shows_is_gone(figures_stubbed, study_folder,
                                                                   tmp_path):
    """One interrupted or removed arm must not replace an 18-arm table with less."""
    results = study_folder.parent
    make_run(results, "mobilenet-x")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n"
                      f"{START}\n{END}\n")
    build_report(results=results, readme=readme, images=tmp_path / "images", gradcam=False)
    before = readme.read_text()
    record = records.read_record(study_folder / "aug-none")
    record["status"] = "running"  # interrupted by a rerun
    records.write_record(study_folder / "aug-none", record)
    with pytest.raises(PCamError, match="shows aug-none, which .* no longer holds complete, "
                                        "so the study block was kept"):
        build_report(results=results, readme=readme, images=tmp_path / "images",
                     gradcam=False)
    assert readme.read_text() == before


def test_the_readme_summary_gives_each_arm_per_seed_and_keeps_what_it_showed(
        figures_stubbed, study_folder, tmp_path):
    results = study_folder.parent
    make_run(results, "mobilenet-x")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n"
                      f"{SUMMARY_START}\nold\n{SUMMARY_END}\n")
    build_report(results=results, readme=readme, images=tmp_path / "images", gradcam=False)
    text = readme.read_text()
    block = text.split(SUMMARY_START)[1].split(SUMMARY_END)[0]
    lines = block.strip().splitlines()
    assert lines[0] == "| arm | change | Δ valid AUC, seed 0 | Δ valid AUC, seed 1 | verdict |"
    diffs = paired_differences(study_folder, study_rows(study_folder))
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[0] == "`aug-none`" and cells[1] == "no augmentation"
    for cell, arm in zip(cells[2:4], ("aug-none", "aug-none-seed1"), strict=True):
        d = diffs[arm]
        assert cell == (f"{100 * d['diff']:+.1f} [{100 * d['ci'][0]:+.1f}, "
                        f"{100 * d['ci'][1]:+.1f}]")
    assert cells[4] == verdict([diffs["aug-none"], diffs["aug-none-seed1"]])
    # baselines are not rows; the running arm is not shown
    assert [line.split(" |")[0] for line in lines if line.startswith("| `")] == ["| `aug-none`"]
    assert "valid" in block.lower() and "test" not in block and "[docs/study.md]" in block
    assert not (tmp_path / "images" / "study.png").exists()  # the figure is the full table's
    assert summary_arms(block) == {"aug-none", "aug-none-seed1"}
    # an arm the summary showed that is no longer complete keeps the README as it was
    record = records.read_record(study_folder / "aug-none-seed1")
    record["status"] = "running"
    records.write_record(study_folder / "aug-none-seed1", record)
    with pytest.raises(PCamError, match="shows aug-none-seed1, which"):
        build_report(results=results, readme=readme, images=tmp_path / "images",
                     gradcam=False)
    assert readme.read_text() == text


def test_unreadable_plan_names_the_file(study_folder):
    (study_folder / "plan.json").write_text("{")
    with pytest.raises(PCamError, match=r"cannot read the study plan .*plan.json"):
        study_rows(study_folder)
    (study_folder / "plan.json").write_text("{}")
    with pytest.raises(PCamError, match=r"plan .*plan.json has no 'arms' object"):
        study_rows(study_folder)


def test_arms_from_a_dirty_tree_are_named_under_the_table(study_folder):
    path = study_folder / "aug-none"
    record = records.read_record(path)
    record["environment"]["git"] = {"commit": "40fb09e" + "0" * 33, "dirty": True}
    records.write_record(path, record)
    table = study_table(study_rows(study_folder))
    assert ("**Dirty tree:** `aug-none` (commit 40fb09e) trained with uncommitted changes "
            "in the tree") in table
    assert "`baseline`" not in table.split("**Dirty tree:**")[1]


def test_a_legacy_plan_without_baselines_pairs_arms_by_name(tmp_path):
    """Plans written before arms named their baseline (the first study) still report:
    `<arm>-seed<N>` pairs with `baseline-seed<N>`, ResNet50 arms with scratch-baseline."""
    folder = tmp_path / "study"
    folder.mkdir()
    arms = {"baseline": "mobilenet", "scratch-baseline": "resnet50", "aug-none": "mobilenet",
            "baseline-seed1": "mobilenet", "scratch-x": "resnet50"}
    plan = {"budget_minutes": 10.0, "hardware": {}, "arms": {
        arm: {"what": arm, "cost_key": {}, "costs": {}, "settings": {}} for arm in arms}}
    (folder / "plan.json").write_text(json.dumps(plan))
    for seed, (arm, model) in enumerate(arms.items()):
        make_run(folder, arm, model, published=False, seed=seed)
    rows = study_rows(folder)
    assert [(r["arm"], r["baseline"]) for r in rows] == [
        ("baseline", None), ("baseline-seed1", None), ("aug-none", "baseline"),
        ("scratch-baseline", None), ("scratch-x", "scratch-baseline")]


def test_progress_rule_accounts_for_the_learning_rate_at_the_end():
    def record(val_aucs, rates, peak=1e-3, phase="finetune"):
        history = [{"epoch": i + 1, "phase": phase, "val_auc": auc, "learning_rate": rate}
                   for i, (auc, rate) in enumerate(zip(val_aucs, rates, strict=True))]
        return {"config": {"finetune_learning_rate": peak, "learning_rate": peak},
                "history": history}

    improving = record([0.8, 0.9, 0.91], [1e-3, 5e-4, 1e-5])
    assert progress.progress(improving)["state"] == progress.IMPROVING
    annealed = record([0.8, 0.92, 0.91], [1e-3, 5e-4, 1e-5])
    assert progress.progress(annealed)["state"] == progress.SCHEDULE_ENDED
    assert progress.progress_cell(annealed) == "flat, schedule ended (rate 1.0% of peak)"
    live = record([0.8, 0.92, 0.91], [1e-3, 1e-3, 1e-3])
    assert progress.progress(live)["state"] == progress.PLATEAUED
    assert progress.progress_cell(live) == "plateaued (rate 100% of peak)"
    assert progress.progress({"history": []}) is None and progress.progress_cell({}) == "–"
    once = record([0.86], [1e-5])  # one validation: best and last by definition, no trend
    assert progress.progress(once)["state"] == progress.ONE_EPOCH
    assert progress.progress_cell(once) == "one epoch (rate 1.0% of peak)"


def _curves_folder(tmp_path, *, shares: bool = False):
    """Budget-curve points on 120 training patches; with `shares`, also the data curve's
    points on half of them at 30 minutes."""
    folder = tmp_path / "results" / "curves"
    folder.mkdir(parents=True)
    points = {"mobilenet-10min": ("mobilenet", 10.0, 120), "mobilenet-30min": (
        "mobilenet", 30.0, 120), "resnet50-10min": ("resnet50", 10.0, 120),
        "resnet50-30min": ("resnet50", 30.0, 120)}
    if shares:
        points.update({"mobilenet-30min-1of2": ("mobilenet", 30.0, 60),
                       "resnet50-30min-1of2": ("resnet50", 30.0, 60)})
    plan = {"hardware": {}, "arms": {run: {"what": run, "budget_minutes": minutes}
                                     for run, (_, minutes, _) in points.items()}}
    (folder / "plan.json").write_text(json.dumps(plan))
    for seed, (run, (model, minutes, patches)) in enumerate(points.items()):
        path = make_run(folder, run, model, published=False, seed=seed, tta=False)
        record = records.read_record(path)
        record["config"]["planned_minutes"] = minutes
        record["timings"]["train_seconds"] = minutes * 60 * (1.2 if seed == 3 else 0.95)
        record["data"]["splits"]["train"]["n"] = patches
        records.write_record(path, record)
    return folder


def test_curves_pair_the_models_at_each_budget_on_test(tmp_path):
    from sklearn.metrics import roc_auc_score

    folder = _curves_folder(tmp_path)
    points = curves.curve_points(folder)
    assert [p["run"] for p in points] == ["mobilenet-10min", "mobilenet-30min",
                                          "resnet50-10min", "resnet50-30min"]
    found = curves.gaps(folder, points)
    assert [(g["budget"], g["patches"]) for g in found] == [(10.0, 120), (30.0, 120)]
    with np.load(folder / "mobilenet-10min" / "predictions" / "test.npz") as a, \
            np.load(folder / "resnet50-10min" / "predictions" / "test.npz") as b:
        expected = roc_auc_score(a["y_true"], a["y_prob"]) - roc_auc_score(b["y_true"],
                                                                           b["y_prob"])
    assert found[0]["diff"] == pytest.approx(expected)
    table = curves.curves_table(points, found)
    assert "| `resnet50-30min` | resnet50 | 30 | 120 | 5 | 30 / 36 † |" in table
    assert "| `mobilenet-10min` | mobilenet | 10 | 120 | 5 | 10 / 10 |" in table
    assert "MobileNet minus ResNet50 (points, 95% CI)" in table


def test_the_changes_along_each_curve_are_paired_differences_of_differences(tmp_path):
    from sklearn.metrics import roc_auc_score

    folder = _curves_folder(tmp_path, shares=True)
    points = curves.curve_points(folder)
    changes = curves.gap_changes(folder, points)
    assert [(c["start"], c["end"]) for c in changes] == [((10.0, 120), (30.0, 120)),
                                                         ((30.0, 60), (30.0, 120))]

    def auc(run):
        with np.load(folder / run / "predictions" / "test.npz") as f:
            return roc_auc_score(f["y_true"], f["y_prob"])

    budget = changes[0]
    assert budget["transfer"]["value"] == pytest.approx(
        auc("mobilenet-30min") - auc("mobilenet-10min"))
    assert budget["scratch"]["value"] == pytest.approx(
        auc("resnet50-30min") - auc("resnet50-10min"))
    assert budget["gap"]["value"] == pytest.approx(
        budget["transfer"]["value"] - budget["scratch"]["value"])
    for change in changes:
        for key in ("transfer", "scratch", "gap"):
            low, high = change[key]["ci"]
            assert low <= change[key]["value"] <= high
    table = curves.curves_table(points, curves.gaps(folder, points), changes=changes)
    assert "| budget curve | 10 min, 120 patches | 30 min, 120 patches | " in table
    assert "| data curve | 30 min, 60 patches | 30 min, 120 patches | " in table
    assert "*Changes* follow each curve" in table
    # without both models at both ends of a curve there is no change to give
    shutil.rmtree(folder / "resnet50-30min-1of2")
    assert [c["start"] for c in curves.gap_changes(folder, curves.curve_points(folder))] == [
        (10.0, 120)]


def test_a_part_epoch_plan_shows_the_share_of_patches_seen():
    record = {"history": [{}], "config": {"steps_per_epoch": 275, "batch_size": 64},
              "data": {"splits": {"train": {"n": 20000}}}}
    assert progress.epochs_cell(record) == "0.88" and progress.part_epochs([record])
    whole = {**record, "config": {"steps_per_epoch": None, "batch_size": 64}}
    assert progress.epochs_cell(whole) == "1" and not progress.part_epochs([whole])
    over = {**record, "history": [{}, {}], "config": {"steps_per_epoch": 400, "batch_size": 64}}
    assert progress.epochs_cell(over) == "2"  # a step count that covers every patch
    assert progress.epochs_cell({}) == "0"


def test_report_draws_the_curves_block_and_figure(tmp_path):
    """Both panels drawn for real: the budget curve and the data curve (shares)."""
    folder = _curves_folder(tmp_path, shares=True)
    make_run(folder.parent, "mobilenet-x")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n"
                      f"{curves.START}\nold\n{curves.END}\n")
    build_report(results=folder.parent, readme=readme, images=tmp_path / "images",
                 gradcam=False)
    block = readme.read_text().split(curves.START)[1].split(curves.END)[0]
    assert "| `mobilenet-30min` |" in block and "old" not in block
    assert "| 30 | 60 |" in block  # the data curve's pair
    assert "](images/curves.png)" in block
    assert (tmp_path / "images" / "curves.png").stat().st_size > 10_000


def test_a_curve_point_can_be_the_published_run_of_its_model(tmp_path):
    """The 100-minute points are the published runs: the report finds runs inside an
    experiment's folder (one with a plan.json), not only at the top of results/."""
    from pcam.report.inputs import load_records, published_records
    from pcam.study import experiments as study

    arms = study.EXPERIMENTS["curves"]
    top = [name for name, arm in arms.items() if arm["settings"].get("published")]
    assert sorted(top) == ["mobilenet-100min", "resnet50-100min"]
    assert arms["mobilenet-100min"]["settings"]["tta"] is True
    assert arms["resnet50-100min"]["settings"]["tta"] is False
    folder = _curves_folder(tmp_path)
    make_run(folder, "mobilenet-100min", "mobilenet", published=True)
    make_run(folder, "resnet50-100min", "resnet50", published=True)
    make_run(folder.parent / "loose", "not-an-experiment", published=True)  # no plan.json
    chosen = published_records(load_records(folder.parent))
    assert [r["run"] for _, r in chosen] == ["mobilenet-100min", "resnet50-100min"]


def test_the_curves_replace_the_published_runs_only_once_they_cover_every_model(
        figures_stubbed, tmp_path, capsys):
    """One protocol in the table: while the curves hold a published point of one model
    only, the runs published before stay and the point waits, said by the report;
    once every model's point is complete, the curves' points replace them all."""
    from pcam.report.build import build_report
    from pcam.report.inputs import load_records, published_records, waiting_runs

    results = tmp_path / "results"
    folder = _curves_folder(tmp_path)
    assert folder.parent == results
    make_run(results, "mobilenet-subset", "mobilenet", published=True)
    make_run(results, "resnet50-subset", "resnet50", published=True)
    make_run(folder, "mobilenet-100min", "mobilenet", published=True)
    running = make_run(folder, "resnet50-100min", "resnet50", published=True)
    record = json.loads((running / "record.json").read_text())
    (running / "record.json").write_text(json.dumps({**record, "status": "running"}))
    rows = load_records(results)
    assert [r["run"] for _, r in published_records(rows)] == ["mobilenet-subset",
                                                               "resnet50-subset"]
    assert [r["run"] for _, r in waiting_runs(rows)] == ["mobilenet-100min", "resnet50-100min"]
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:start -->\n<!-- results:end -->\n")
    build_report(results, readme=readme, images=tmp_path / "images")
    out = capsys.readouterr().out
    assert "mobilenet-100min is published but waits" in out
    assert "mobilenet-subset" in readme.read_text() and "100min" not in readme.read_text()
    (running / "record.json").write_text(json.dumps(record))  # now complete
    rows = load_records(results)
    assert [r["run"] for _, r in published_records(rows)] == ["mobilenet-100min",
                                                               "resnet50-100min"]
    assert waiting_runs(rows) == []
