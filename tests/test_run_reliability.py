"""Run-level faults (issue 14): each case makes one fault, runs a command or call, and
checks the exit code, the one-line message and that nothing that existed was lost.

A case's call is a command line (`pcam.app.cli.main`) or a function; a function's
`PCamError` counts as the CLI would show it (exit 2, one `error:` line). One
tiny run is trained in-process for the module (MobileNet alpha 0.25, random
weights, 32 patches, 1 epoch); the rest build records with `start_run` and
`pcam.run.records`. Two slow cases run `pcam train` through the notebook.
"""

import contextlib
import fnmatch
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import keras
import pytest
from fake_runs import make_run
from h5_files import write_pcam
from recipe import train as run_training

from pcam.app.cli import main
from pcam.core.errors import PCamError
from pcam.core.paths import DEMO_WEIGHTS, PROJ_ROOT
from pcam.data.spec import SPEC
from pcam.report.table import END, START
from pcam.run import records
from pcam.run.config import TrainConfig
from pcam.run.runlock import LOCK, acquire_lock, lock_holder, release_lock
from pcam.train.session import start_run

pytestmark = pytest.mark.slow
README = f"# Title\n\n{START}\n| metric | mobilenet train | resnet50 train |\nkept\n{END}\n"


def _config(data: Path, run: str = "r", **changes) -> TrainConfig:
    settings = dict(model="mobilenet", run=run, data_dir=str(data), alpha=0.25, weights=None,
                    head_units=(4,), dropout=0.0, epochs=2, head_epochs=0, batch_size=16,
                    max_samples=32, max_eval_samples=32, augment=(), tta=False, seed=0,
                    precision="float32")
    return TrainConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_data_dir):
    """(results folder, data folder) of one complete run "base", trained once."""
    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(synthetic_data_dir, root / "data")
    record = run_training(_config(root / "data", "base", epochs=1), results=root / "results")
    assert record["status"] == "complete" and record["data"]["fingerprint"]["train"]["x"]
    assert not (root / "results" / "base" / LOCK).exists()  # released by finish()
    return root / "results", root / "data"


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    built = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    built.compile(optimizer="adam", loss="mse")
    return built


@dataclass
class Env:
    """One case's folders: its own copy of the data and its results folder."""

    tmp: Path
    trained: tuple
    synthetic: Path
    model: keras.Model
    monkeypatch: pytest.MonkeyPatch
    notes: dict = field(default_factory=dict)

    @property
    def data(self) -> Path:
        if not (self.tmp / "data").exists():
            shutil.copytree(self.synthetic, self.tmp / "data")
        return self.tmp / "data"

    @property
    def results(self) -> Path:
        return self.tmp / "results"

    @property
    def folder(self) -> Path:
        return self.results / "r"

    def base(self) -> Path:
        """A copy of the trained run (complete, scored), as results/base."""
        shutil.copytree(self.trained[0] / "base", self.results / "base")
        return self.results / "base"

    def interrupted(self, record_changes=None) -> dict:
        """Run "r" on this case's data: started, one epoch recorded, then killed."""
        run = start_run(_config(self.data), results=self.results, verbose=0)
        release_lock(run.lock)
        records.start_phase(run.record, "finetune", 1, 2, trainable_params=10)
        records.add_epoch(run.record, {"epoch": 1, "phase": "finetune", "loss": 0.7,
                                       "val_auc": 0.6, "learning_rate": 1e-3, "seconds": 1.0})
        (record_changes or (lambda r: None))(run.record)
        records.write_record(self.folder, run.record)
        return run.record

    def lock(self, folder: Path, pid: int, host: str | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / LOCK).write_text(json.dumps({
            "pid": pid, "host": host or socket.gethostname(), "since": "2026-01-01T00:00:00Z",
            "doing": "trained"}))


def _cli(make):
    return ("cli", make)


def _fn(make):
    return ("fn", make)


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def _replace_labels(data: Path, split: str) -> None:
    path = data / SPEC[split].y.name
    with h5py.File(path, "r+") as f:
        f["y"][0] = 1 - f["y"][0]


def _resume(env: Env):
    run = start_run(_config(env.data), results=env.results, verbose=0)
    release_lock(run.lock)
    return run


def _resume_with_checkpoint(env: Env):
    run = _resume(env)
    run.resume(env.model, "finetune")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _full_disk_save(env: Env):
    from pcam.train.callbacks import EpochCheckpoints, NaNGuard

    def save(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PK half a checkpoint")
        raise OSError(28, "No space left on device")

    folder = env.results / "base" / "checkpoints"
    env.monkeypatch.setattr(keras.Model, "save", save)
    callback = EpochCheckpoints(folder, NaNGuard(), best=0.5)
    callback.set_model(env.model)
    callback.on_epoch_end(3, {"val_auc": 0.9})


def _report(env: Env, *extra: str) -> list[str]:
    (env.tmp / "README.md").write_text(README)
    return ["report", "--results", str(env.results), "--readme", str(env.tmp / "README.md"),
            "--images", str(env.tmp / "images"), *extra]


def _only_mobilenet(env: Env) -> None:
    make_run(env.results, "mobilenet-pub", "mobilenet")


def _terminated_report(args):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)  # the handler raises before this ends


def _interrupted_report(args):
    raise KeyboardInterrupt


def _disk_full_report(args):
    raise OSError(28, "No space left on device", "README.md")


def _trained_elsewhere(env: Env) -> None:
    env.base()
    other = env.tmp / "elsewhere"
    write_pcam(other, "valid", n=24)
    write_pcam(other, "test", n=24)
    env.monkeypatch.setenv("PCAM_DATA_DIR", str(other))


def _other_test(env: Env) -> Path:
    write_pcam(env.tmp / "other", "test", n=24)
    return env.tmp / "other"


def _twice_on_other(env: Env) -> None:
    env.base()
    assert main(["evaluate", "--run", str(env.results / "base"), "--data-dir",
                 str(_other_test(env)), "--split", "test", "--no-tta"]) == 0


def _unscored(env: Env) -> None:
    folder = env.base()
    record = records.read_record(folder)
    record.update(threshold=None, metrics={}, predictions={})
    records.write_record(folder, record)


def _copy_of_own_data(env: Env) -> None:
    env.base()
    shutil.copytree(env.trained[1], env.tmp / "copy")
    env.monkeypatch.setenv("PCAM_DATA_DIR", str(env.tmp / "copy"))


def _external_in_report(env: Env):
    run_dir = make_run(env.results, "mobilenet-pub", "mobilenet")
    readme = env.tmp / "README.md"
    readme.write_text(README.replace("| resnet50 train ", ""))
    from pcam.report.build import build_report

    build_report(env.results, readme, env.tmp / "images", gradcam=False)
    before = readme.read_text()
    record = records.read_record(run_dir)
    entry = {**record["metrics"]["test"], "data_dir": "<external>/x/other", "data_label": "other",
             "hardware": {"cpu": "c", "cpu_count": 1, "memory_gb": 1.0, "gpus": []},
             "predictions": "predictions/other-00000000/test.npz", "threshold": 0.9,
             "at": records.utc_now()}
    entry["single"] = {**entry["single"], "roc_auc": 0.01}
    records.set_external_metrics(record, "other-00000000", "test", entry)
    records.write_record(run_dir, record)
    build_report(env.results, readme, env.tmp / "images", gradcam=False)
    assert readme.read_text() == before  # other data never reach the table


def _at_exit_release(env: Env):
    env.folder.mkdir(parents=True)
    code = ("import sys; from pcam.run.runlock import acquire_lock; "
            "acquire_lock(sys.argv[1]); print('held')")
    done = subprocess.run([sys.executable, "-c", code, str(env.folder)], capture_output=True,
                          text=True, cwd=PROJ_ROOT, check=True)
    assert done.stdout.strip() == "held" and not (env.folder / LOCK).exists()


def _stale_lock_taken_over(env: Env):
    run = start_run(_config(env.data), results=env.results, verbose=0)
    assert json.loads((env.folder / LOCK).read_text())["pid"] == os.getpid()
    release_lock(run.lock)


def _young_garbage_lock(env: Env) -> None:
    env.interrupted()
    (env.folder / LOCK).write_text("")


def _old_garbage_lock(env: Env) -> None:
    env.interrupted()
    (env.folder / LOCK).write_text("{half")
    os.utime(env.folder / LOCK, (time.time() - 120, time.time() - 120))


def _weights(kind: str):
    def make(env: Env) -> None:
        path = env.tmp / "w.h5"
        if kind == "folder":
            path.mkdir()
        elif kind == "text":
            path.write_text("<html>Not Found</html>")
        elif kind == "truncated":
            path.write_bytes(DEMO_WEIGHTS.read_bytes()[:100_000])
        env.notes["weights"] = str(path)
    return make


def _start_with_weights(env: Env):
    return start_run(_config(env.data, weights=env.notes["weights"], alpha=0.5),
                     results=env.results, verbose=0)


def _stale_temps(env: Env) -> None:
    env.interrupted()
    (env.folder / ".record.json.abc123.tmp.json").write_text("{")
    (env.folder / "checkpoints" / ".last.keras.abc123.tmp.keras").write_bytes(b"PK")
    env.notes["temps"] = True


# What a command that starts over (report, predict, ...) says when interrupted.
_STARTS_AGAIN = (r"^interrupted; nothing was left half-written; rerun the same command to start "
                 r"again$")

# (case, make the fault, call, exit code, one-line message regex, files allowed to change)
CASES = [
    # Settings: non-finite numbers fail before anything runs.
    ("learning rate inf", None, _cli(lambda e: ["train", "--model", "mobilenet", "--run", "r",
     "--results", str(e.results), "--learning-rate", "inf"]), 2,
     r"^error: learning_rate=inf: use a finite number", ()),
    ("fine-tune rate nan", None, _cli(lambda e: ["train", "--model", "mobilenet", "--run", "r",
     "--results", str(e.results), "--finetune-learning-rate", "nan"]), 2,
     r"^error: finetune_learning_rate=nan: use a finite number", ()),
    ("dropout inf", None, _cli(lambda e: ["train", "--model", "mobilenet", "--results",
     str(e.results), "--dropout", "inf"]), 2, r"^error: dropout=inf: use a finite number", ()),
    ("alpha nan", None, _cli(lambda e: ["train", "--model", "mobilenet", "--results",
     str(e.results), "--alpha", "nan"]), 2, r"^error: alpha=nan: use a finite number", ()),
    ("train on a missing data folder", None, _cli(lambda e: ["train", "--model", "mobilenet",
     "--run", "r", "--results", str(e.results), "--data-dir", str(e.tmp / "nope")]), 2,
     r"^error: no PCam files in .*nope; run `python -m pcam download", ()),
    ("train without a valid split", lambda e: [(e.data / f.name).unlink() for f in (
     SPEC["valid"].x, SPEC["valid"].y)], _cli(lambda e: ["train", "--model", "mobilenet",
     "--run", "r", "--results", str(e.results), "--data-dir", str(e.data)]), 2,
     r"^error: split 'valid': .* not found in .*data; run `python -m pcam download", ()),
    # Weights: each problem its own message; no run folder is made.
    ("weights path is a folder", _weights("folder"), _fn(_start_with_weights), 2,
     r"^error: weights path .*w\.h5 is a folder, not a file; give the weights file in it", ()),
    ("weights file is text", _weights("text"), _fn(_start_with_weights), 2,
     r"^error: weights file .*w\.h5 is not an HDF5 weights file .*give Keras' no-top", ()),
    ("weights file truncated", _weights("truncated"), _fn(_start_with_weights), 2,
     r"^error: weights file .*w\.h5 is damaged or incomplete .*download or copy it again$", ()),
    ("weights file missing", None, _fn(lambda e: start_run(_config(
     e.data, weights=str(e.tmp / "gone.h5")), results=e.results)), 2,
     r"^error: weights file .*gone\.h5 does not exist", ()),
    # One process per run folder.
    ("train while another trains", lambda e: (e.interrupted(), e.lock(e.folder, os.getppid())),
     _fn(_resume), 2, rf"^error: run r is being trained by pid {os.getppid()} on "
     rf"{re.escape(socket.gethostname())} \(since 2026-01-01T00:00:00Z\); wait for it", ()),
    ("lock of another host", lambda e: (e.interrupted(), e.lock(e.folder, 1, "far-away")),
     _fn(_resume), 2, r"^error: run r is being trained by pid 1 on far-away .*If no such "
     r"process runs any more, delete .*r/\.lock$", ()),
    ("stale lock (pid gone)", lambda e: (e.interrupted(), e.lock(e.folder, _dead_pid())),
     _fn(_stale_lock_taken_over), 0, None, ("r/.lock", "r/record.json")),
    ("lock being written (empty, young)", _young_garbage_lock, _fn(_resume), 2,
     r"^error: run r is being trained by pid \? on \? \(since just now\)", ()),
    ("broken old lock", _old_garbage_lock, _fn(_resume), 0, None, ("r/.lock", "r/record.json")),
    ("evaluate while training", lambda e: e.lock(e.base(), os.getppid()),
     _cli(lambda e: ["evaluate", "--run", str(e.results / "base"), "--data-dir",
                     str(e.trained[1])]), 2, r"^error: run base is being trained by pid", ()),
    ("lock released at exit", None, _fn(_at_exit_release), 0, None, ()),
    ("stale temp files of a killed save", _stale_temps, _fn(_resume), 0, None,
     ("r/record.json", "r/.record.json.abc123.tmp.json",
      "r/checkpoints/.last.keras.abc123.tmp.keras")),
    # Resume checks the data fingerprint.
    ("resume on other labels", lambda e: (e.interrupted(), _replace_labels(e.data, "valid")),
     _fn(_resume), 2, r"^error: run r started on other data than .*data holds now \(valid y "
     r"file camelyonpatch_level_2_split_valid_y\.h5: other sha256\); resume it on the data", ()),
    ("resume on a longer train file", lambda e: (e.interrupted(), write_pcam(e.data, "train",
     n=600)), _fn(_resume), 2, r"^error: run r started on other data .*train x file .*: \d+ -> "
     r"\d+ bytes", ()),
    ("resume without the test split", lambda e: (e.interrupted(), [
     (e.data / f.name).unlink() for f in (SPEC["test"].x, SPEC["test"].y)]), _fn(_resume), 2,
     r"^error: run r started on other data .*split test is gone", ()),
    ("resume after a copy (new mtime only)", lambda e: (e.interrupted(), [
     os.utime(p) for p in e.data.glob("*.h5")]), _fn(_resume), 0,
     r"^note: run r: .* changed modification time but not content; resuming$",
     ("r/record.json",)),
    ("resume an old record (no fingerprint)", lambda e: e.interrupted(
     lambda r: r["data"].pop("fingerprint")), _fn(_resume), 0,
     r"^note: run r's record has no data fingerprint .*resuming without checking", (
         "r/record.json",)),
    # Checkpoints: damaged or missing ones say so, and what to do.
    ("resume from a truncated last.keras", lambda e: (e.interrupted(), shutil.copy(
     e.trained[0] / "base/checkpoints/last.keras", e.folder / "checkpoints/last.keras"),
     _truncate(e.folder / "checkpoints/last.keras")), _fn(_resume_with_checkpoint), 2,
     r"^error: .*r/checkpoints/last\.keras is damaged or incomplete .*run r has 1 epoch\(s\) "
     r"recorded and cannot resume without it", ("r/record.json",)),
    ("resume without last.keras", lambda e: e.interrupted(), _fn(_resume_with_checkpoint), 2,
     r"^error: .*r/checkpoints/last\.keras is missing; run r has 1 epoch\(s\) recorded",
     ("r/record.json",)),
    ("evaluate a truncated best.keras", lambda e: _truncate(e.base() / "checkpoints/best.keras"),
     _cli(lambda e: ["evaluate", "--run", str(e.results / "base"), "--data-dir",
                     str(e.trained[1])]), 2,
     r"^error: .*base/checkpoints/best\.keras is damaged or incomplete .*restore that file", ()),
    ("disk full while saving a checkpoint", lambda e: e.base(), _fn(_full_disk_save), 2,
     r"^error: could not write .*base/checkpoints/best\.keras \(No space left on device\); "
     r"the previous version is kept", ()),
    # Evaluation: the run's own data only replace its metrics.
    ("evaluate on other data", lambda e: e.base(), _cli(lambda e: [
     "evaluate", "--run", str(e.results / "base"), "--data-dir", str(_other_test(e)),
     "--split", "test", "--no-tta"]), 0,
     r"^evaluate: run base scored on other data .*under external\['other-[0-9a-f]{8}'\]: test; "
     r"its own metrics and threshold are unchanged$", ("base/record.json",)),
    ("evaluate on the same other data again", _twice_on_other, _cli(lambda e: [
     "evaluate", "--run", str(e.results / "base"), "--data-dir", str(e.tmp / "other"),
     "--split", "test", "--no-tta"]), 0, r"\(replacing the earlier test\)",
     ("base/record.json", "base/predictions/other-*/test.npz")),
    ("PCAM_DATA_DIR elsewhere", _trained_elsewhere, _cli(lambda e: [
     "evaluate", "--run", str(e.results / "base")]), 2,
     r"^error: run base trained on <external>/.*data, which is outside the project, so its "
     r"record cannot locate it, and .*elsewhere .*give the run's data folder with --data-dir", ()),
    ("PCAM_DATA_DIR holds a copy of its data", _copy_of_own_data, _cli(lambda e: [
     "evaluate", "--run", str(e.results / "base"), "--split", "test", "--no-tta"]), 0,
     r"^evaluate: replaced run base's test metrics and predictions \(scored again on its own "
     r"data\)$", ("base/record.json", "base/predictions/test.npz")),
    ("other data before any threshold", _unscored, _cli(lambda e: [
     "evaluate", "--run", str(e.results / "base"), "--data-dir", str(_other_test(e)),
     "--split", "test"]), 2, r"^error: run base has no threshold yet .*score it on its own data "
     r"first", ("base/record.json",)),
    # Report: never removes a table it cannot rebuild.
    ("report from a mistyped --results", None, _cli(lambda e: _report(e)), 2,
     r"^error: results folder .*results does not exist; give --results", ()),
    ("report with no published run", lambda e: make_run(e.results, "x", published=False),
     _cli(lambda e: _report(e)), 2, r"^error: no published run in .*results, so the results "
     r"block of .*README\.md was kept; train one with --published", ()),
    ("report without a model the table shows", _only_mobilenet, _cli(lambda e: _report(e)), 2,
     r"^error: the table shows resnet50, which has no published run .*--drop-missing", ()),
    ("report --drop-missing", _only_mobilenet, _cli(lambda e: _report(e, "--drop-missing")), 0,
     r"^report: dropping resnet50 from the table \(no published run\)$", ("README.md", "images")),
    ("report ignores external scores", None, _fn(_external_in_report), 0, None, ()),
    # Signals and file-system errors end in one line.
    ("SIGTERM", lambda e: e.monkeypatch.setattr("pcam.app.commands.cmd_report", _terminated_report),
     _cli(lambda e: ["report"]), 143, _STARTS_AGAIN, ()),
    ("Ctrl-C", lambda e: e.monkeypatch.setattr("pcam.app.commands.cmd_report", _interrupted_report),
     _cli(lambda e: ["report"]), 130, _STARTS_AGAIN, ()),
    ("OSError", lambda e: e.monkeypatch.setattr("pcam.app.commands.cmd_report", _disk_full_report),
     _cli(lambda e: ["report"]), 2, r"^error: No space left on device \(README\.md\); fix it", ()),
]


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _outcome(env: Env, kind: str, make) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if kind == "cli":
            code = main(make(env))
        else:
            try:
                make(env)
                code = 0
            except PCamError as error:
                print(f"error: {error}", file=sys.stderr)
                code = 2
    return code, (err.getvalue() if code else out.getvalue())


@pytest.mark.parametrize(("fault", "call", "code", "message", "may_change"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_fault(fault, call, code, message, may_change, tmp_path, trained, synthetic_data_dir,
               model, monkeypatch):
    env = Env(tmp_path, trained, synthetic_data_dir, model, monkeypatch)
    if fault is not None:
        fault(env)
    before = _files(tmp_path)
    runs_before = {d.name for d in env.results.iterdir()} if env.results.exists() else set()
    got, text = _outcome(env, *call)
    assert got == code, text
    if message is not None:
        lines = [line for line in text.splitlines() if line.strip()]
        if code:  # a failure is one line
            assert len(lines) == 1, text
        assert any(re.search(message, line) for line in lines), text
    after = _files(tmp_path)
    allowed = [f"results/{p}" for p in may_change] + list(may_change)
    for path, digest in before.items():
        if not any(fnmatch.fnmatch(path, p) or path.startswith(f"{p}/") for p in allowed):
            assert after.get(path) == digest, f"{path} was changed or removed"
    leftovers = [p for p in after if ".tmp" in Path(p).name]
    assert not leftovers, f"temporary files left: {leftovers}"
    if got and env.results.exists():  # a failure makes no run folder
        new = {d.name for d in env.results.iterdir()} - runs_before
        assert not new, f"a failed call left run folder(s) {new}"
    lock = env.folder / LOCK
    assert not lock.exists() or json.loads(lock.read_text() or "{}").get("pid") != os.getpid()


def test_case_count():
    assert len(CASES) >= 25


def test_lock_is_reentrant_for_its_own_process_and_names_the_holder(tmp_path):
    path = acquire_lock(tmp_path, "evaluated")
    holder = json.loads(path.read_text())
    assert holder["pid"] == os.getpid() and holder["doing"] == "evaluated"
    assert lock_holder(path) is None  # this process may take its own lock again
    assert acquire_lock(tmp_path) == path
    release_lock(path)
    assert not path.exists()


def _wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_train_that_fails_before_any_epoch_leaves_no_run_folder(tmp_path, synthetic_data_dir):
    """The weights are refused before a kernel starts; no run folder is left."""
    (tmp_path / "weights.h5").mkdir()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", "--model", "mobilenet", "--preset", "smoke", "--run", "failed",
                     "--results", str(tmp_path / "results"), "--data-dir",
                     str(synthetic_data_dir), "--weights", str(tmp_path / "weights.h5")])
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1, err.getvalue()
    assert re.match(r"error: weights path .* is a folder, not a file; ", lines[0]), lines[0]
    assert not (tmp_path / "results" / "failed").exists()


def test_sigterm_during_training_stops_cleanly_and_stays_resumable(tmp_path, synthetic_data_dir):
    """`pcam train` gets SIGTERM after its first epoch: exit 143, one line, kernel gone,
    lock released, record "running" with that epoch (the same command resumes)."""
    results = tmp_path / "results"
    command = [sys.executable, "-m", "pcam", "train", "--model", "mobilenet", "--preset",
               "smoke", "--run", "term", "--results", str(results), "--data-dir",
               str(synthetic_data_dir), "--weights", "none", "--epochs", "30",
               "--head-epochs", "0"]
    process = subprocess.Popen(command, cwd=PROJ_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        record = results / "term" / "record.json"
        _wait_for(lambda: process.poll() is not None or record.exists() and json.loads(
            record.read_text())["history"], 240, "the first epoch")
        assert process.poll() is None, process.communicate()[1][-2000:]
        holder = json.loads((results / "term" / LOCK).read_text())
        assert holder["pid"] == process.pid  # `pcam train` holds the lock; its kernel joined it
        kernel = holder["helpers"][0]["pid"]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
    saved = json.loads(record.read_text())
    assert saved["status"] == "running" and saved["history"]
    assert not (results / "term" / LOCK).exists()
    _wait_for(lambda: not Path(f"/proc/{kernel}").exists() or "Z" in Path(
        f"/proc/{kernel}/stat").read_text().split(")")[-1][:3], 20, "the kernel to end")
    assert not list((results / "term").rglob("*.tmp*"))
    assert saved["config"]["epochs"] == 30


@pytest.mark.parametrize("error, shown", [
    (None, True), (ValueError("a real bug"), True), ("DeadKernelError", False)])
def test_interrupt_hides_only_the_abandoned_cells_dead_kernel_error(error, shown):
    """After Ctrl-C or SIGTERM papermill shuts the kernel down and the cell it was running
    fails late with DeadKernelError; asyncio would print that as "Task exception was never
    retrieved" below our one line (1 run in 4 before the filter). Other errors still show.
    The filter is tried on the log record asyncio builds (when and whether asyncio logs it
    depends on the interpreter's garbage collection; the end-to-end tests above check that
    nothing follows the one line)."""
    from nbclient.exceptions import DeadKernelError

    from pcam.execute.notebooks import _abandoned_cell

    if error == "DeadKernelError":
        error = DeadKernelError("Kernel died")
    exc_info = (type(error), error, None) if error is not None else None
    record = logging.LogRecord("asyncio", logging.ERROR, __file__, 1,
                               "Task exception was never retrieved", (), exc_info)
    assert _abandoned_cell(record) is shown
