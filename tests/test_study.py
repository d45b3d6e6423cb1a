"""The recipe study: arms, budget planning, and a short study on synthetic data."""

import json
from pathlib import Path

import pytest

from pcam import study
from pcam.errors import PCamError
from pcam.records import read_record
from pcam.train import budget


@pytest.fixture
def weights_dir(tmp_path):
    for alpha in ("0.25", "0.5", "0.75"):
        (tmp_path / f"mobilenet_v1_{alpha}_imagenet_no_top.h5").write_bytes(b"")
    return tmp_path


def test_every_arm_is_a_valid_run_differing_from_the_baseline(weights_dir):
    base = study.arm_config("baseline", weights_dir=weights_dir).to_dict()
    assert base["alpha"] == 0.5 and base["image_size"] == 96 and not base["published"]
    scratch = study.arm_config("scratch-baseline").to_dict()
    assert scratch["model"] == "resnet50" and scratch["weights"] is None
    assert scratch["epochs"] == 3 and not scratch["published"]
    for name, (what, settings) in study.ARMS.items():
        config = study.arm_config(name, weights_dir=weights_dir).to_dict()
        assert config["run"] == name and what
        reference = scratch if name.startswith("scratch-") else base
        changed = {k for k in config if config[k] != reference[k]} - {"run", "weights"}
        assert changed == set(settings) - {"model"}, name
        if config["model"] == "mobilenet":
            assert config["weights"].endswith(
                f"mobilenet_v1_{config['alpha']:g}_imagenet_no_top.h5")


def test_committed_plan_holds_the_arms_the_code_defines(weights_dir):
    """The committed arms were trained with the settings `ARMS` gives today (so a
    change to the subset preset, which the arms build on, cannot change them)."""
    from pcam.paths import PROJ_ROOT

    plan = json.loads((PROJ_ROOT / "results" / "study" / "plan.json").read_text())
    for name, arm in plan["arms"].items():
        config = study.arm_config(name, data_dir=arm["cost_key"]["data_dir"],
                                  weights_dir=weights_dir).to_dict()
        now = {k: v for k, v in config.items() if k not in ("run", "seed", "weights")}
        planned = {k: v for k, v in arm["cost_key"].items() if k != "weights"}
        assert json.loads(json.dumps(now)) == planned, name
        assert Path(config["weights"] or "").name == Path(arm["cost_key"]["weights"] or "").name


# The arm each published run takes (README "How the published runs were made").
PUBLISHED_ARMS = {"mobilenet": "finetune-48", "resnet50": "scratch-bn0.9-lr3e-3"}


def test_subset_preset_is_the_chosen_arms_planned_for_30_minutes():
    """`PRESETS["subset"]` is each model's chosen arm with the epochs and patches that
    `pcam study ARM --plan-minutes 30` gives from the committed costs (needs the subset,
    whose length the plan divides)."""
    from pcam.config import TrainConfig
    from pcam.data.h5read import open_split
    from pcam.paths import PROJ_ROOT

    data = PROJ_ROOT / "data" / "pcam-subset"
    if not (data / "camelyonpatch_level_2_split_train_x.h5").exists():
        pytest.skip(f"no imported subset at {data} (README: `python -m pcam import-images "
                    "PCAM_SUBSET_DIR --data-dir data/pcam-subset --holdout 2000`)")
    planned = study.plan_longer(list(PUBLISHED_ARMS.values()), 30)
    train_n = open_split(data, "train").length
    for model, arm in PUBLISHED_ARMS.items():
        preset = TrainConfig.for_model(model, "subset").to_dict()
        expected = {**study.arm_config(arm, data_dir=data).to_dict(), **planned[arm]}
        if expected["max_samples"] == train_n - train_n % preset["batch_size"]:
            expected["max_samples"] = None  # every patch: the preset keeps the last small batch
        differ = {k: (preset[k], expected[k]) for k in preset if preset[k] != expected[k]}
        assert set(differ) == {"run", "patience", "published"}, (model, differ)
        assert preset["published"] and preset["patience"] == 10


def test_arm_errors_name_the_problem(tmp_path):
    with pytest.raises(PCamError, match="unknown study arm 'size-999'; arms: baseline"):
        study.arm_config("size-999")
    with pytest.raises(PCamError, match="no weights file .*mobilenet_v1_0.25_imagenet_no_top.h5"):
        study.arm_config("alpha-0.25", weights_dir=tmp_path)
    assert study.arm_config("alpha-0.75").weights == "imagenet"  # Keras' download by default


def test_plan_fills_the_budget_with_epochs_over_every_patch(weights_dir):
    config = study.arm_config("baseline", weights_dir=weights_dir)  # 1 head + 4 fine-tune
    costs = {"head": 0.001, "finetune": 0.002, "score": 0.001}
    plan = budget.plan_budget(config, costs, 10 / budget.PLAN_SHARE, train_n=18000, valid_n=2000)
    # 18 s head, then 36 s a fine-tune epoch, each + 2 s validation: 20 + 15 * 38 = 590 s
    assert plan == {"epochs": 16, "head_epochs": 1, "max_samples": 17984}
    head_only = study.arm_config("head-only", weights_dir=weights_dir)
    assert budget.plan_budget(head_only, costs, 10 / budget.PLAN_SHARE, train_n=18000,
                             valid_n=2000) == {
        "epochs": 30, "head_epochs": 30, "max_samples": 17984}  # 20 s an epoch; capped at 30


def test_plan_shortens_epochs_of_an_arm_too_slow_for_five(weights_dir):
    config = study.arm_config("size-160", weights_dir=weights_dir)
    costs = {"head": 0.004, "finetune": 0.01, "score": 0.003}
    plan = budget.plan_budget(config, costs, 10 / budget.PLAN_SHARE, train_n=18000, valid_n=2000)
    assert plan["epochs"] == 5 and plan["head_epochs"] == 1
    samples = plan["max_samples"]
    assert samples % config.batch_size == 0
    spent = samples * (0.004 + 4 * 0.01) + 5 * 2000 * 0.003
    assert 600 - config.batch_size * 0.044 < spent <= 600
    with pytest.raises(PCamError, match="a 0.5-minute budget buys 0 patches"):
        budget.plan_budget(config, costs, 0.5, train_n=18000, valid_n=2000)


def test_plan_of_a_from_scratch_run_adds_scratch_epochs():
    from pcam.config import TrainConfig

    config = TrainConfig.for_model("resnet50", epochs=2, run="r")
    costs = {"scratch": 0.001, "score": 0.001}  # 18 s an epoch + 2 s validation
    assert budget.plan_budget(config, costs, 1 / budget.PLAN_SHARE, train_n=18000,
                             valid_n=2000) == {"epochs": 3, "head_epochs": 0, "max_samples": 17984}


def test_longer_plan_uses_the_costs_measured_for_the_study(tmp_path, synthetic_data_dir,
                                                           weights_dir, capsys):
    from pcam.cli import main

    config = study.arm_config("baseline", data_dir=synthetic_data_dir, weights_dir=weights_dir,
                              overrides={"batch_size": 16})
    cost_key = {k: v for k, v in config.to_dict().items() if k not in ("run", "seed")}
    costs = {"head": 0.01, "finetune": 0.02, "score": 0.01, "epoch": 0.5}
    plan = {"budget_minutes": 10.0, "arms": {"baseline": {
        "what": "", "cost_key": cost_key, "costs": costs,
        "settings": {"epochs": 5, "head_epochs": 1, "max_samples": 512}}}}
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "plan.json").write_text(json.dumps(plan))
    # 512 train patches: 5.12 s the head epoch, 10.24 s a fine-tune epoch, each + 3.06 s
    # validation (256 * 0.01) and checkpoints (0.5). The five planned epochs cost 61.38 s of
    # the 120 planned (2 minutes, on PLAN_SHARE); the 58.62 s left buy 4 more at 13.3 s.
    minutes = 2 / budget.PLAN_SHARE
    assert study.plan_longer(["baseline"], minutes, results=tmp_path) == {
        "baseline": {"epochs": 9, "head_epochs": 1, "max_samples": 512}}
    assert main(["study", "baseline", "--plan-minutes", str(minutes),
                 "--results", str(tmp_path)]) == 0
    assert "baseline: 2.66667 minutes buy epochs=9, head_epochs=1, max_samples=512" in (
        capsys.readouterr().out)
    with pytest.raises(PCamError, match="arm 'size-128' has no measured costs in .*plan.json; "
                                        "run `pcam study size-128` first"):
        study.plan_longer(["size-128"], 45, results=tmp_path)


@pytest.mark.slow
def test_short_study_plans_once_trains_and_skips_what_is_complete(
        tmp_path, synthetic_data_dir, capsys):
    short = {"epochs": 2, "head_epochs": 1, "alpha": 0.25, "weights": "none", "batch_size": 16,
             "max_eval_samples": 64, "tta": False}
    arms = ["baseline", "baseline-seed1"]
    folders = study.run_study(arms, data_dir=synthetic_data_dir, results=tmp_path,
                              budget_minutes=0.4, max_epochs=3, overrides=short)
    assert folders == [tmp_path / "study" / a for a in arms]
    plan = json.loads((tmp_path / "study" / "plan.json").read_text())
    assert plan["budget_minutes"] == 0.4 and list(plan["arms"]) == arms
    first, second = (plan["arms"][a] for a in arms)
    assert set(first["costs"]) == {"head", "finetune", "score", "epoch"}
    assert all(0 < c < 1 for c in first["costs"].values())
    assert second["costs"] == first["costs"]  # same settings but the seed: measured once
    for name in arms:
        record = read_record(tmp_path / "study" / name)
        assert record["status"] == "complete"
        for key, value in first["settings"].items():
            assert record["config"][key] == value
        assert first["settings"]["max_samples"] % 16 == 0
        assert record["config"]["seed"] == (1 if name.endswith("seed1") else 0)
    capsys.readouterr()
    study.run_study(arms, data_dir=synthetic_data_dir, results=tmp_path, budget_minutes=0.4,
                    max_epochs=3, overrides=short)
    out = capsys.readouterr().out
    assert "study: baseline is complete; skipped" in out and "running" not in out
    with pytest.raises(PCamError, match="planned for 0.4 minutes an arm, not 10"):
        study.run_study(arms, data_dir=synthetic_data_dir, results=tmp_path, overrides=short)
