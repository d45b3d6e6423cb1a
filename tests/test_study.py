"""Budgeted experiments: arms, cost measurement, budget planning, and a short study."""

import json
import tomllib

import pytest

from pcam.core.errors import PCamError
from pcam.run.config import TrainConfig
from pcam.run.presets import EXPERIMENTS_DIR
from pcam.run.records import read_record
from pcam.study import budget
from pcam.study import experiments as study


@pytest.fixture
def weights_dir(tmp_path):
    for alpha in ("0.25", "0.5", "0.75"):
        (tmp_path / f"mobilenet_v1_{alpha}_imagenet_no_top.h5").write_bytes(b"")
    return tmp_path


def test_every_study_arm_is_its_recipe_with_one_change_and_two_seeds(weights_dir):
    spec = tomllib.loads((EXPERIMENTS_DIR / "study.toml").read_text())
    arms = study.EXPERIMENTS["study"]
    assert len(arms) == len(spec["seeds"]) * len(spec["arms"]) == 24
    for name, arm in arms.items():
        config = study.arm_config(name, weights_dir=weights_dir).to_dict()
        assert config["run"] == name and arm["what"] and not config["published"]
        assert arm["budget_minutes"] == 10.0
        # early stopping off: the budget, not a flat epoch, ends an arm
        assert config["seed"] == arm["seed"] and config["patience"] > config["epochs"]
        if arm["baseline"] is None:
            continue
        base = study.arm_config(arm["baseline"], weights_dir=weights_dir).to_dict()
        assert base["seed"] == config["seed"] and base["model"] == config["model"]
        changed = {k for k in config if config[k] != base[k]} - {"run", "weights"}
        defined = set(spec["arms"][name.removesuffix("-seed1")]) - {"what", "model"}
        assert changed == defined, name
    mobilenet = study.arm_config("baseline", weights_dir=weights_dir)
    assert (mobilenet.alpha, mobilenet.finetune_layers, mobilenet.head_epochs) == (0.5, 48, 1)
    assert mobilenet.weights == str(study.DEMO_WEIGHTS)  # shipped; weights_dir for others
    assert study.arm_config("alpha-0.75", weights_dir=weights_dir).weights == str(
        weights_dir / "mobilenet_v1_0.75_imagenet_no_top.h5")
    scratch = study.arm_config("scratch-baseline")
    assert (scratch.model, scratch.weights, scratch.bn_momentum) == ("resnet50", None, 0.9)


def test_curve_arms_span_ten_times_the_budget_and_an_eighth_of_the_data(synthetic_data_dir):
    arms = study.EXPERIMENTS["curves"]
    for model in ("mobilenet", "resnet50"):
        minutes = sorted(a["budget_minutes"] for a in arms.values()
                         if a["model"] == model and a["share"] == 1)
        assert minutes[-1] / minutes[0] >= 10
        config = study.arm_config(f"{model}-30min-1of8", experiment="curves",
                                  data_dir=synthetic_data_dir)
        assert config.max_samples == 512 // 8 and config.model == model
        assert study.arm_config(f"{model}-100min", experiment="curves",
                                data_dir=synthetic_data_dir).max_samples is None


def test_arm_errors_name_the_problem(tmp_path):
    with pytest.raises(PCamError, match="unknown study arm 'size-999'; arms: baseline"):
        study.arm_config("size-999")
    with pytest.raises(PCamError, match="unknown experiment 'study2'"):
        study.arm_config("baseline", experiment="study2")
    with pytest.raises(PCamError, match="no weights file .*mobilenet_v1_0.75_imagenet_no_top.h5"):
        study.arm_config("alpha-0.75", weights_dir=tmp_path)
    assert study.arm_config("alpha-0.75").weights == "imagenet"  # Keras' download by default


def test_the_cost_key_holds_what_changes_the_cost_and_nothing_else():
    config = TrainConfig.for_model("resnet50", run="r")
    assert budget.cost_key(config) == budget.cost_key(
        config.replace(learning_rate=3e-3, seed=1, patience=9, run="s", bn_momentum=0.9))
    assert budget.cost_key(config) != budget.cost_key(config.replace(batch_size=32))


COSTS = {"head": 0.001, "finetune": 0.002, "score": 0.001, "epoch": 0.0}


def test_plan_is_whole_epochs_over_every_patch_and_predicts_its_minutes(weights_dir):
    config = study.arm_config("baseline", weights_dir=weights_dir)  # 1 head epoch + fine-tune
    plan = budget.plan_budget(config, COSTS, 10, train_n=20000, valid_n=1500)
    # 20 s the head epoch, 40 s a fine-tune epoch, each + 1.5 s validation:
    # 21.5 + 14 * 41.5 = 602.5 > 600, so 13 fine-tune epochs: 561 s
    assert plan == {"epochs": 14, "head_epochs": 1, "steps_per_epoch": None,
                    "planned_minutes": 9.35}
    head_only = study.arm_config("head-only", weights_dir=weights_dir)
    assert budget.plan_budget(head_only, COSTS, 10, train_n=20000, valid_n=1500) == {
        "epochs": 27, "head_epochs": 27, "steps_per_epoch": None, "planned_minutes": 9.68}
    assert budget.plan_budget(head_only, COSTS, 100, train_n=20000, valid_n=1500)[
        "epochs"] == 279  # 100 minutes: the budget, not the cap, sets the epochs
    capped = budget.plan_budget(head_only, COSTS, 100, train_n=20000, valid_n=1500,
                                max_epochs=30)
    assert capped == {"epochs": 30, "head_epochs": 30, "steps_per_epoch": None,
                      "planned_minutes": 10.75}


def test_start_up_costs_count_once_per_phase(weights_dir):
    config = study.arm_config("baseline", weights_dir=weights_dir)
    costs = {**COSTS, "head_start": 30.0, "finetune_start": 30.0, "score_start": 0.0}
    plan = budget.plan_budget(config, costs, 10, train_n=20000, valid_n=1500)
    # head: 30 + 21.5 s; fine-tune: 30 s + 41.5 s an epoch; 12 fit in the 600 s
    assert plan["epochs"] == 1 + 12
    assert plan["planned_minutes"] == round((51.5 + 30 + 12 * 41.5) / 60, 2)


def test_a_budget_short_of_one_epoch_trains_a_fraction_of_one():
    config = TrainConfig.for_model("resnet50", run="r", batch_size=50)
    costs = {"scratch": 0.01, "score": 0.01, "epoch": 5.0}  # 200 s an epoch + 20 s
    plan = budget.plan_budget(config, costs, 2, train_n=20000, valid_n=1500)
    # 120 s: 15 s validation, 5 s checkpoints; 100 s of training: half of the 400 batches
    assert plan == {"epochs": 1, "head_epochs": 0, "steps_per_epoch": 200,
                    "planned_minutes": 2.0}
    # 24 s: 4 s of training buy 8 batches; 18 s do not pay for validation
    for minutes, batches in ((0.4, 8), (0.3, 0)):
        with pytest.raises(PCamError, match=f"a {minutes}-minute budget buys {batches} batches "
                                            "an epoch .*give it more minutes"):
            budget.plan_budget(config, costs, minutes, train_n=20000, valid_n=1500)
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(PCamError, match="minutes: use a positive number"):
            budget.plan_budget(config, costs, bad, train_n=20000, valid_n=1500)


def test_budget_check_flags_runs_off_their_plan_by_more_than_15_percent():
    from pcam.report.progress import budget_check, minutes_cell

    record = {"config": {"planned_minutes": 10.0}, "timings": {"train_seconds": 690.0}}
    assert budget_check(record) == {"planned": 10.0, "realised": 11.5, "ratio": 1.15,
                                    "flagged": False}
    assert minutes_cell(record) == "10 / 12"
    record["timings"]["train_seconds"] = 700.0
    assert budget_check(record)["flagged"] and minutes_cell(record) == "10 / 12 †"
    record["timings"]["train_seconds"] = 500.0
    assert budget_check(record)["flagged"]
    unplanned = {"config": {}, "timings": {"train_seconds": 540.0}}
    assert budget_check(unplanned) is None and minutes_cell(unplanned) == "– / 9"


def test_a_fraction_of_an_epoch_trains_that_many_batches(tmp_path, synthetic_data_dir):
    from pcam.train.session import start_run

    config = TrainConfig.for_model("resnet50", run="r", data_dir=str(synthetic_data_dir),
                                   batch_size=16, steps_per_epoch=5, precision="float32")
    run = start_run(config, results=tmp_path)
    try:
        assert run.steps_per_epoch == 5
        assert [len(y) for _, y in run.train] == [16] * 5
    finally:
        from pcam.run.runlock import release_lock

        release_lock(run.lock)
    with pytest.raises(PCamError, match="steps_per_epoch=33 is more than the 32 batches"):
        start_run(config.replace(run="r2", steps_per_epoch=33), results=tmp_path)
    assert not (tmp_path / "r2").exists()


def test_plan_longer_reads_the_measured_costs(tmp_path, synthetic_data_dir, capsys):
    from pcam.app.cli import main

    config = study.arm_config("scratch-baseline", data_dir=synthetic_data_dir,
                              overrides={"batch_size": 16})
    costs = {"scratch": 0.01, "score": 0.01, "epoch": 0.5}
    plan = {"arms": {"scratch-baseline": {
        "what": "", "budget_minutes": 10.0, "cost_key": budget.cost_key(config),
        "costs": costs, "settings": {}}}}
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "plan.json").write_text(json.dumps(plan))
    # 512 patches: 5.12 s an epoch, + 256 * 0.01 validation + 0.5 s checkpoints = 8.18 s
    assert study.plan_longer(["scratch-baseline"], 1, data_dir=synthetic_data_dir,
                             results=tmp_path) == {
        "scratch-baseline": {"epochs": 7, "head_epochs": 0, "steps_per_epoch": None,
                             "planned_minutes": 0.95}}
    assert main(["study", "scratch-baseline", "--plan-minutes", "1", "--results", str(tmp_path),
                 "--data-dir", str(synthetic_data_dir)]) == 0
    assert "scratch-baseline: 1 minutes buy epochs=7" in capsys.readouterr().out
    with pytest.raises(PCamError, match="arm 'size-128' has no measured costs in .*plan.json; "
                                        "run `pcam study size-128` first"):
        study.plan_longer(["size-128"], 45, results=tmp_path)
    (tmp_path / "study" / "plan.json").write_text("{")
    with pytest.raises(PCamError, match="cannot read .*plan.json"):
        study.plan_longer(["size-128"], 45, results=tmp_path)


def test_plan_only_plans_every_arm_and_trains_none(tmp_path, synthetic_data_dir, monkeypatch,
                                                   capsys):
    """What lets two processes train disjoint arms at once: every plan written first."""
    costs = {"head": 0.001, "head_start": 1.0, "finetune": 0.002, "finetune_start": 1.0,
             "score": 0.001, "score_start": 0.1, "epoch": 0.1}
    measured = []
    monkeypatch.setattr(study, "measure_costs", lambda config: measured.append(config.run)
                        or dict(costs))
    trained = []
    monkeypatch.setattr("pcam.execute.notebooks.run_notebook",
                        lambda *a, **k: trained.append(a))
    arms = ["baseline", "baseline-seed1", "aug-none"]
    folders = study.run_study(arms, data_dir=synthetic_data_dir, results=tmp_path,
                              train=False)
    assert folders == [tmp_path / "study" / a for a in arms] and not trained
    assert not any(f.exists() for f in folders)  # no run folder, no record
    plan = json.loads((tmp_path / "study" / "plan.json").read_text())
    assert list(plan["arms"]) == arms
    assert measured == ["baseline", "aug-none"]  # the seeds share one measurement
    assert all(plan["arms"][a]["settings"]["planned_minutes"] > 0 for a in arms)
    assert "baseline-seed1:" in capsys.readouterr().out
    before = (tmp_path / "study" / "plan.json").read_bytes()
    study.run_study(["aug-none"], data_dir=synthetic_data_dir, results=tmp_path, train=False)
    assert (tmp_path / "study" / "plan.json").read_bytes() == before  # planned: not rewritten
    assert measured == ["baseline", "aug-none"]


# Enough for the shortest plan (a head and a fine-tune epoch of 512 patches) on a slow or
# busy machine; the epoch cap (3), not the budget, bounds how long the test trains.
BUDGET = 2.0


@pytest.mark.slow
def test_short_study_measures_once_plans_trains_and_skips_what_is_complete(
        tmp_path, synthetic_data_dir, capsys):
    short = {"alpha": 0.25, "weights": "none", "batch_size": 16, "max_eval_samples": 64}
    arms = ["baseline", "baseline-seed1"]
    folders = study.run_study(arms, data_dir=synthetic_data_dir, results=tmp_path,
                              budget_minutes=BUDGET, max_epochs=3, overrides=short)
    assert folders == [tmp_path / "study" / a for a in arms]
    plan = json.loads((tmp_path / "study" / "plan.json").read_text())
    assert list(plan["arms"]) == arms
    first, second = (plan["arms"][a] for a in arms)
    assert first["budget_minutes"] == BUDGET
    assert first["baseline"] is None and second["baseline"] is None  # the baselines themselves
    assert set(first["costs"]) == {"head", "head_start", "finetune", "finetune_start", "score",
                                   "score_start", "epoch"}
    assert all(0 <= c < 60 for c in first["costs"].values())
    assert second["costs"] == first["costs"]  # same settings but the seed: measured once
    for name in arms:
        record = read_record(tmp_path / "study" / name)
        assert record["status"] == "complete"
        for key, value in first["settings"].items():
            assert record["config"][key] == value
        assert record["config"]["seed"] == (1 if name.endswith("seed1") else 0)
        assert record["config"]["planned_minutes"] > 0
        assert record["environment"]["hardware"]["cpus_used"] >= 1
    capsys.readouterr()
    study.run_study(arms, data_dir=synthetic_data_dir, results=tmp_path, budget_minutes=BUDGET,
                    max_epochs=3, overrides=short)
    out = capsys.readouterr().out
    assert "study: baseline is complete; skipped" in out and "running" not in out
    with pytest.raises(PCamError, match=f"planned arm baseline for {BUDGET} minutes, not 10"):
        study.run_study(arms, data_dir=synthetic_data_dir, results=tmp_path, overrides=short)
