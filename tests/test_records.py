"""Run records: atomic writes, unwritable folders, environment info."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pcam import records
from pcam.config import TrainConfig
from pcam.environment import environment_info
from pcam.errors import PCamError


def test_write_json_atomic_roundtrip(tmp_path):
    path = tmp_path / "record.json"
    data = {"a": np.float32(0.5), "b": np.arange(3), "c": float("nan"), "d": (1, 2), "p": Path("x")}
    records.write_json_atomic(path, data)
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": None, "d": [1, 2],
                                            "p": "x"}
    assert os.listdir(tmp_path) == ["record.json"]


@pytest.mark.parametrize("fail", ["fsync", "replace"])
def test_crash_while_writing_keeps_previous(tmp_path, monkeypatch, fail):
    path = tmp_path / "record.json"
    records.write_json_atomic(path, {"version": 1})

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records.os, fail, crash)
    with pytest.raises(PCamError, match="could not write .*record.json.*previous version is kept"):
        records.write_json_atomic(path, {"version": 2, "big": list(range(1000))})
    assert json.loads(path.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["record.json"]  # no temporary file left behind


def test_unserialisable_value_touches_nothing(tmp_path):
    path = tmp_path / "record.json"
    records.write_json_atomic(path, {"version": 1})
    with pytest.raises(TypeError):
        records.write_json_atomic(path, {"version": 2, "bad": object()})
    assert json.loads(path.read_text()) == {"version": 1}


def test_unwritable_results_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PCamError, match=f"cannot write to the results folder {blocker}/run"):
        records.ensure_writable(blocker / "run")


def test_run_training_checks_results_before_training(tmp_path, synthetic_data_dir):
    from pcam.train.loop import run_training

    blocker = tmp_path / "results"
    blocker.write_text("")
    config = TrainConfig(model="mobilenet", run="r", data_dir=str(synthetic_data_dir),
                         weights=None, alpha=0.25)
    with pytest.raises(PCamError, match="cannot write to the results folder .*PCAM_RESULTS_DIR"):
        run_training(config, results=blocker)


def test_read_record_errors(tmp_path):
    with pytest.raises(PCamError, match="no run record at .*train first"):
        records.read_record(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text("{half")
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
    from pcam.train.loop import run_training

    config = TrainConfig(model="resnet50", run="r", data_dir=str(synthetic_data_dir),
                         weights="imagenet")
    with pytest.raises(PCamError, match="resnet50 is trained from scratch.*--weights none"):
        run_training(config, results=tmp_path)
    assert not (tmp_path / "r" / "record.json").exists()
