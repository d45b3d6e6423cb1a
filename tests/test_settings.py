"""Every setting is checked where it is parsed, before a kernel starts (issue 21, rule 7).

Settings are generated over types and ranges (hypothesis): each `TrainConfig`
field, each `-p NAME=VALUE`, each command-line option, `--plan-minutes`,
`TF_CONFIG`, `MPLBACKEND` and `plan.json`. Every value is either accepted and
valid for the libraries (Keras, TensorFlow, numpy, the record schema) or
refused with one `PCamError` line naming it; never a traceback. No kernel
starts and nothing trains here.
"""

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pcam.app import cli
from pcam.core import mplbackend
from pcam.core.errors import PCamError, user_message
from pcam.core.paths import PROJ_ROOT
from pcam.execute import notebooks
from pcam.run.config import AUGMENTATIONS, TrainConfig, field_names
from pcam.run.settings import (
    FLOAT32_MAX,
    FLOAT32_TINY,
    MAX_COUNT,
    MAX_HEAD_UNITS,
    MAX_SEED,
    MOBILENET_ALPHAS,
    MODELS,
    check_setting,
)

# Fast and repeatable: no example database, no deadline (a first call may import a library).
FAST = dict(deadline=None, database=None, derandomize=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def examples(n: int) -> int:
    """`n` examples under the "full" Hypothesis profile (`make test`), a tenth under
    "quick" (`make test-fast`); the profiles are registered in conftest.py."""
    return max(10, n * settings.default.max_examples // 100)


# Values at and just beyond every limit, beside arbitrary ones of every type.
EDGE_INTS = (0, 1, -1, 2, 31, 32, 512, 513, MAX_HEAD_UNITS, MAX_HEAD_UNITS + 1, MAX_COUNT,
             MAX_COUNT + 1, MAX_SEED, MAX_SEED + 1, 2**63, 10**20, -(2**63))
EDGE_FLOATS = (0.0, -0.0, 0.25, 0.5, 0.75, 1.0, 0.99, 1e-3, 1e-39, FLOAT32_TINY, FLOAT32_MAX,
               3.5e38, 1e308, -1.0, math.inf, -math.inf, math.nan)
WORDS = ("none", "None", "", "imagenet", "cosine", "auto", "float32", "mobilenet", "resnet50",
         "true", "no", *AUGMENTATIONS, "rotate", "a/b", "\0", "r")
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(EDGE_INTS),
    st.floats(), st.sampled_from(EDGE_FLOATS), st.text(max_size=12), st.sampled_from(WORDS))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.tuples(inner) | st.dictionaries(st.text(max_size=3), inner,
                                                           max_size=2), max_leaves=6)
# Text as a shell user types it: numbers, words, Python literals, anything.
TEXTS = st.one_of(
    st.text(max_size=12), VALUES.map(repr), VALUES.map(str), st.integers().map(str),
    st.floats().map(str), st.sampled_from(EDGE_INTS).map(str), st.sampled_from(WORDS),
    st.sampled_from(("1e20", "[128, 64]", "128,64", "()", "[]", "dihedral,shift", " 5 ", "+3",
                     "3.0", "0x10", "1_000", "'data'", '"none"', "yes", "OFF", "inf", "nan")))


def _names(error: PCamError, name: str, value=None) -> bool:
    """Whether a refusal is one line that names the setting (or, for a model, the value)."""
    text = str(error)
    return "\n" not in text and (f"{name}=" in text or f"'{name}'" in text or (
        name == "model" and isinstance(value, str) and value and value in text))


_SCHEMA = None


def _valid_for_the_libraries(config: TrainConfig) -> None:
    """What Keras, TensorFlow, numpy and the record schema accept, checked on `config`."""
    global _SCHEMA
    import jsonschema

    if _SCHEMA is None:
        schema = json.loads((PROJ_ROOT / "pcam" / "core" / "record.schema.json").read_text())
        _SCHEMA = jsonschema.Draft202012Validator({"$ref": "#/$defs/config",
                                                   "$defs": schema["$defs"]})
    values = config.to_dict()
    values.update(run=values["run"] or "r", data_dir=values["data_dir"] or "data")
    _SCHEMA.validate(values)  # the record takes it
    json.dumps(values, allow_nan=False)
    np.random.RandomState(config.seed)  # keras.utils.set_random_seed seeds numpy this way
    for name in ("epochs", "head_epochs", "batch_size", "max_samples", "max_eval_samples",
                 "steps_per_epoch", "finetune_layers", "warmup_epochs", "patience"):
        value = getattr(config, name)
        assert value is None or type(value) is int and 0 <= value <= MAX_COUNT, name
    assert config.epochs * MAX_COUNT < 2**63  # epochs x steps: TF's int64 step counter
    for name in ("learning_rate", "finetune_learning_rate"):
        rate = np.float32(getattr(config, name))  # Keras holds it in float32
        assert np.isfinite(rate) and rate >= np.finfo(np.float32).tiny, name
    assert config.alpha in MOBILENET_ALPHAS and 0 <= config.dropout < 1
    assert 0 < config.bn_momentum < 1 and 32 <= config.image_size <= 512
    assert all(type(u) is int and 1 <= u <= MAX_HEAD_UNITS for u in config.head_units)
    assert len(set(config.augment)) == len(config.augment)
    assert all(type(getattr(config, f)) is bool for f in ("tta", "deterministic", "published"))
    for name in ("data_dir", "weights"):
        value = getattr(config, name)
        assert value is None or isinstance(value, str) and value and "\0" not in value


def test_every_field_has_a_check_and_a_parser():
    from pcam.run.config import BACKBONE_DEFAULTS
    from pcam.run.settings import _KINDS

    assert list(_KINDS) and set(_KINDS) == set(field_names())
    assert tuple(BACKBONE_DEFAULTS) == MODELS
    for name in field_names():
        default = getattr(TrainConfig(), name)
        assert check_setting(name, default) == default


@settings(max_examples=examples(1500), **FAST)
@given(name=st.sampled_from(field_names()), value=VALUES, model=st.sampled_from(MODELS))
def test_any_value_of_any_setting_is_valid_or_refused_naming_it(name, value, model):
    base = TrainConfig.for_model(model).to_dict()
    try:
        config = TrainConfig(**{**base, name: value})
    except PCamError as error:
        assert _names(error, name, value), (name, value, str(error))
        return
    _valid_for_the_libraries(config)


@settings(max_examples=examples(1000), **FAST)
@given(name=st.sampled_from(field_names()), value=VALUES,
       model=st.one_of(st.sampled_from(MODELS), SCALARS),
       preset=st.one_of(st.sampled_from((None, "smoke", "demo", "subset", "full")), SCALARS))
def test_for_model_checks_overrides_like_the_fields(name, value, model, preset):
    try:
        config = TrainConfig.for_model(model, preset, **{name: value})
    except PCamError as error:
        text = str(error)
        assert "\n" not in text and (_names(error, name, value) or "leave these out" in text
                                     or text.startswith(("unknown model", "unknown preset"))
                                     ), (name, value, text)
        return
    assert model in MODELS
    _valid_for_the_libraries(config)


@settings(max_examples=examples(1500), **FAST)
@given(name=st.sampled_from([*field_names(), "results_dir", "EPOCHS", "compare_with"]),
       text=TEXTS)
def test_any_p_value_is_read_by_its_type_or_refused_naming_it(name, text):
    try:
        values = notebooks.parse_parameters([(name, text)])
    except PCamError as error:
        assert _names(error, name.lower()) or f"-p {name}=" in str(error), (name, text, error)
        return
    if name == "results_dir":
        return
    for model in MODELS:  # as run_notebooks applies them, before any kernel
        try:
            config = TrainConfig.for_model(model, "smoke",
                                           **notebooks._applicable(model, values))
        except PCamError as error:  # one setting against another (head_epochs > epochs)
            assert "\n" not in str(error) and "=" in str(error), (name, text, error)
            continue
        _valid_for_the_libraries(config)


_TRAIN_OPTIONS = [a for a in cli.build_parser()._subparsers._group_actions[0].choices[
    "train"]._actions if a.option_strings and a.dest not in (
    "help", "model", "preset", "results", "log_output")]


def _main(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as stop:  # argparse: usage and one "error: argument ..." line
            code = stop.code
    return code, err.getvalue()


@pytest.fixture
def no_kernel(monkeypatch):
    """`pcam train` and `pcam notebooks` up to the kernel: the configs they would run."""
    import pcam.data.check
    import pcam.data.h5read

    started = []
    monkeypatch.setattr(pcam.data.check, "check_data_dir", lambda *a, **k: [])
    monkeypatch.setattr(pcam.data.h5read, "open_split", lambda *a, **k: None)
    monkeypatch.setattr(notebooks, "run_notebook",
                        lambda config, **kwargs: started.append(config) or None)
    return started


@settings(max_examples=examples(600), **FAST)
@given(option=st.sampled_from(_TRAIN_OPTIONS), text=TEXTS, model=st.sampled_from(MODELS))
def test_any_train_option_is_valid_or_refused_naming_it(option, text, model, no_kernel,
                                                       tmp_path):
    flag = option.option_strings[0]
    argv = ["train", "--model", model, "--run", "r", "--results", str(tmp_path / "results"),
            "--data-dir", str(tmp_path / "data"), flag, *([text] if option.nargs != 0 else [])]
    if option.dest == "run":
        argv = argv[:3] + argv[5:]
    elif option.dest == "data_dir":
        argv = argv[:7] + argv[9:]
    no_kernel.clear()
    code, err = _main(argv)
    if code == 0:
        assert len(no_kernel) == 1
        _valid_for_the_libraries(no_kernel[0])
        return
    assert code == 2 and not no_kernel, err
    last = err.strip().splitlines()[-1]
    assert (last.startswith("error: ") and option.dest in last) or f"argument {flag}" in last, err
    assert not (tmp_path / "results").exists()  # a refusal changes nothing on disk


PATH_OPTIONS = [("check", "--data-dir"), ("report", "--results"), ("report", "--readme"),
                ("evaluate", "--run"), ("evaluate", "--data-dir"), ("study", "--weights-dir"),
                ("demo", "--out"), ("import-images", None), ("notebooks", "--results")]


@settings(max_examples=examples(600), **FAST)
@given(command=st.sampled_from([
    ("synthetic", "--train"), ("synthetic", "--seed"), ("import-images", "--holdout"),
    ("import-images", "--test-from-valid"), ("import-images", "--seed"),
    ("study", "--plan-minutes"), *PATH_OPTIONS]), text=TEXTS)
def test_other_options_parse_to_library_ranges_or_refuse(command, text):
    name, flag = command
    argv = [name, *(["src"] if name == "import-images" and flag else []),
            *(["--run", "r"] if name == "evaluate" and flag != "--run" else []),
            *([flag] if flag else []), text]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = cli.build_parser().parse_args(argv)
        except SystemExit as stop:
            last = err.getvalue().splitlines()[-1]
            named = f"argument {flag}" in last if flag else "src" in last  # a positional
            assert stop.code == 2 and named, err.getvalue()
            return
    value = getattr(args, (flag or "src").removeprefix("--").replace("-", "_"))
    if flag == "--plan-minutes":
        assert type(value) is float and math.isfinite(value) and value > 0
    elif flag == "--seed":
        assert type(value) is int and 0 <= value <= MAX_SEED
        np.random.RandomState(value)
    elif (name, flag) in PATH_OPTIONS:
        assert value == text and value.strip()
    else:
        assert type(value) is int and 0 <= value <= MAX_COUNT


# The cases reported in issue 21, each at the mechanism that now refuses or reads it.

@pytest.mark.parametrize(("name", "text", "outcome"), [
    ("head_units", "5", (5,)),  # read as the CLI's --head-units 5: one layer of 5
    ("HEAD_UNITS", "[256, 64]", (256, 64)),
    ("augment", "5", r"augment='5': '5' is none of dihedral, shift, hed, brightness_contrast"),
    ("augment", "none", ()),
    ("bn_momentum", "abc", r"bn_momentum='abc': use a number"),
    ("bn_momentum", "1", r"bn_momentum=1.0: use a value in \(0, 1\)"),
    ("model", "resnet50", r"-p model='resnet50': the notebooks are chosen with --models"),
    ("seed", "4294967296", r"seed=4294967296: use a whole number from 0 to 4294967295"),
    ("seed", "4294967295", 4294967295),
    ("epochs", "1e20", r"epochs='1e20': use a whole number from 1 to 2147483647"),
    ("epochs", "100000000000000000000", r"epochs=100000000000000000000: use a whole number"),
    ("data_dir", "123", "123"),  # a folder named 123, never the number
    ("published", "false", False), ("tta", "no", False), ("tta", "YES", True),
    ("published", "maybe", r"published='maybe': use true or false"),
    ("learning_rate", "1e39", r"learning_rate=1e\+39: use a positive number from 1.2e-38"),
    ("alpha", "0.3", r"alpha=0.3: use 0.25, 0.5, 0.75 or 1.0"),
    ("weights", "'none'", None), ("run", "../x", r"run='../x': a run name is"),
    ("compare_with", "x", r"unknown setting 'compare_with'"),
])
def test_reported_p_values(name, text, outcome):
    if isinstance(outcome, str) and (" " in outcome or "\\" in outcome):
        with pytest.raises(PCamError, match=outcome):
            notebooks.parse_parameters([(name, text)])
    else:
        assert notebooks.parse_parameters([(name, text)]) == {name.lower(): outcome}


def test_p_values_are_refused_or_applied_before_any_kernel(no_kernel, tmp_path):
    results = str(tmp_path / "results")
    for bad in ("bn_momentum=abc", "augment=5", "model=resnet50", "published=maybe",
                "seed=4294967296", "epochs=1e20", "head_units=0"):
        code, err = _main(["notebooks", "--preset", "smoke", "--results", results, "-p", bad])
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (bad, err)
        assert bad.split("=")[0] in err and not no_kernel
    code, err = _main(["notebooks", "--preset", "smoke", "--results", results, "-p",
                       "published=false", "-p", "TTA=no", "-p", "head_units=5"])
    assert code == 0, err
    assert [(c.published, c.tta, c.head_units) for c in no_kernel] == [(False, False, (5,))] * 2
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--model", "mobilenet", "--seed", "4294967296"],
     r"^error: seed=4294967296: use a whole number from 0 to 4294967295 \(numpy's seed range\)"),
    (["train", "--model", "mobilenet", "--epochs", "100000000000000000000"],
     r"^error: epochs=100000000000000000000: use a whole number from 1 to 2147483647"),
    (["train", "--model", "mobilenet", "--epochs", "1e20"],
     r"argument --epochs: epochs='1e20': use a whole number from 1 to 2147483647"),
    (["train", "--model", "resnet50", "--bn-momentum", "abc"],
     r"argument --bn-momentum: bn_momentum='abc': use a number"),
    (["train", "--model", "mobilenet", "--learning-rate", "inf"],
     r"^error: learning_rate=inf: use a finite number"),
    (["train", "--model", "mobilenet", "--head-units", "9000"],
     r"^error: head_units=\(9000,\): every size must be a whole number from 1 to 8192"),
    (["study", "baseline", "--plan-minutes", "inf"],
     r"argument --plan-minutes: 'inf': use a positive finite number of minutes"),
    (["study", "baseline", "--plan-minutes", "nan"], r"argument --plan-minutes: 'nan'"),
    (["study", "baseline", "--plan-minutes", "0"], r"argument --plan-minutes: '0'"),
    (["synthetic", "--seed", "4294967296"],
     r"argument --seed: '4294967296': use a whole number from 0 to 4294967295"),
    (["synthetic", "--train", "abc"], r"argument --train: 'abc': use a whole number from 0"),
    (["notebooks", "--models", "vgg"], r"argument --models: invalid choice: 'vgg'"),
])
def test_reported_command_line_options(argv, message, no_kernel, tmp_path):
    code, err = _main([*argv, *(["--results", str(tmp_path)] if argv[0] == "train" else [])])
    assert code == 2 and not no_kernel
    assert any(re.search(message, line) for line in err.splitlines()), err


@pytest.mark.parametrize("minutes", [math.inf, -math.inf, math.nan, 0, -1, True, "5", None])
def test_plan_longer_refuses_minutes_that_are_no_budget(minutes, tmp_path):
    from pcam.study import experiments as study

    with pytest.raises(PCamError, match=r"^--plan-minutes .*: use a positive finite number"):
        study.plan_longer(["baseline"], minutes, results=tmp_path)


# TF_CONFIG: what TensorFlow's own cluster check accepts, or one line naming TF_CONFIG.

def _setenv(monkeypatch, name: str, value: str) -> None:
    try:
        monkeypatch.setenv(name, value)
    except (ValueError, UnicodeEncodeError):  # no environment can hold it (a NUL, a surrogate)
        assume(False)


JOBS = st.sampled_from(("chief", "worker", "ps", "evaluator", "x", ""))
ADDRESSES = st.lists(st.one_of(st.just("host:2222"), st.sampled_from(("", " ", 5, None))),
                     max_size=3)
INDEXES = st.one_of(st.integers(-2, 4), st.sampled_from(("0", "1", " 1", "a", 1.0, True, None)))
TF_CONFIGS = st.one_of(
    st.fixed_dictionaries(
        {"cluster": st.dictionaries(JOBS, ADDRESSES, max_size=3)},
        optional={"task": st.one_of(st.fixed_dictionaries({}, optional={
            "type": st.one_of(JOBS, VALUES), "index": st.one_of(INDEXES, VALUES)}),
            VALUES)}).map(json.dumps),
    VALUES.map(lambda v: json.dumps(v, default=str)), st.text(max_size=20))


@settings(max_examples=examples(500), **FAST)
@given(text=TF_CONFIGS)
def test_any_tf_config_is_one_tensorflow_accepts_or_refused(text, monkeypatch):
    from tensorflow.python.distribute import multi_worker_util

    from pcam.train import distribute

    _setenv(monkeypatch, "TF_CONFIG", text)
    try:
        value = distribute.tf_config()
    except PCamError as error:
        assert str(error).startswith("TF_CONFIG") and "\n" not in str(error), str(error)
        return
    if value is None:
        assert not text.strip()
        return
    task = value["task"]
    multi_worker_util._validate_cluster_spec(value["cluster"], task["type"], task["index"])
    assert set(value["cluster"]) <= {"chief", "worker"}
    assert distribute.is_chief() in (True, False)


def test_tf_config_task_index_beyond_its_cluster(monkeypatch):
    from pcam.train import distribute

    cluster = {"worker": ["a:1", "b:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 2}}))
    with pytest.raises(PCamError, match=r'^TF_CONFIG: task index 2 is beyond the 2 "worker" '
                                        r"task\(s\) of the cluster; use 0 to 1$"):
        distribute.tf_config()
    with pytest.raises(PCamError, match="TF_CONFIG: task index"):
        notebooks._is_chief()  # run_notebook asks this before any kernel starts


# MPLBACKEND: matplotlib's own check, before any command runs.

@settings(max_examples=examples(300), **FAST)
@given(name=st.one_of(st.text(max_size=12), st.sampled_from((
    "agg", "Agg", "svg", "pdf", "nosuch", " agg", "module://nosuch", "inline", "tkagg",
    "module://matplotlib_inline.backend_inline", "webagg", "template"))))
def test_any_mplbackend_is_one_matplotlib_takes_or_refused(name, monkeypatch):
    from matplotlib import rcsetup

    _setenv(monkeypatch, "MPLBACKEND", name)  # matplotlib is imported: the name is checked
    try:
        rcsetup.validate_backend(name)
        valid = True
    except ValueError:
        valid = False
    try:
        mplbackend.check_mplbackend()
    except PCamError as error:
        assert not valid and str(error).startswith(f"MPLBACKEND={name!r} is not a matplotlib")
        return
    assert valid or not name


@pytest.mark.parametrize(("name", "refused"), [
    ("nosuch", "is not a matplotlib backend"), (" agg", "is not a matplotlib backend"),
    ("module://nosuch", "can write a PNG here"), ("tkagg", None), ("agg", None)])
def test_mplbackend_is_checked_before_matplotlib_fails(name, refused, tmp_path):
    env = {**os.environ, "MPLBACKEND": name}
    done = subprocess.run([sys.executable, "-m", "pcam", "check", "--quick", "--data-dir",
                           str(tmp_path / "none")], capture_output=True, text=True, env=env,
                          cwd=PROJ_ROOT, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    if refused:
        assert line.startswith(f"error: MPLBACKEND={name!r}") and refused in line, line
    else:
        assert line.startswith("error: no PCam files in"), line  # past the check


# The error a notebook raised is the one reported, never text from its traceback.

def _kernel_fails(monkeypatch, ename: str, evalue: str, traceback: list[str]):
    import papermill

    def execute(*args, **kwargs):
        raise papermill.PapermillExecutionError(0, 1, "", ename, evalue, traceback)

    monkeypatch.setattr(papermill, "execute_notebook", execute)


DOCSTRING = ["    Raises:", "        PCamError: the folder holds no PCam file at all."]


@settings(max_examples=examples(300), **FAST)
@given(ename=st.sampled_from(("PCamError", "TypeError", "UnknownError", "ValueError")),
       evalue=st.one_of(st.text(max_size=30), st.text(max_size=20).map(
           lambda t: f"wrapped: PCamError: {t}")),
       lines=st.lists(st.one_of(st.text(max_size=30), st.sampled_from(DOCSTRING)),
                      max_size=4))
def test_the_raised_exception_is_reported(ename, evalue, lines, monkeypatch, tmp_path):
    import papermill

    from pcam.core.errors import wrapped_message

    _kernel_fails(monkeypatch, ename, evalue, [*lines, *DOCSTRING])
    target = tmp_path / "nb.ipynb"
    try:
        notebooks._execute(PROJ_ROOT / "notebooks" / "01_mobilenet_transfer.ipynb", target, {},
                           False)
    except PCamError as error:
        own = evalue if ename == "PCamError" else wrapped_message(evalue)
        assert own and str(error).startswith(own.strip() if ename != "PCamError" else own)
        assert "holds no PCam file" not in str(error) or "holds no PCam file" in evalue
    except papermill.PapermillExecutionError as error:
        assert not (evalue if ename == "PCamError" else wrapped_message(evalue))
        shown = user_message(error)  # the command line prints this, or the traceback
        assert shown == wrapped_message(evalue)
        assert shown is None or "holds no PCam file" not in shown or "holds no PCam" in evalue


def test_data_dir_123_reports_the_raised_error(monkeypatch, tmp_path):
    import papermill

    raised = "no PCam files in 123; run `python -m pcam download --data-dir 123`"
    _kernel_fails(monkeypatch, "PCamError", raised, DOCSTRING)
    with pytest.raises(PCamError) as caught:
        notebooks._execute(PROJ_ROOT / "notebooks" / "01_mobilenet_transfer.ipynb",
                           tmp_path / "nb.ipynb", {"DATA_DIR": "123"}, False)
    assert str(caught.value).startswith(raised)
    _kernel_fails(monkeypatch, "TypeError", "expected str, not int", DOCSTRING)
    with pytest.raises(papermill.PapermillExecutionError) as caught:
        notebooks._execute(PROJ_ROOT / "notebooks" / "01_mobilenet_transfer.ipynb",
                           tmp_path / "nb.ipynb", {}, False)
    assert "holds no PCam file" in str(caught.value)  # the traceback text says so ...
    assert user_message(caught.value) is None  # ... but a TypeError is a bug: a traceback


# plan.json: every malformed plan is one line naming the file, never a traceback.

@pytest.fixture(scope="module")
def plan_data(tmp_path_factory):
    from pcam.data.synthetic import write_synthetic
    from pcam.study import budget
    from pcam.study import experiments as study

    folder = tmp_path_factory.mktemp("plan-data")
    write_synthetic(folder, sizes={"train": 320, "valid": 64, "test": 64}, seed=0)
    config = study.arm_config("scratch-baseline", data_dir=folder)
    plan = {"hardware": {}, "arms": {"scratch-baseline": {
        "what": "", "budget_minutes": 10.0, "cost_key": budget.cost_key(config),
        "costs": {"scratch": 0.01, "score": 0.01, "epoch": 0.5},
        "settings": {"epochs": 3, "head_epochs": 0}}}}
    return folder, plan


def _mutated(plan: dict, data) -> object:
    """`plan` with one part deleted or replaced by any JSON value, or no JSON at all."""
    kind = data.draw(st.sampled_from(("delete", "replace", "replace", "add", "text")))
    if kind == "text":
        return data.draw(st.one_of(st.text(max_size=20), st.sampled_from(("{", "{}", "[]",
                                                                          "null", "1"))))
    plan = json.loads(json.dumps(plan))
    arm = plan["arms"]["scratch-baseline"]
    holders = [plan, plan["arms"], arm, arm["cost_key"], arm["costs"], arm["settings"]]
    holder = data.draw(st.sampled_from(holders))
    key = data.draw(st.sampled_from(sorted(holder) or ["x"]))
    if kind == "delete":
        holder.pop(key, None)
    elif kind == "add":  # never data_dir: a random folder could be a real one
        holder[data.draw(st.text(max_size=8).filter(lambda k: k != "data_dir"))] = data.draw(
            VALUES.filter(lambda v: not isinstance(v, tuple)))
    else:
        holder[key] = data.draw(VALUES.filter(lambda v: not isinstance(v, tuple)))
    return plan


@settings(max_examples=examples(200), **FAST)
@given(data=st.data())
def test_any_plan_json_plans_or_is_refused_in_one_line(data, plan_data, tmp_path):
    from pcam.study import experiments as study

    folder, plan = plan_data
    content = _mutated(plan, data)
    (tmp_path / "study").mkdir(exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content, default=str)
    (tmp_path / "study" / "plan.json").write_text(text)
    minutes = data.draw(st.one_of(st.sampled_from((1, 0.5, 30.0)), st.floats(), st.integers()))
    try:
        planned = study.plan_longer(["scratch-baseline"], minutes, data_dir=folder,
                                    results=tmp_path)
    except PCamError as error:
        assert "\n" not in str(error), str(error)
        return
    planned = planned["scratch-baseline"]
    assert type(planned["epochs"]) is int and planned["epochs"] >= 1
    assert planned["steps_per_epoch"] is None or planned["steps_per_epoch"] >= 10
    assert math.isfinite(planned["planned_minutes"]) and planned["planned_minutes"] >= 0


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"^cannot read .*plan\.json \(.*\); restore it from git or move it away"),
    ("{}", r"^.*plan\.json is not a plan \(no 'arms' object\); restore it"),
    (json.dumps({"arms": {"scratch-baseline": {"costs": {"score": 1}, "settings": {}}}}),
     r"^.*plan\.json: arm 'scratch-baseline' has no 'cost_key' object"),
    (json.dumps({"arms": {"scratch-baseline": {"cost_key": {}, "costs": {"score": -1},
                                               "settings": {}}}}),
     r"arm 'scratch-baseline' has no 'costs' object of seconds >= 0"),
    (json.dumps({"arms": {"scratch-baseline": {"cost_key": {}, "costs": {"score": 1},
                                               "settings": {"epochs": "x"}}}}),
     r"arm 'scratch-baseline' has a bad setting: epochs='x'"),
    (json.dumps({"arms": {"scratch-baseline": {"cost_key": {"model": "resnet50", "alpha": 2},
                                               "costs": {"score": 1}, "settings": {}}}}),
     r"arm 'scratch-baseline' has a bad 'cost_key' \(alpha=2: use 0.25"),
])
def test_reported_plan_files(content, message, tmp_path):
    from pcam.study import experiments as study

    (tmp_path / "study").mkdir()
    # An arm no experiment defines: its config is built from its cost_key, no data is read.
    (tmp_path / "study" / "plan.json").write_text(content.replace("scratch-baseline", "old"))
    with pytest.raises(PCamError, match=message.replace("scratch-baseline", "old")):
        study.plan_longer(["old"], 10, results=tmp_path)


def test_the_limits_are_the_libraries():
    """Each limit is where a library stops accepting: at it, fine; one beyond, refused."""
    import keras
    import tensorflow as tf

    from pcam.models import BACKBONES

    assert BACKBONES["mobilenet"].alphas == MOBILENET_ALPHAS
    np.random.RandomState(MAX_SEED)
    with pytest.raises(ValueError):
        np.random.RandomState(MAX_SEED + 1)
    with pytest.raises(PCamError, match="seed=4294967296"):
        TrainConfig(seed=MAX_SEED + 1)
    steps = MAX_COUNT * MAX_COUNT  # epochs x steps at their largest: the cosine schedule's
    rate = keras.optimizers.schedules.CosineDecay(1e-5, steps, warmup_target=1e-3,
                                                  warmup_steps=steps)(1)
    assert np.isfinite(float(rate))
    tf.data.Dataset.range(3).take(MAX_COUNT).batch(MAX_COUNT)
    with pytest.raises(ValueError):
        tf.data.Dataset.range(3).take(2**63)
    assert np.isfinite(np.float32(FLOAT32_MAX)) and np.float32(FLOAT32_TINY) > 0
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.float32(3.5e38)) and np.float32(1e-46) == 0
    keras.layers.Dense(MAX_HEAD_UNITS)
    with pytest.raises(ValueError):
        keras.layers.Dense(0)
    keras.layers.Dropout(0.0)
    keras.layers.BatchNormalization(momentum=1e-9)


def test_a_setting_given_twice_with_p_is_refused():
    from pcam.execute.notebooks import parse_parameters

    with pytest.raises(PCamError, match=r"-p epochs=2 and -p EPOCHS=3 both set epochs; give it "
                                        r"once"):
        parse_parameters([("epochs", "2"), ("EPOCHS", "3")])


def test_settings_file_round_trips_a_record_and_reruns_with_a_change(tmp_path, capsys):
    """`pcam settings --run R --out F` writes a run's settings; `pcam train --config F`
    reads them back as the same config; options given on top change them."""
    from fake_runs import make_run

    from pcam.app.cli import build_parser
    from pcam.run.config import TrainConfig
    from pcam.run.settings_file import read_settings, settings_text, write_settings

    for model in ("mobilenet", "resnet50"):
        config = TrainConfig.for_model(model, run=f"{model}-x", epochs=7, head_units=(64, 32),
                                       augment=("dihedral",), weights=None, seed=3)
        path = write_settings(tmp_path / f"{model}.toml", config.to_dict())
        values = read_settings(path)
        again = TrainConfig.for_model(values.pop("model"), **values)
        assert again == config, model
    run = make_run(tmp_path / "results", "pub", "resnet50")
    from pcam.app.cli import main

    assert main(["settings", "--run", str(run), "--out", str(tmp_path / "pub.toml")]) == 0
    text = (tmp_path / "pub.toml").read_text()
    assert 'model = "resnet50"' in text and "finetune_layers" not in text  # not its setting
    assert text == settings_text(json.loads((run / "record.json").read_text())["config"])
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "pub.toml"),
                                      "--epochs", "9"])
    assert args.config == str(tmp_path / "pub.toml") and args.epochs == 9


@pytest.mark.parametrize("text, message", [
    ("epochs = 3", "has no `model = ...` line"),
    ('model = "mobilenet"\nepoch = 3', "unknown setting"),
    ('model = "mobilenet"\nepochs = "many"', "epochs"),
    ('model = "mobilenet"\nepochs = [', "cannot read settings file"),
    ('model = "resnet50"\nfinetune_layers = 3', "trains from scratch"),
    ('model = "mobilenet"\ndata_dir = "<external>/data/x"', "outside the project"),
])
def test_a_bad_settings_file_is_named_with_what_is_wrong(tmp_path, text, message):
    from pcam.run.settings_file import read_settings

    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(PCamError, match=f"{path.name}.*{message}|{message}.*{path.name}"):
        read_settings(path)


def test_every_experiment_file_holds_settings_each_model_takes():
    """The presets and the recipes are TOML files of `TrainConfig` fields: each makes a
    valid config for every model, with the values the file gives."""
    from pcam.run.config import TrainConfig
    from pcam.run.presets import EXPERIMENTS_DIR, PRESETS
    from pcam.run.settings import read_presets

    files = sorted((EXPERIMENTS_DIR / "presets").glob("*.toml"))
    assert {p.stem for p in files} == set(PRESETS) >= {"smoke", "demo", "full"}
    for model in ("mobilenet", "resnet50"):
        for preset in PRESETS:
            config = TrainConfig.for_model(model, preset)
            assert config.model == model
        recipe = read_presets(EXPERIMENTS_DIR / "recipes.toml")
        config = TrainConfig.for_model(model, **recipe["both"], **recipe[model])
        assert config.patience > 100 and not config.published
    demo = TrainConfig.for_model("resnet50", "demo")
    assert (demo.run, demo.batch_size, demo.bn_momentum) == ("resnet50-demo", 8, 0.9)
    assert TrainConfig.for_model("mobilenet", "smoke").augment == TrainConfig.augment


@pytest.mark.parametrize("text, message", [
    ("[vgg16]\nepochs = 3", r"table\(s\) vgg16 are not models"),
    ("[mobilenet]\nepochs = 'many'", "epochs"),
    ("epochs = [", "cannot read settings file"),
    ("[mobilenet]\n[mobilenet.head]\nunits = 3", "head: a table, not a setting"),
])
def test_a_bad_preset_file_is_named_with_what_is_wrong(tmp_path, text, message):
    from pcam.run.settings import read_presets

    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(PCamError, match=f"{path.name}.*{message}|{message}.*{path.name}"):
        read_presets(path)


def test_a_preset_file_with_an_unknown_setting_is_refused_where_it_is_applied(monkeypatch,
                                                                              tmp_path):
    from pcam.run import config as config_module
    from pcam.run.settings import read_presets

    path = tmp_path / "mine.toml"
    path.write_text("[mobilenet]\nepoch = 3\n")
    monkeypatch.setitem(config_module.PRESETS, "mine", read_presets(path))
    with pytest.raises(PCamError, match="unknown setting.*epoch"):
        config_module.TrainConfig.for_model("mobilenet", "mine")
