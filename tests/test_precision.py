"""precision="auto": the faster dtype policy by timing, float32 without 16-bit hardware,
the choice cached and recorded, a resumed run kept in the policy it trained in."""

import json

import keras
import pytest

from pcam.run import records
from pcam.run.config import TrainConfig
from pcam.train import precision


def _config(**kwargs) -> TrainConfig:
    return TrainConfig(model="mobilenet", alpha=0.25, weights=None, head_units=(4,),
                       batch_size=4, **kwargs)


@pytest.fixture(autouse=True)
def _cache_and_policy(tmp_path, monkeypatch):
    monkeypatch.setenv("PCAM_CACHE_DIR", str(tmp_path / "cache"))
    yield
    keras.config.set_dtype_policy("float32")


def _cpu_with(monkeypatch, flags, seconds=None):
    """A CPU-only machine with these flags; `seconds` {policy: s} fakes the timing."""
    monkeypatch.setattr(precision.tf.config, "list_physical_devices", lambda kind: [])
    monkeypatch.setattr(precision, "cpu_flags", lambda: set(flags))
    timed = []

    def fake(config, policies):
        timed.extend(policies)
        if seconds is None:
            raise AssertionError("nothing should be timed")
        return {policy: seconds[policy] for policy in policies}

    monkeypatch.setattr(precision, "seconds_per_step", fake)
    return timed


def test_a_set_precision_is_applied_as_given(monkeypatch):
    _cpu_with(monkeypatch, {"avx512_bf16"})
    choice = precision.apply_precision(_config(precision="mixed_bfloat16"))
    assert choice == {"requested": "mixed_bfloat16", "policy": "mixed_bfloat16",
                      "reason": "set in the run's settings"}
    assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert precision.current_choice() == choice
    keras.config.set_dtype_policy("float32")  # changed behind its back: no longer current
    assert precision.current_choice() is None


def test_auto_keeps_float32_without_bfloat16_instructions_and_times_nothing(monkeypatch,
                                                                            capsys):
    _cpu_with(monkeypatch, {"avx2", "avx512f"})
    choice = precision.apply_precision(_config())
    assert choice["policy"] == "float32" and "no bfloat16 instructions" in choice["reason"]
    assert "precision auto: float32 (" in capsys.readouterr().out


def test_auto_chooses_bfloat16_when_timed_faster_and_caches_it(monkeypatch, tmp_path):
    timed = _cpu_with(monkeypatch, {"avx512_bf16"}, {"float32": 0.30, "mixed_bfloat16": 0.15})
    choice = precision.choose_precision(_config())
    assert choice["policy"] == "mixed_bfloat16" and choice["cached"] is False
    assert choice["seconds_per_step"] == {"float32": 0.3, "mixed_bfloat16": 0.15}
    assert "2.00x as fast as float32" in choice["reason"]
    assert timed == ["float32", "mixed_bfloat16"]
    again = precision.choose_precision(_config())  # the cache answers: nothing timed again
    assert timed == ["float32", "mixed_bfloat16"]
    assert again["cached"] is True and again["policy"] == "mixed_bfloat16"
    # another batch size is another speed: timed afresh
    precision.choose_precision(_config().replace(batch_size=8))
    assert len(timed) == 4
    cache = json.loads((tmp_path / "cache" / precision.CACHE_FILE).read_text())
    assert len(cache) == 2


def test_auto_keeps_float32_when_bfloat16_is_not_clearly_faster(monkeypatch):
    _cpu_with(monkeypatch, {"amx_bf16"}, {"float32": 0.20, "mixed_bfloat16": 0.19})
    choice = precision.choose_precision(_config())
    assert choice["policy"] == "float32"
    assert "float32 kept: mixed_bfloat16 must be 1.1x as fast" in choice["reason"]


def test_a_damaged_cache_is_timed_again_with_a_warning(monkeypatch, tmp_path, capsys):
    timed = _cpu_with(monkeypatch, {"avx512_bf16"}, {"float32": 0.3, "mixed_bfloat16": 0.1})
    cache = tmp_path / "cache" / precision.CACHE_FILE
    cache.parent.mkdir()
    cache.write_text("{not json")
    assert precision.choose_precision(_config())["policy"] == "mixed_bfloat16"
    assert len(timed) == 2 and str(cache) in capsys.readouterr().err
    assert json.loads(cache.read_text())  # replaced by a valid one


def test_an_unwritable_cache_only_warns(monkeypatch, tmp_path, capsys):
    _cpu_with(monkeypatch, {"avx512_bf16"}, {"float32": 0.3, "mixed_bfloat16": 0.1})
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("PCAM_CACHE_DIR", str(tmp_path / "file" / "cache"))
    assert precision.choose_precision(_config())["policy"] == "mixed_bfloat16"
    assert "could not cache the precision choice" in capsys.readouterr().err


def test_cpu_flags_read_from_x86_and_arm_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert precision.cpu_flags(str(x86)) == {"fpu", "avx2", "avx512_bf16"}
    assert "bf16" in precision.cpu_flags(str(arm))
    assert precision.cpu_flags(str(tmp_path / "absent")) == set()


@pytest.mark.slow
def test_a_real_timing_of_both_policies_is_positive_and_restores_the_policy():
    keras.config.set_dtype_policy("float32")
    seconds = precision.seconds_per_step(_config(), ("float32", "mixed_bfloat16"))
    assert set(seconds) == {"float32", "mixed_bfloat16"}
    assert all(0 < s < 60 for s in seconds.values())
    assert keras.config.dtype_policy().name == "float32"


def _interrupted_run(tmp_path, data_dir, config):
    """Start `config`'s run, record one epoch, release it: a run to resume."""
    from pcam.run.runlock import release_lock
    from pcam.train.session import start_run

    run = start_run(config, results=tmp_path, verbose=0)
    release_lock(run.lock)
    records.start_phase(run.record, "finetune", 1, 2, trainable_params=10)
    records.add_epoch(run.record, {"epoch": 1, "phase": "finetune", "loss": 0.7,
                                   "val_auc": 0.6, "learning_rate": 1e-3, "seconds": 1.0})
    records.write_record(run.folder, run.record)
    return run


def _tiny(data_dir, **changes) -> TrainConfig:
    return _config(run="r", data_dir=str(data_dir), epochs=2, head_epochs=0, max_samples=32,
                   max_eval_samples=32, augment=(), tta=False, **changes)


def test_the_run_records_the_choice_and_resumes_in_the_policy_it_trained_in(
        tmp_path, synthetic_data_dir, monkeypatch, capsys):
    from pcam.train.session import set_seed_and_precision, start_run

    _cpu_with(monkeypatch, {"avx512_bf16"}, {"float32": 0.3, "mixed_bfloat16": 0.1})
    config = _tiny(synthetic_data_dir)
    assert set_seed_and_precision(config) == "mixed_bfloat16"
    run = _interrupted_run(tmp_path, synthetic_data_dir, config)
    stored = run.record["environment"]["precision"]
    assert stored["requested"] == "auto" and stored["policy"] == "mixed_bfloat16"
    assert run.record["distribution"]["precision"] == "mixed_bfloat16"

    # auto now says float32 (no cache, another machine): the run resumes in bfloat16
    _cpu_with(monkeypatch, {"avx2"})
    assert set_seed_and_precision(config) == "float32"
    resumed = start_run(config, results=tmp_path, verbose=0)
    assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert resumed.record["resumed"] and "the policy run r trained in" in capsys.readouterr().out
    assert resumed.record["environment"]["precision"]["policy"] == "mixed_bfloat16"


def test_a_run_from_before_auto_resumes_with_the_default(tmp_path, synthetic_data_dir,
                                                        monkeypatch):
    """Its record says precision float32 (the old default) and has no environment.precision."""
    from pcam.train.session import set_seed_and_precision, start_run

    old = _tiny(synthetic_data_dir, precision="float32")
    set_seed_and_precision(old)
    run = _interrupted_run(tmp_path, synthetic_data_dir, old)
    del run.record["environment"]["precision"]
    records.write_record(run.folder, run.record)

    _cpu_with(monkeypatch, {"avx512_bf16"}, {"float32": 0.3, "mixed_bfloat16": 0.1})
    config = _tiny(synthetic_data_dir)  # precision "auto", today's default
    assert set_seed_and_precision(config) == "mixed_bfloat16"
    resumed = start_run(config, results=tmp_path, verbose=0)
    assert keras.config.dtype_policy().name == "float32"
    assert resumed.record["config"]["precision"] == "float32" and resumed.record["resumed"]


@pytest.mark.parametrize("entry", [
    [], "mixed_bfloat16", {"policy": "mixed_bfloat16"},
    {"requested": "auto", "policy": "float64", "device": "x", "reason": "r",
     "seconds_per_step": {"float32": 1, "mixed_bfloat16": 1}},
    {"requested": "float32", "policy": "float32", "device": "x", "reason": "r",
     "seconds_per_step": {"float32": 1, "mixed_bfloat16": 1}},
    {"requested": "auto", "policy": "mixed_float16", "device": "x", "reason": "r",
     "seconds_per_step": {"float32": 1, "mixed_bfloat16": 1}},
    {"requested": "auto", "policy": "float32", "device": "x", "reason": 3,
     "seconds_per_step": {"float32": 1, "mixed_bfloat16": 1}},
    {"requested": "auto", "policy": "float32", "device": "x", "reason": "r", "junk": 1,
     "seconds_per_step": {"float32": 1, "mixed_bfloat16": 1}},
], ids=["list", "string", "no-keys", "float64", "requested", "fp16-on-cpu", "reason", "extra"])
def test_a_malformed_cache_entry_is_timed_again(monkeypatch, tmp_path, capsys, entry):
    timed = _cpu_with(monkeypatch, {"avx512_bf16"}, {"float32": 0.3, "mixed_bfloat16": 0.1})
    config = _config()
    key = precision._cache_key(config, precision.sixteen_bit_policy()[0])
    cache = tmp_path / "cache" / precision.CACHE_FILE
    cache.parent.mkdir()
    cache.write_text(json.dumps({key: entry}))
    choice = precision.apply_precision(config)
    assert choice["policy"] == "mixed_bfloat16" and len(timed) == 2
    assert f"malformed entry for this model in {cache}" in capsys.readouterr().err
    assert precision._valid_entry(json.loads(cache.read_text())[key], "mixed_bfloat16")


def test_a_multi_worker_run_is_not_timed(monkeypatch):
    _cpu_with(monkeypatch, {"avx512_bf16"})  # timing would fail the test
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["localhost:1", "localhost:2"]},
        "task": {"type": "worker", "index": 0}}))
    choice = precision.choose_precision(_config())
    assert choice["policy"] == "float32" and "multi-worker run is not timed" in choice["reason"]


def test_start_run_without_the_choice_for_auto_is_refused(tmp_path, synthetic_data_dir):
    from pcam.train import precision as module
    from pcam.train.session import start_run

    module._current = None
    config = _config(run="r", data_dir=str(synthetic_data_dir))
    with pytest.raises(RuntimeError, match="call set_seed_and_precision"):
        start_run(config, results=tmp_path, verbose=0)


def test_a_run_trained_in_bfloat16_is_scored_in_float32(tmp_path):
    """Evaluation and predict load the best checkpoint as its float32 copy."""
    from pcam.evaluation.evaluate import _load_best
    from pcam.models import _layers, build_model

    keras.config.set_dtype_policy("mixed_bfloat16")
    model = build_model("mobilenet", alpha=0.25, weights=None, head_units=(4,))
    keras.config.set_dtype_policy("float32")
    (tmp_path / "checkpoints").mkdir()
    model.save(tmp_path / "checkpoints" / "best.keras")
    scored = _load_best(tmp_path, {"checkpoints": {"best": "checkpoints/best.keras"}})
    assert {layer.dtype_policy.name for layer in _layers(scored)
            if not isinstance(layer, keras.layers.InputLayer)} == {"float32"}


def test_the_choice_reaches_the_terminal_from_a_running_notebook(capsys):
    """`pcam train` shows epoch lines of the kernel's output, and now the precision line."""
    import logging

    from pcam.execute.notebooks import _EpochLines

    lines = ("precision auto: mixed_bfloat16 (mixed_bfloat16 trained 1.48x as fast ...)\n"
             "run r: 10 steps an epoch, 1 replica(s)\nEpoch 1/2\n")
    _EpochLines(everything=False).emit(logging.LogRecord("papermill", logging.INFO, "", 0,
                                                         lines, None, None))
    out = capsys.readouterr().out.splitlines()
    assert out == ["  precision auto: mixed_bfloat16 (mixed_bfloat16 trained 1.48x as fast ...)",
                   "  Epoch 1/2"]
