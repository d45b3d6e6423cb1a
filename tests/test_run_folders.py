"""Run folders, locks, reruns and command folders (issue 21, rules 1, 2 and 8).

Rule 1: the run lock is taken before anything in the folder is created, read or
removed, by every command that writes into a run folder; nothing removes a folder
it did not make in this invocation unless a flag says so, and never one a live
process has locked. Rule 2: a refusal changes nothing on disk. Rule 8: default
folders come from the project root. Races are tried with real processes released
together by a barrier file; the notebook's kernel is a real child process joining
its command's lock (a fake one where the kernel's work does not matter).
"""

import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from fake_runs import make_run

from pcam.app.cli import build_parser, main
from pcam.core.errors import PCamError
from pcam.core.paths import PROJ_ROOT
from pcam.run import records, runlock
from pcam.run.config import TrainConfig
from pcam.run.runlock import LOCK, acquire_lock, claim_folder, lock_holder, release_lock

MOBILENET_NB = "01_mobilenet_transfer.ipynb"


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _tree(root: Path) -> set[str]:
    """Every path under `root`, folders included (a refusal makes no empty folder either)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _lock_for(folder: Path, proc: subprocess.Popen, doing: str = "trained") -> None:
    """`folder/.lock` held by the live process `proc` (as `acquire_lock` writes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK).write_text(json.dumps({
        "pid": proc.pid, "host": socket.gethostname(), "doing": doing,
        "start": runlock._start(proc.pid), "since": "2026-01-01T00:00:00Z"}))


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _no_kernel(*args, **kwargs):
    raise AssertionError("a kernel was started for a command that must refuse first")


def _together(tmp_path: Path, scripts: list[list[str]], timeout: float = 300,
              ) -> list[tuple[int, str, int]]:
    """Start processes that each wait for `go` (after touching `ready-<i>`); (rc, out, pid)."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, *argv, str(go), str(i)], cwd=PROJ_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
             for i, argv in enumerate(scripts)]
    try:
        end = time.monotonic() + timeout
        while not all((tmp_path / f"ready-{i}").exists() for i in range(len(procs))):
            assert time.monotonic() < end, "processes never got ready"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
        go.touch()
        return [(p.wait(timeout=timeout), p.communicate()[0], p.pid) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        go.unlink(missing_ok=True)
        for i in range(len(procs)):
            (tmp_path / f"ready-{i}").unlink(missing_ok=True)


_BARRIER = """
import sys, time
from pathlib import Path
go, me = Path(sys.argv[-2]), sys.argv[-1]
(go.parent / f"ready-{me}").touch()
while not go.exists():
    time.sleep(0.001)
"""

# -- the lock itself: real processes ------------------------------------------------

CLAIM = _BARRIER + """
from pcam.core.errors import PCamError
from pcam.run.runlock import claim_folder, release_lock
try:
    lock, created = claim_folder(sys.argv[1])
except PCamError as error:
    print(f"error: {error}")
    sys.exit(2)
time.sleep(1.5)  # others try while this one holds it
assert Path(sys.argv[1]).is_dir()
print("won", created)
release_lock(lock)
"""


@pytest.mark.slow
@pytest.mark.parametrize("stale", [False, True], ids=["new folder", "stale lock"])
def test_one_of_many_processes_takes_a_run_folder(tmp_path, stale):
    """Six processes claim one folder at the same instant, three times: exactly one gets it
    (also when each finds a stale lock to take over); the others name the winner."""
    for round_ in range(3):
        folder = tmp_path / f"r{round_}"
        if stale:
            dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True, check=True)
            folder.mkdir()
            (folder / LOCK).write_text(json.dumps({"pid": int(dead.stdout), "host":
                                                   socket.gethostname(), "since": "x"}))
        results = _together(tmp_path, [["-c", CLAIM, str(folder)]] * 6)
        winners = [(out, pid) for rc, out, pid in results if rc == 0]
        assert len(winners) == 1, results
        for rc, out, _ in results:
            if rc:
                assert rc == 2 and f"is being trained by pid {winners[0][1]} " in out, out
        assert folder.is_dir() and not (folder / LOCK).exists()


JOIN = """
import sys
from pcam.core.errors import PCamError
from pcam.run.runlock import acquire_lock
try:
    acquire_lock(sys.argv[1])
except PCamError as error:
    print(f"error: {error}")
    sys.exit(2)
print("joined", flush=True)
if len(sys.argv) > 2:
    import time; time.sleep(float(sys.argv[2]))
"""

HOLD_AND_SPAWN = """
import subprocess, sys, time
from pcam.run.runlock import acquire_lock, inherited_by_children
import os
lock = acquire_lock(sys.argv[1])
kernel = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1], "60"],
                          env={**os.environ, **inherited_by_children(lock)},
                          stdout=subprocess.PIPE, text=True)
assert kernel.stdout.readline().strip() == "joined"
print(kernel.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_kernel_joins_its_commands_lock_and_no_other_process_does(tmp_path):
    folder = tmp_path / "r"
    lock, created = claim_folder(folder)
    try:
        assert created
        env = {**os.environ, **runlock.inherited_by_children(lock)}
        joined = subprocess.run([sys.executable, "-c", JOIN, str(folder)], cwd=PROJ_ROOT,
                                env=env, capture_output=True, text=True)
        assert joined.returncode == 0, joined.stdout + joined.stderr
        assert json.loads(lock.read_text())["pid"] == os.getpid()  # still the command's
        for other in ({**os.environ}, {**env, "PCAM_RUN_LOCK": f"1:{lock}"},
                      {**env, "PCAM_RUN_LOCK": f"{os.getpid()}:{tmp_path / 'x' / LOCK}"}):
            refused = subprocess.run([sys.executable, "-c", JOIN, str(folder)], cwd=PROJ_ROOT,
                                     env=other, capture_output=True, text=True)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert f"is being trained by pid {os.getpid()} " in refused.stdout
    finally:
        release_lock(lock)
    assert not lock.exists()


@pytest.mark.slow
def test_a_joined_kernel_keeps_the_lock_when_its_command_is_killed(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_SPAWN, str(folder), JOIN],
                              cwd=PROJ_ROOT, stdout=subprocess.PIPE, text=True)
    kernel = None
    try:
        kernel = int(holder.stdout.readline())
        assert lock_holder(folder / LOCK)["pid"] == holder.pid
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert lock_holder(folder / LOCK)["pid"] == kernel  # the kernel still trains
        with pytest.raises(PCamError, match=f"by pid {kernel} "):
            acquire_lock(folder)
        os.kill(kernel, signal.SIGKILL)
        end = time.monotonic() + 10
        while lock_holder(folder / LOCK) is not None and time.monotonic() < end:
            time.sleep(0.1)
        assert lock_holder(folder / LOCK) is None  # both gone: stale, taken over
        release_lock(acquire_lock(folder))
    finally:
        holder.kill()
        if kernel is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(kernel, signal.SIGKILL)


# -- run_notebook: the command holds the lock from before the folder exists ----------

KERNEL = """
import json, sys, time
from pathlib import Path
from pcam.run.runlock import acquire_lock
folder = Path(sys.argv[1])
acquire_lock(folder)  # joins the lock of the command that started this "kernel"
(folder / "record.json").write_text(json.dumps({"history": []}))  # started, no epoch yet
time.sleep(float(sys.argv[2]))
(folder / "record.json").write_text(json.dumps({"history": [{"epoch": 1}]}))
"""

COMMAND = _BARRIER + """
import subprocess
import pcam.execute.notebooks as nb
from pcam.run.config import TrainConfig
from pcam.core.errors import PCamError
results, kernel_code = Path(sys.argv[1]), sys.argv[2]

def kernel(source, target, parameters, log_output):
    subprocess.run([sys.executable, "-c", kernel_code, str(results / "r"), "2"], check=True)
    target.write_text("{}")  # the executed notebook

nb._execute = kernel
try:
    nb.run_notebook(TrainConfig.for_model("mobilenet", "smoke", run="r", weights=None,
                                          max_samples=None, max_eval_samples=None),
                    results=results)
except PCamError as error:
    print(f"error: {error}")
    sys.exit(2)
print("trained")
"""


@pytest.mark.slow
def test_two_trains_started_together_one_trains_and_its_folder_stays(tmp_path,
                                                                      invalid_record_ok):
    """The case of issue 21: both saw no folder and the loser deleted the winner's."""
    for round_ in range(2):
        results = tmp_path / f"results{round_}"
        invalid_record_ok(results / "r" / "record.json")  # the fake kernel's record
        outcome = _together(tmp_path, [["-c", COMMAND, str(results), KERNEL]] * 2)
        codes = sorted(rc for rc, _, _ in outcome)
        assert codes == [0, 2], outcome
        winner = next(pid for rc, _, pid in outcome if rc == 0)
        loser = next(out for rc, out, _ in outcome if rc == 2)
        assert f"run r is being trained by pid {winner} " in loser, loser
        folder = results / "r"
        assert sorted(p.name for p in folder.iterdir()) == [MOBILENET_NB, "record.json"]


def _config(data: Path) -> TrainConfig:
    return TrainConfig(model="mobilenet", run="r", data_dir=str(data), alpha=0.25,
                       weights=None, head_units=(4,), epochs=2, head_epochs=0, batch_size=16,
                       max_samples=32, max_eval_samples=32, augment=(), tta=False,
                       precision="float32")


def _interrupted(results: Path, data: Path) -> Path:
    """Run "r": started, one epoch recorded, with an executed notebook and its kernel log."""
    from pcam.train.session import start_run

    run = start_run(_config(data), results=results, verbose=0)
    release_lock(run.lock)
    records.start_phase(run.record, "finetune", 1, 2, trainable_params=10)
    records.add_epoch(run.record, {"epoch": 1, "phase": "finetune", "loss": 0.7,
                                   "val_auc": 0.6, "learning_rate": 1e-3, "seconds": 1.0})
    records.write_record(run.folder, run.record)
    (run.folder / MOBILENET_NB).write_bytes(os.urandom(824_000))  # the executed notebook
    (run.folder / "kernel.log").write_text("the first attempt's log\n")
    return run.folder


def test_a_refusal_inside_the_kernel_leaves_the_run_folder_byte_identical(
        tmp_path, synthetic_data_dir, monkeypatch):
    """papermill writes its output notebook as it starts; a refusal must not replace it."""
    import pcam.execute.notebooks as nb

    folder = _interrupted(tmp_path / "results", synthetic_data_dir)
    before, tree = _files(tmp_path), _tree(tmp_path)

    def refusing_kernel(source, target, parameters, log_output):
        target.write_text('{"cells": []}')  # papermill's first write
        target.with_name("kernel.log").write_text("this attempt's log\n")
        raise PCamError(f"run r exists with other settings (epochs); rerun with the same "
                        f"settings (in {nb.terminal_path(target)})")

    monkeypatch.setattr(nb, "_execute", refusing_kernel)
    code, _, err = _cli(["train", "--model", "mobilenet", "--preset", "smoke", "--run", "r",
                         "--results", str(folder.parent), "--data-dir",
                         str(synthetic_data_dir), "--weights", "none", "--epochs", "5"])
    assert code == 2, err
    assert err.strip().endswith(f"(in notebooks/{MOBILENET_NB}; "
                                f"{nb.terminal_path(folder)} was left as it was)"), err
    assert _files(tmp_path) == before and _tree(tmp_path) == tree


@pytest.mark.slow
def test_a_real_kernels_refusal_changes_nothing(tmp_path, synthetic_data_dir):
    """Through papermill and a kernel: other settings are refused there (exit 2, one line)."""
    folder = _interrupted(tmp_path / "results", synthetic_data_dir)
    before, tree = _files(tmp_path), _tree(tmp_path)
    code, _, err = _cli(["train", "--model", "mobilenet", "--run", "r", "--results",
                         str(folder.parent), "--data-dir", str(synthetic_data_dir),
                         "--alpha", "0.25", "--weights", "none", "--epochs", "3",
                         "--head-epochs", "0", "--max-samples", "32"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "run r exists with other settings" in err and "was left as it was" in err, err
    assert _files(tmp_path) == before and _tree(tmp_path) == tree


def test_rerunning_complete_runs_is_refused_before_a_kernel_and_changes_nothing(
        tmp_path, synthetic_data_dir, monkeypatch):
    import pcam.execute.notebooks as nb

    results = tmp_path / "results"
    for run, model in (("mobilenet-smoke", "mobilenet"), ("resnet50-smoke", "resnet50")):
        folder = make_run(results, run, model)
        (folder / nb.NOTEBOOKS[model].name).write_bytes(os.urandom(824_000))
    monkeypatch.setattr(nb, "_execute", _no_kernel)
    before, tree = _files(tmp_path), _tree(tmp_path)
    for argv in (["train", "--model", "mobilenet", "--preset", "smoke", "--run",
                  "mobilenet-smoke", "--results", str(results), "--data-dir",
                  str(synthetic_data_dir)],
                 ["notebooks", "--preset", "smoke", "--results", str(results), "--data-dir",
                  str(synthetic_data_dir)],
                 ["notebooks", "--preset", "smoke", "--models", "resnet50", "--results",
                  str(results), "--data-dir", str(synthetic_data_dir)]):
        code, _, err = _cli(argv)
        assert code == 2 and "is already complete" in err, (argv, err)
        assert _files(tmp_path) == before and _tree(tmp_path) == tree, argv


@pytest.mark.parametrize("case", ["shared run name", "second run locked",
                                  "second run complete"])
def test_notebooks_refuse_before_the_first_model_trains(case, tmp_path, synthetic_data_dir,
                                                       monkeypatch):
    import pcam.execute.notebooks as nb

    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(nb, "_execute", _no_kernel)
    argv = ["notebooks", "--preset", "smoke", "--results", str(results), "--data-dir",
            str(synthetic_data_dir)]
    sleeper = _sleeper()
    try:
        if case == "shared run name":
            argv += ["-p", "run=X"]
            expected = "run='X' names one run folder for both mobilenet and resnet50"
        elif case == "second run locked":
            _lock_for(results / "resnet50-smoke", sleeper)
            expected = f"run resnet50-smoke is being trained by pid {sleeper.pid} "
        else:
            make_run(results, "resnet50-smoke", "resnet50")
            expected = "run resnet50-smoke is already complete"
        before, tree = _files(tmp_path), _tree(tmp_path)
        code, _, err = _cli(argv)
    finally:
        sleeper.kill()
    assert code == 2 and expected in err, err
    assert _files(tmp_path) == before and _tree(tmp_path) == tree


@pytest.mark.slow
def test_two_pcam_train_commands_started_together(tmp_path, synthetic_data_dir):
    """Real commands, notebook and kernel: one trains to the end, the other is refused."""
    results = tmp_path / "results"
    command = [sys.executable, "-m", "pcam", "train", "--model", "mobilenet", "--preset",
               "smoke", "--run", "r", "--results", str(results), "--data-dir",
               str(synthetic_data_dir), "--weights", "none", "--epochs", "1",
               "--head-epochs", "0"]
    procs = [subprocess.Popen(command, cwd=PROJ_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outcome = [(p.wait(timeout=500), *p.communicate(), p.pid) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert sorted(rc for rc, *_ in outcome) == [0, 2], [o[2][-2000:] for o in outcome]
    winner = next(pid for rc, _, _, pid in outcome if rc == 0)
    refused = next(err for rc, _, err, _ in outcome if rc == 2).strip().splitlines()
    assert len(refused) == 1 and f"is being trained by pid {winner} " in refused[0], refused
    record = json.loads((results / "r" / "record.json").read_text())
    assert record["status"] == "complete"
    assert (results / "r" / MOBILENET_NB).is_file() and not (results / "r" / LOCK).exists()
    assert not list((results / "r").glob(".notebook-*"))


WORKER_KERNEL = """
import sys, tempfile, time
from pathlib import Path
folder = Path(tempfile.mkdtemp(prefix="pcam-worker-r-"))  # what a worker's start_run makes
(folder / "record.json").write_text("{}")
print(folder, flush=True)
"""


@pytest.mark.parametrize("fails", [False, True], ids=["ends", "fails"])
def test_a_non_chief_worker_leaves_no_temporary_folder(fails, tmp_path, monkeypatch):
    import pcam.execute.notebooks as nb

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    made = []

    def kernel(source, target, parameters, log_output):  # a kernel killed before clean-up
        done = subprocess.run([sys.executable, "-c", WORKER_KERNEL], capture_output=True,
                              text=True, check=True)
        made.append(Path(done.stdout.strip()))
        target.write_text("{}")
        if fails:
            raise PCamError(f"bad data (in {nb.terminal_path(target)})")

    monkeypatch.setattr(nb, "_execute", kernel)
    config = TrainConfig.for_model("mobilenet", "smoke", run="r")
    with pytest.raises(PCamError) if fails else contextlib.nullcontext() as raised:
        nb.run_notebook(config, results=tmp_path / "results")
    assert made and made[0].is_relative_to(scratch)  # the kernel's temp folder was in ours
    assert list(scratch.iterdir()) == [] and not (tmp_path / "results").exists()
    if fails:
        assert str(raised.value) == f"bad data (in notebooks/{MOBILENET_NB})"


# -- start_run: the lock before the folder, a refusal restores the record ------------

START = _BARRIER + """
from pcam.run.config import TrainConfig
from pcam.core.errors import PCamError
from pcam.train.session import start_run
config = TrainConfig(model="mobilenet", run="r", data_dir=sys.argv[2], alpha=0.25,
                     weights=None, head_units=(4,), epochs=1, head_epochs=0, batch_size=16,
                     max_samples=32, max_eval_samples=32, augment=(), tta=False,
                     precision="float32")
try:
    run = start_run(config, results=sys.argv[1], verbose=0)
except PCamError as error:
    print(f"error: {error}")
    sys.exit(2)
time.sleep(3)  # "training"
assert (Path(sys.argv[1]) / "r" / "record.json").is_file()
print("trained")
"""


@pytest.mark.slow
def test_two_start_runs_at_once_one_trains_and_keeps_its_folder(tmp_path, synthetic_data_dir):
    results = tmp_path / "results"
    outcome = _together(tmp_path, [["-c", START, str(results), str(synthetic_data_dir)]] * 2)
    assert sorted(rc for rc, _, _ in outcome) == [0, 2], outcome
    winner = next(pid for rc, _, pid in outcome if rc == 0)
    assert f"is being trained by pid {winner} " in next(o for rc, o, _ in outcome if rc)
    assert records.read_record(results / "r")["status"] == "running"


def test_a_refusal_after_the_record_was_read_puts_it_back(tmp_path, synthetic_data_dir,
                                                          monkeypatch):
    """start_run writes the resumed record before the pipelines are built; a setting they
    refuse (or Ctrl-C there) must leave the record as it was, and the lock free."""
    from pcam.train import session

    folder = _interrupted(tmp_path / "results", synthetic_data_dir)
    before, tree = _files(tmp_path), _tree(tmp_path)

    def refuse(self, *args, **kwargs):
        raise PCamError("steps_per_epoch=999 is more than the batches of one pass")

    monkeypatch.setattr(session.TrainingRun, "__init__", refuse)
    with pytest.raises(PCamError, match="steps_per_epoch"):
        session.start_run(_config(synthetic_data_dir), results=folder.parent, verbose=0)
    assert _files(tmp_path) == before and _tree(tmp_path) == tree


# -- demo: never removes what it did not write; defaults from the project root -------

@pytest.fixture
def demo_calls(monkeypatch):
    """run_demo's data writer, notebooks and report, recorded instead of run."""
    calls = {}

    def write_synthetic(folder, **kwargs):
        calls["data"] = Path(folder)

    def run_notebooks(preset, **kwargs):
        calls["notebooks"] = kwargs
        Path(kwargs["results"]).mkdir(parents=True, exist_ok=True)
        return []

    monkeypatch.setattr("pcam.data.synthetic.write_synthetic", write_synthetic)
    monkeypatch.setattr("pcam.execute.notebooks.run_notebooks", run_notebooks)
    monkeypatch.setattr("pcam.report.build.build_report", lambda **kwargs: None)
    return calls


@pytest.mark.parametrize("fresh", [False, True], ids=["rerun", "--fresh"])
def test_demo_never_removes_a_folder_a_live_process_locked(fresh, tmp_path, demo_calls):
    out = tmp_path / "O"
    sleeper = _sleeper()
    try:
        _lock_for(out / "mobilenet-demo", sleeper)
        (out / "mobilenet-demo" / "notes.txt").write_text("mine")
        (out / "resnet50-demo").mkdir()
        (out / "resnet50-demo" / "notes.txt").write_text("mine too")
        before, tree = _files(tmp_path), _tree(tmp_path)
        code, _, err = _cli(["demo", "--out", str(out), "--data-dir", str(tmp_path / "data")]
                            + (["--fresh"] if fresh else []))
    finally:
        sleeper.kill()
    assert code == 2 and f"run mobilenet-demo is being trained by pid {sleeper.pid} " in err
    assert _files(tmp_path) == before and _tree(tmp_path) == tree  # no data written either
    assert not demo_calls


def test_demo_fresh_removes_only_run_folders(tmp_path, demo_calls):
    out = tmp_path / "O"
    (out / "resnet50-demo").mkdir(parents=True)
    (out / "resnet50-demo" / "notes.txt").write_text("not a run")
    make_run(out, "mobilenet-demo")
    before, tree = _files(tmp_path), _tree(tmp_path)
    code, _, err = _cli(["demo", "--out", str(out), "--data-dir", str(tmp_path / "data"),
                         "--fresh"])
    assert code == 2 and "resnet50-demo holds files but no run record" in err, err
    assert _files(tmp_path) == before and _tree(tmp_path) == tree and not demo_calls

    (out / "resnet50-demo" / "notes.txt").unlink()
    make_run(out, "resnet50-demo", "resnet50", tta=False)
    code, out_text, err = _cli(["demo", "--out", str(out), "--data-dir",
                                str(tmp_path / "data"), "--fresh"])
    assert code == 0, err
    assert not (out / "mobilenet-demo").exists() and not (out / "resnet50-demo").exists()
    assert demo_calls["notebooks"]["skip_complete"] is True


def test_demo_rerun_keeps_complete_runs(tmp_path, demo_calls):
    out = tmp_path / "O"
    make_run(out, "mobilenet-demo")
    before = _files(out / "mobilenet-demo")
    code, _, err = _cli(["demo", "--out", str(out), "--data-dir", str(tmp_path / "data")])
    assert code == 0, err
    assert _files(out / "mobilenet-demo") == before
    assert demo_calls["notebooks"]["skip_complete"] is True


def test_demo_defaults_come_from_the_project_root(tmp_path, demo_calls, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr("pcam.app.demo.PROJ_ROOT", project)
    monkeypatch.setenv("PCAM_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.chdir(elsewhere)
    code, _, err = _cli(["demo"])
    assert code == 0, err
    assert demo_calls["data"] == project / "data" / "synthetic"
    assert demo_calls["notebooks"]["results"] == tmp_path / "results" / "demo"
    assert demo_calls["notebooks"]["overrides"]["data_dir"] == str(
        project / "data" / "synthetic")
    assert list(elsewhere.iterdir()) == []


def test_no_command_defaults_to_a_folder_of_the_current_directory():
    """Rule 8 for every command: a folder option defaults to None (resolved from the project
    root or $PCAM_*_DIR in the package), never to a relative path."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, command in commands.items():
        for action in command._actions:
            default = action.default
            if isinstance(default, str) and (os.sep in default or default in (
                    "data", "results", "images", "README.md")):
                pytest.fail(f"{name} {action.option_strings}: default {default!r} is a path "
                            "relative to the current folder")


# -- evaluate ------------------------------------------------------------------------

def test_evaluate_a_folder_without_a_record_never_falls_back_to_results(tmp_path,
                                                                        monkeypatch):
    results = tmp_path / "results"
    make_run(results, "base")
    other = tmp_path / "OTHER" / "base"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("not a run")
    monkeypatch.setenv("PCAM_RESULTS_DIR", str(results))
    before, tree = _files(tmp_path), _tree(tmp_path)
    code, _, err = _cli(["evaluate", "--run", str(other)])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"no run record at {other / 'record.json'}" in err and str(results) not in err.split(
        ";")[0], err
    assert _files(tmp_path) == before and _tree(tmp_path) == tree  # no lock dropped there


def test_run_path_takes_a_path_as_a_path(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "results" / "x").mkdir(parents=True)
    monkeypatch.setattr("pcam.core.paths.PROJ_ROOT", project)
    monkeypatch.setenv("PCAM_RESULTS_DIR", str(tmp_path / "res"))
    monkeypatch.chdir(tmp_path)
    assert records.run_path("results/x") == project / "results" / "x"  # from the root
    assert records.run_path("x") == tmp_path / "res" / "x"  # a name: the results folder
    assert records.run_path("OTHER/x") == Path("OTHER/x")  # never results/x
    (tmp_path / "OTHER" / "x").mkdir(parents=True)
    assert records.run_path(tmp_path / "OTHER" / "x") == tmp_path / "OTHER" / "x"


@pytest.mark.slow
def test_evaluate_without_tta_keeps_what_it_does_not_score_again(tmp_path, synthetic_data_dir):
    """`evaluate --split valid --no-tta` once dropped the TTA threshold and valid's TTA
    scores and re-scored test's TTA at the single-pass threshold."""
    import keras
    import numpy as np

    from pcam.evaluation.evaluate import evaluate_run
    from pcam.models import build_model

    folder = _interrupted(tmp_path / "results", synthetic_data_dir)
    keras.utils.set_random_seed(0)
    model = build_model("mobilenet", alpha=0.25, weights=None, head_units=(4,), dropout=0.0)
    model.save(folder / "checkpoints" / "best.keras")
    own = synthetic_data_dir
    full = evaluate_run(folder, data_dir=own, splits=("valid", "test"), tta=True)
    assert "tta_value" in full["threshold"] and "tta" in full["metrics"]["valid"]
    for splits in (("valid",), ("test",), ("valid", "test")):
        again = evaluate_run(folder, data_dir=own, splits=splits, tta=False)
        assert again["threshold"] == full["threshold"], splits
        for split in ("valid", "test"):
            assert again["metrics"][split]["tta"] == full["metrics"][split]["tta"], splits
            assert again["metrics"][split]["single"] == full["metrics"][split]["single"]
            assert "tta_seconds" in again["metrics"][split]["inference"]
        with np.load(folder / "predictions" / "valid.npz") as saved:
            assert "y_prob_tta" in saved.files

    # Saved predictions of another checkpoint: TTA cannot be kept; refused, nothing changed.
    with np.load(folder / "predictions" / "valid.npz") as saved:
        arrays = {k: saved[k] for k in saved.files}
    arrays["y_prob"] = np.clip(arrays["y_prob"] + 0.2, 0, 1)
    np.savez(folder / "predictions" / "valid.npz", **arrays)
    before, tree = _files(tmp_path), _tree(tmp_path)
    with pytest.raises(PCamError, match=r"valid\.npz does not hold this checkpoint's "
                       r"predictions .*drop --no-tta"):
        evaluate_run(folder, data_dir=own, splits=("valid", "test"), tta=False)
    assert _files(tmp_path) == before and _tree(tmp_path) == tree


def test_study_refuses_an_arm_being_trained_before_measuring_anything(
        tmp_path, synthetic_data_dir, monkeypatch):
    from pcam.study import experiments as study

    monkeypatch.setattr(study, "measure_costs", _no_kernel)
    sleeper = _sleeper()
    try:
        _lock_for(tmp_path / "study" / "baseline-seed1", sleeper)
        before, tree = _files(tmp_path), _tree(tmp_path)
        with pytest.raises(PCamError, match=f"baseline-seed1 is being trained by pid "
                           f"{sleeper.pid} "):
            study.run_study(["baseline", "baseline-seed1"], data_dir=synthetic_data_dir,
                            results=tmp_path, budget_minutes=0.4,
                            overrides={"alpha": 0.25, "weights": "none"})
    finally:
        sleeper.kill()
    assert _files(tmp_path) == before and _tree(tmp_path) == tree  # no plan.json either


def test_a_fifo_given_as_the_data_folder_is_called_a_fifo(tmp_path):
    import os

    from pcam.core.errors import PCamError
    from pcam.core.paths import data_dir

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(PCamError, match="pipe is a FIFO, not a folder"):
        data_dir(fifo)
    with pytest.raises(PCamError, match="pipe is a FIFO, not a folder"):
        data_dir(fifo / "sub")


def test_demo_rerun_with_other_settings_refuses_to_keep_the_old_run(tmp_path):
    """A kept complete run stands for the one asked for only with the same settings."""
    from fake_runs import make_run

    from pcam.core.errors import PCamError
    from pcam.execute.notebooks import run_notebook
    from pcam.run.config import TrainConfig

    config = TrainConfig.for_model("resnet50", run="resnet50-demo", epochs=5, batch_size=32,
                                   augment=("dihedral", "shift"), seed=0, precision="float32")
    make_run(tmp_path, "resnet50-demo", "resnet50", published=False)
    before = (tmp_path / "resnet50-demo" / "record.json").read_bytes()
    with pytest.raises(PCamError, match=r"run resnet50-demo is complete with other settings "
                                        r"\(.*learning_rate"):
        run_notebook(config.replace(learning_rate=0.01), results=tmp_path, skip_complete=True)
    assert (tmp_path / "resnet50-demo" / "record.json").read_bytes() == before


def test_data_rewritten_while_a_run_trains_is_not_scored(tmp_path):
    """Another command replaced the data under a training run: scoring refuses instead
    of writing metrics on other patches than the record names."""
    from pcam.core.errors import PCamError
    from pcam.data.synthetic import write_synthetic
    from pcam.evaluation.evaluate import evaluate_after_training
    from pcam.run.config import TrainConfig
    from pcam.run.runlock import release_lock
    from pcam.train.session import set_seed_and_precision, start_run

    data = tmp_path / "data"
    write_synthetic(data, sizes={"train": 64, "valid": 32, "test": 32}, seed=1)
    config = TrainConfig.for_model("mobilenet", run="r", data_dir=str(data), weights=None,
                                   alpha=0.25, batch_size=16, precision="float32")
    set_seed_and_precision(config)
    run = start_run(config, results=tmp_path / "results")
    release_lock(run.lock)
    write_synthetic(data, sizes={"train": 64, "valid": 32, "test": 32}, seed=2, overwrite=True)
    with pytest.raises(PCamError, match="the data of run r changed while it trained .*restore "
                                        "the data, then run `python -m pcam evaluate --run r`"):
        evaluate_after_training(run.folder, run.record, run.splits)
    assert not (run.folder / "predictions").exists()


def test_a_relative_pcam_data_dir_means_the_folder_under_the_current_one(
        tmp_path, monkeypatch, synthetic_data_dir):
    """The kernel runs in the project root; the data folder a user named relative to
    where they are must reach it as that folder, not as one under the project."""
    import shutil

    from pcam.execute.notebooks import run_notebook
    from pcam.run.config import TrainConfig

    shutil.copytree(synthetic_data_dir, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PCAM_DATA_DIR", "data")
    seen = {}

    def fake_execute(source, target, parameters, log_output):
        seen.update(parameters)
        raise RuntimeError("stop before a kernel")

    monkeypatch.setattr("pcam.execute.notebooks._execute", fake_execute)
    config = TrainConfig.for_model("resnet50", "smoke", run="rel")
    with pytest.raises(RuntimeError, match="stop before a kernel"):
        run_notebook(config, results=tmp_path / "results")
    from pcam.core.paths import PROJ_ROOT

    assert (PROJ_ROOT / seen["DATA_DIR"]).resolve() == (tmp_path / "data").resolve()


def test_a_cap_that_leaves_one_class_is_refused_before_a_kernel(tmp_path, monkeypatch,
                                                                   synthetic_data_dir):
    from pcam.core.errors import PCamError
    from pcam.execute.notebooks import run_notebook
    from pcam.run.config import TrainConfig

    def no_kernel(*args):
        raise AssertionError("a kernel started")

    monkeypatch.setattr("pcam.execute.notebooks._execute", no_kernel)
    config = TrainConfig.for_model("resnet50", "smoke", run="one", max_samples=1,
                                   data_dir=str(synthetic_data_dir))
    with pytest.raises(PCamError, match="max_samples=1"):
        run_notebook(config, results=tmp_path)
    assert not (tmp_path / "one").exists()


@pytest.mark.parametrize("option", ["--out", "--data-dir"])
def test_demo_given_a_file_for_a_folder_writes_nothing(tmp_path, option):
    from pcam.app.cli import main

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    other = "--data-dir" if option == "--out" else "--out"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["demo", option, str(blocker), other, str(tmp_path / "elsewhere")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before
