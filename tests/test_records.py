"""Run records: atomic writes, unwritable folders, environment info, schema, API."""

import copy
import dataclasses
import json
import os
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from pcam.core import record_schema
from pcam.core.environment import environment_info
from pcam.core.errors import PCamError
from pcam.core.paths import PROJ_ROOT
from pcam.run import config as config_module
from pcam.run import records
from pcam.run.config import TrainConfig

COMMITTED = sorted([*PROJ_ROOT.glob("results/*/record.json"),  # runs at the top
                    *PROJ_ROOT.glob("results/*/*/record.json")])  # experiments' arms


def test_write_json_atomic_roundtrip(tmp_path):
    path = tmp_path / "data.json"
    data = {"a": np.float32(0.5), "b": np.arange(3), "c": float("nan"), "d": (1, 2), "p": Path("x")}
    records.write_json_atomic(path, data)
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": None, "d": [1, 2],
                                            "p": "x"}
    assert os.listdir(tmp_path) == ["data.json"]


@pytest.mark.parametrize("fail", ["fsync", "replace"])
def test_crash_while_writing_keeps_previous(tmp_path, monkeypatch, fail):
    path = tmp_path / "data.json"
    records.write_json_atomic(path, {"version": 1})

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records.os, fail, crash)
    with pytest.raises(PCamError, match="could not write .*data.json.*previous version is kept"):
        records.write_json_atomic(path, {"version": 2, "big": list(range(1000))})
    assert json.loads(path.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["data.json"]  # no temporary file left behind


def test_unserialisable_value_touches_nothing(tmp_path):
    path = tmp_path / "data.json"
    records.write_json_atomic(path, {"version": 1})
    with pytest.raises(TypeError):
        records.write_json_atomic(path, {"version": 2, "bad": object()})
    assert json.loads(path.read_text()) == {"version": 1}


def test_unwritable_results_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PCamError, match=f"{blocker} is a file, not a folder, so the results "
                                        f"folder {blocker}/run cannot be made there"):
        records.ensure_writable(blocker / "run")


def test_run_training_checks_results_before_training(tmp_path, synthetic_data_dir):
    from pcam.train.session import start_run

    blocker = tmp_path / "results"
    blocker.write_text("")
    config = TrainConfig(model="mobilenet", run="r", data_dir=str(synthetic_data_dir),
                         weights=None, alpha=0.25, precision="float32")
    with pytest.raises(PCamError, match="cannot write to the results folder .*PCAM_RESULTS_DIR"):
        start_run(config, results=blocker)


def test_read_record_errors(tmp_path, invalid_record_ok):
    with pytest.raises(PCamError, match="no run record at .*train first"):
        records.read_record(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text("{half")
    invalid_record_ok(tmp_path / "bad" / "record.json")
    with pytest.raises(PCamError, match="is not valid JSON"):
        records.read_record(tmp_path / "bad")


def test_environment_info():
    info = environment_info()
    assert info["packages"]["keras"].startswith("3.")
    assert info["packages"]["tensorflow"] and info["packages"]["scikit-learn"]
    assert set(info["git"]) == {"commit", "dirty"}
    hardware = info["hardware"]
    assert hardware["cpu_count"] >= 1 and hardware["memory_gb"] > 0
    assert isinstance(hardware["gpus"], list) and hardware["cpu"]


def test_bad_model_setting_writes_no_record(tmp_path, synthetic_data_dir):
    from pcam.train.session import start_run

    with pytest.raises(PCamError, match="resnet50 trains from scratch, so weights must stay"):
        start_run(TrainConfig(model="resnet50", run="r", data_dir=str(synthetic_data_dir),
                              head_epochs=0, weights="imagenet",
                              precision="float32"), results=tmp_path)
    assert not (tmp_path / "r" / "record.json").exists()


# The schema file: valid, documented, in step with the code, shipped.

def _resolve(sub: dict) -> dict:
    while isinstance(sub, dict) and "$ref" in sub and "description" not in sub:
        sub = record_schema.schema()["$defs"][sub["$ref"].rsplit("/", 1)[-1]]
    return sub


def _undocumented(node, where="$") -> list[str]:
    missing = []
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            if "description" not in _resolve(sub):
                missing.append(f"{where}.{name}")
        for key, value in node.items():
            if isinstance(value, dict | list) and key not in ("if", "then", "else"):
                missing += _undocumented(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            missing += _undocumented(value, f"{where}[{i}]")
    return missing


def test_schema_is_valid_and_every_field_documented():
    from jsonschema import Draft202012Validator

    schema = record_schema.schema()
    Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema"]["const"] == records.SCHEMA
    assert _undocumented(schema) == []
    assert all("description" in d for d in schema["$defs"].values())


def test_schema_matches_the_code():
    from pcam.data.spec import AUGMENTATIONS
    from pcam.models import BACKBONES

    defs = record_schema.schema()["$defs"]
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert list(defs["config"]["properties"]) == fields
    # Settings added after schema 1 was published are optional: older records lack them.
    added_later = set(record_schema.ADDED_SETTINGS)
    assert sorted(defs["config"]["required"]) == sorted(set(fields) - added_later)
    props = defs["config"]["properties"]
    assert props["strategy"]["enum"] == list(config_module.STRATEGIES)
    assert props["precision"]["enum"] == list(config_module.PRECISIONS)
    assert props["schedule"]["enum"] == list(config_module.SCHEDULES)
    assert props["augment"]["items"]["enum"] == list(AUGMENTATIONS)
    assert defs["model"]["enum"] == sorted(BACKBONES)
    assert set(defs["backbone"]["properties"]["recipe"]["enum"]) >= {
        b.recipe for b in BACKBONES.values()}
    assert defs["phase_name"]["enum"] == list(records.PHASES)
    assert defs["split"]["enum"] == list(records.SPLITS)
    if hasattr(config_module, "RUN_NAME"):
        assert defs["run_name"]["pattern"] == f"^{config_module.RUN_NAME.pattern}$"


def test_schema_ships_with_the_package():
    pyproject = tomllib.loads((PROJ_ROOT / "pyproject.toml").read_text())
    assert "core/*.json" in pyproject["tool"]["setuptools"]["package-data"]["pcam"]
    assert (PROJ_ROOT / "pcam" / "core" / record_schema.SCHEMA_FILE).is_file()


@pytest.mark.parametrize("path", COMMITTED,
                         ids=[p.parent.relative_to(PROJ_ROOT / "results").as_posix()
                              for p in COMMITTED])
def test_committed_records_validate(path):
    raw = json.loads(path.read_text())
    records.validate(records.migrate(copy.deepcopy(raw)))
    record = records.read_record(path.parent)
    assert record["run"] == path.parent.name and record["status"] == "complete"


def test_committed_records_exist():
    shown = {p.parent.relative_to(PROJ_ROOT / "results").as_posix() for p in COMMITTED}
    assert shown >= {"mobilenet-subset", "resnet50-subset", "curves/mobilenet-100min",
                     "curves/resnet50-100min", "study/baseline", "study/scratch-baseline"}


# Building a record through the API.

ENVIRONMENT = {"python": "3.11.7", "platform": "Linux", "packages": {"keras": "3.15.1",
               "pandas": None}, "git": {"commit": None, "dirty": None},
               "hardware": {"cpu": "Test CPU", "cpu_count": 2, "memory_gb": 8.0, "gpus": []}}
BACKBONE = {"recipe": "transfer", "preprocessing": "x / 127.5 - 1"}
DATA = {"dir": "<external>/x/data", "info": {"source": "synthetic", "synthetic": True},
        "synthetic": True, "splits": {s: {"n": 8, "n_file": 8, "positives": 4}
                                      for s in ("train", "valid", "test")}}
DISTRIBUTION = {"strategy": "default (one device)", "replicas": 1, "workers": 1,
                "precision": "float32", "per_replica_batch": 4, "global_batch": 4,
                "learning_rate": 1e-3, "finetune_learning_rate": 1e-4, "rule": "linear"}


def _config(**changes) -> dict:
    return TrainConfig(**{"run": "r", "data_dir": "/somewhere/data", "epochs": 3,
                          "head_epochs": 1, "weights": None, **changes}).to_dict()


def _epoch(epoch: int, phase: str, **logs) -> dict:
    return {"epoch": epoch, "phase": phase, "loss": 0.7 / (1 + epoch), "val_auc": float("nan"),
            "learning_rate": np.float32(1e-3), "seconds": 1.5, **logs}


def sample_record(**config_changes) -> dict:
    """A complete, valid record built only through the records API."""
    from pcam.evaluation.metrics import evaluate_predictions

    record = records.new_record(config=_config(**config_changes), backbone=BACKBONE,
                                environment=ENVIRONMENT, data=DATA)
    records.set_distribution(record, DISTRIBUTION)
    records.start_phase(record, "head", 1, 1, trainable_params=np.int64(129))
    records.add_epoch(record, _epoch(1, "head"))
    records.finish_phase(record, "head", stopped_early=False)
    records.start_phase(record, "finetune", 2, 3, trainable_params=1000)
    for epoch in (2, 3):
        records.add_epoch(record, _epoch(epoch, "finetune"))
    records.finish_phase(record, "finetune", stopped_early=False)
    records.add_train_seconds(record, 4.5004)
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1], dtype=np.uint8)
    p = np.linspace(0.1, 0.9, 8).astype(np.float32)
    records.set_threshold(record, np.float32(0.45), 0.5, rule="Youden's J on valid")
    for split in ("valid", "test"):
        entry = {"single": evaluate_predictions(y, p, 0.45, n_boot=5),
                 "tta": evaluate_predictions(y, p[::-1], 0.5, n_boot=0),
                 "inference": {"seconds": 0.1, "images_per_s": 80.0, "tta_seconds": 0.8,
                               "tta_images_per_s": 10.0}}
        records.set_split_metrics(record, split, entry, Path("predictions") / f"{split}.npz")
    records.set_evaluate_seconds(record, 1.23456)
    records.mark_complete(record)
    return record


def test_record_built_through_the_api_validates(tmp_path):
    record = sample_record()
    records.validate(record)
    assert record["config"]["data_dir"] == "<external>/somewhere/data"  # no machine path
    assert record["phases"] == [
        {"phase": "head", "epochs": [1, 1], "trainable_params": 129, "status": "complete",
         "stopped_early": False},
        {"phase": "finetune", "epochs": [2, 3], "trainable_params": 1000,
         "status": "complete", "stopped_early": False}]
    assert record["timings"] == {"train_seconds": 4.5, "epoch_seconds": [1.5, 1.5, 1.5],
                                 "evaluate_seconds": 1.235}
    assert record["predictions"]["test"] == "predictions/test.npz"
    records.write_record(tmp_path, record)
    again = records.read_record(tmp_path)
    assert again["history"][0]["val_auc"] is None  # NaN is stored as null
    assert again["threshold"] == {"value": pytest.approx(0.45), "rule": "Youden's J on valid",
                                  "split": "valid", "tta_value": 0.5}


def test_data_section(synthetic_data_dir):
    from pcam.data.describe import data_section
    from pcam.data.h5read import open_split, read_labels

    splits = {name: open_split(synthetic_data_dir, name) for name in ("train", "valid")}
    config = TrainConfig(max_samples=100, max_eval_samples=None)
    section = data_section(config, synthetic_data_dir, splits)
    assert section["dir"].startswith("<external>/") and section["synthetic"] is True
    assert section["splits"]["train"] == {
        "n": 100, "n_file": 512, "positives": int(read_labels(splits["train"])[:100].sum())}
    assert section["splits"]["valid"]["n"] == 256
    record = records.new_record(config=_config(), backbone=BACKBONE, environment=ENVIRONMENT,
                                data=section)
    records.validate(record)


def test_epochs_done_and_redone_epochs():
    record = records.new_record(config=_config(), backbone=BACKBONE, environment=ENVIRONMENT,
                                data=DATA)
    assert records.epochs_done(record) == 0
    for epoch in (1, 2, 3):
        records.add_epoch(record, _epoch(epoch, "scratch", seconds=float(epoch)))
    assert records.epochs_done(record) == 3
    # Killed after the checkpoint of epoch 2, before the record: epoch 2 runs again.
    records.add_epoch(record, _epoch(2, "scratch", seconds=9.0))
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert record["timings"]["epoch_seconds"] == [1.0, 9.0]
    assert records.epochs_done(record) == 2
    with pytest.raises(ValueError, match="integer 'epoch' >= 1, got 0"):
        records.add_epoch(record, _epoch(0, "scratch"))
    with pytest.raises(ValueError, match="phase must be one of .*got 'warmup'"):
        records.add_epoch(record, _epoch(4, "warmup"))


def test_phases():
    record = records.new_record(config=_config(), backbone=BACKBONE, environment=ENVIRONMENT,
                                data=DATA)
    records.start_phase(record, "head", 1, 2, 10)
    assert not records.phase_done(record, "head")
    records.start_phase(record, "head", 1, 2, 12)  # restarted: replaces the entry
    assert record["phases"] == [{"phase": "head", "epochs": [1, 2], "trainable_params": 12,
                                 "status": "running"}]
    records.finish_phase(record, "head", stopped_early=True)
    assert records.phase_done(record, "head") and record["phases"][0]["stopped_early"]
    records.start_phase(record, "finetune", 3, 5, 99)
    records.finish_phase(record, "finetune", stopped_early=False, status="failed")
    assert not records.phase_done(record, "finetune")
    records.validate(record)
    with pytest.raises(ValueError, match="'scratch' was never started"):
        records.finish_phase(record, "scratch", stopped_early=False)
    with pytest.raises(ValueError, match="1 <= first_epoch <= end_epoch, got 4, 3"):
        records.start_phase(record, "scratch", 4, 3, 1)
    with pytest.raises(ValueError, match="got 0, 3"):
        records.start_phase(record, "scratch", 0, 3, 1)
    with pytest.raises(ValueError, match="'complete' or 'failed', got 'running'"):
        records.finish_phase(record, "head", stopped_early=False, status="running")


def test_failed_then_complete():
    record = sample_record()
    records.mark_failed(record, "PCamError: loss became nan")
    records.validate(record)
    assert record["status"] == "failed" and record["error"].endswith("nan")
    records.mark_complete(record)
    records.validate(record)
    assert record["status"] == "complete" and "error" not in record


# Validation errors name the run, the JSON path and what was expected.

@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.pop("phases"), r"\$\.phases: required field missing \(expected array\)"),
    (lambda r: r.pop("config"), r"\$\.config: required field missing \(expected object\)"),
    (lambda r: r["history"][1].update(epoch="2"),
     r"\$\.history\[1\]\.epoch: expected integer, got string"),
    (lambda r: r["timings"].update(epoch_seconds={}),
     r"\$\.timings\.epoch_seconds: expected array, got empty object"),
    (lambda r: r.update(status="done"),
     r"\$\.status: expected one of 'running', 'complete', 'failed', got 'done'"),
    (lambda r: r["phases"][0].update(phase="warmup"), r"\$\.phases\[0\]\.phase: expected one of"),
    (lambda r: r["config"].update(epoch=3), r"\$\.config\.epoch: unknown field"),
    (lambda r: r["metrics"].update(holdout={}), r"\$\.metrics\.holdout: unknown key"),
    (lambda r: r["metrics"]["test"]["single"]["at_0.5"].update(recall=1.5),
     r"\$\.metrics\.test\.single\[\"at_0\.5\"\]\.recall: 1\.5 is greater than the maximum"),
    (lambda r: r.update(status="failed"), r"\$\.error: required field missing \(a failed"),
    (lambda r: r.update(error="boom"), r"\$\.error: field not allowed \(only a failed"),
    (lambda r: r.pop("distribution"), r"\$\.distribution: required field missing"),
    (lambda r: r.update(threshold=None), r"\$\.threshold: expected object, got null"),
])
def test_validate_names_the_bad_field(change, message):
    record = sample_record()
    change(record)
    with pytest.raises(PCamError, match=r"record of run 'r' is invalid at " + message):
        records.validate(record)


def test_a_bad_record_never_reaches_disk(tmp_path, invalid_record_ok):
    record = sample_record()
    records.write_record(tmp_path, record)
    before = (tmp_path / "record.json").read_text()
    record["history"][0]["phase"] = "warmup"
    with pytest.raises(PCamError, match=r"\$\.history\[0\]\.phase"):
        records.write_record(tmp_path, record)
    assert (tmp_path / "record.json").read_text() == before
    # A record broken by hand is caught on reading, naming the file.
    (tmp_path / "bad").mkdir()
    invalid_record_ok(tmp_path / "bad" / "record.json")
    (tmp_path / "bad" / "record.json").write_text(before.replace('"complete"', '"done"', 1))
    with pytest.raises(PCamError, match=r"bad/record.json: record of run 'r' is invalid at "
                                        r"\$\.status"):
        records.read_record(tmp_path / "bad")


def test_migrate(monkeypatch):
    record = sample_record()
    assert records.migrate(record) is record  # schema 1 is current
    with pytest.raises(PCamError, match="schema 7, newer than this pcam's 1"):
        records.migrate({**record, "schema": 7})
    with pytest.raises(PCamError, match="no valid \"schema\" number"):
        records.migrate({k: v for k, v in record.items() if k != "schema"})
    with pytest.raises(PCamError, match="must be a JSON object, got list"):
        records.migrate([])
    # A future layout change adds one step per version.
    monkeypatch.setattr(record_schema, "SCHEMA", 2)
    monkeypatch.setitem(record_schema.MIGRATIONS, 1, lambda r: {**r, "new": True})
    upgraded = records.migrate(copy.deepcopy(record))
    assert upgraded["schema"] == 2 and upgraded["new"] is True


# Starting, resuming and refusing runs.

def _environment_calls():
    calls = []

    def environment():
        calls.append(1)
        return ENVIRONMENT
    return environment, calls


def _start(folder, environment, **changes) -> dict:
    return records.resume_or_new(folder, config=_config(**changes), backbone=BACKBONE,
                                 data=DATA, environment_fn=environment)


def test_resume_or_new(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    environment, calls = _environment_calls()
    record = _start(folder, environment)
    assert record["status"] == "running" and record["resumed"] == [] and calls == [1]
    assert records.read_record(folder) == record  # written

    # Nothing trained yet: other settings start afresh.
    record = _start(folder, environment, seed=5)
    assert record["config"]["seed"] == 5 and calls == [1, 1]

    records.set_distribution(record, DISTRIBUTION)
    records.add_epoch(record, _epoch(1, "head"))
    records.mark_failed(record, "RuntimeError: killed")
    records.write_record(folder, record)
    resumed = _start(folder, environment, seed=5)
    assert resumed["status"] == "running" and "error" not in resumed
    assert [r["from_epoch"] for r in resumed["resumed"]] == [1]
    assert resumed["created"] == record["created"] and calls == [1, 1]  # environment kept
    assert records.read_record(folder)["resumed"] == resumed["resumed"]

    with pytest.raises(PCamError, match=r"run r exists with other settings \(epochs, seed\)"):
        _start(folder, environment, seed=6, epochs=4)

    records.mark_complete(resumed)
    records.write_record(folder, sample_record(seed=5))
    with pytest.raises(PCamError, match="run r is already complete.*pcam evaluate --run r"):
        _start(folder, environment, seed=5)


def test_records_written_before_the_redesign_still_load_and_report(tmp_path):
    """The published runs as committed at 47aee47 (schema 1) load, validate and report."""
    from pcam.report.build import build_report

    old = tmp_path / "schema1-runs"  # a copy: the report writes each run's model card
    shutil.copytree(PROJ_ROOT / "tests" / "data" / "schema1-runs", old)
    for folder in sorted(old.glob("*-subset")):
        record = records.read_record(folder)
        assert record["schema"] == 1 and record["status"] == "complete"
    readme = tmp_path / "README.md"
    readme.write_text("# old runs\n\n<!-- results:start -->\n<!-- results:end -->\n")
    build_report(results=old, readme=readme, images=tmp_path / "images", gradcam=False,
                 allow_dirty=True)  # both were trained from a dirty tree
    text = readme.read_text()
    assert "| accuracy (%) | 86.1 ± 0.7 |" in text  # the numbers the README showed then
    assert (tmp_path / "images" / "compare_roc_pr.png").stat().st_size > 10_000
