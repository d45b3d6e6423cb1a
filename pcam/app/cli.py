"""Command line: `python -m pcam <command> ...`.

The parser and the entry point; what each command does is in `pcam.app.commands`,
a thin call into the package (the notebooks call the same functions). An error
a user can fix is printed as one `error:` line without a traceback, exit status 2.
"""

import argparse
import math
import re
import signal
import sys
import tempfile
import threading

from pcam.app import commands
from pcam.core import native_stderr
from pcam.core.errors import PCamError, user_message
from pcam.core.mplbackend import check_mplbackend
from pcam.data.spec import LAYOUTS, SPLITS
from pcam.evaluation.export import FORMATS, QUANTIZATIONS
from pcam.run.config import BACKBONE_DEFAULTS
from pcam.run.presets import PRESETS
from pcam.run.settings import MAX_COUNT, MAX_SEED, parse_setting


def _whole(text: str, low: int, high: int) -> int:
    """`text` as a whole number from `low` to `high`, else argparse's one-line refusal."""
    word = text.strip()
    if not (re.fullmatch(r"[+-]?\d{1,30}", word) and low <= int(word) <= high):
        raise argparse.ArgumentTypeError(f"{text!r}: use a whole number from {low} to {high}")
    return int(word)


def _positive_int(text: str) -> int:
    return _whole(text, 1, MAX_COUNT)


def _non_negative_int(text: str) -> int:
    return _whole(text, 0, MAX_COUNT)


def _seed(text: str) -> int:
    return _whole(text, 0, MAX_SEED)  # numpy's seed range, as for training


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: use a positive finite number of minutes")
    return value


def _path(text: str) -> str:
    """A file or folder option: any text but an empty one (which would mean this folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: give a path")
    return text


def _one_of_many(name: str, text: str) -> tuple:
    """One item (or comma-separated items) of a tuple setting, checked as the setting is."""
    return tuple(parse_setting(name, text))


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """One option per `TrainConfig` field but `model`, generated from the field: its name
    (`--head-units`), its help and default, its type read as `-p` values are read.
    An option not given is left out of the namespace, so the backbone defaults and
    the preset apply; one given as `none` (`--weights none`) is the value None."""
    import dataclasses

    from pcam.run.config import TrainConfig

    for field in dataclasses.fields(TrainConfig):
        if field.name == "model":
            continue
        option = "--" + field.name.replace("_", "-")
        default = field.default if not isinstance(field.default, tuple) else ",".join(
            map(str, field.default))
        text = f"{field.metadata['help']} (field default: {default})"
        unset = argparse.SUPPRESS
        if field.type is bool:
            parser.add_argument(option, dest=field.name, default=unset, help=text,
                                action=argparse.BooleanOptionalAction)
        elif str(field.type).startswith("tuple"):  # --head-units 256 64 or 256,64
            parser.add_argument(option, dest=field.name, nargs="+", help=text, default=unset,
                                type=_setting(field.name, whole=False))
        else:
            parser.add_argument(option, dest=field.name, help=text, default=unset,
                                type=_setting(field.name))


def _setting(name: str, whole: bool = True):
    """The argparse type of `TrainConfig` field `name`: text read as `-p` values are
    (`pcam.run.config.parse_setting`); the range is `TrainConfig`'s to check."""
    def parse(text: str):
        try:
            return parse_setting(name, text) if whole else _one_of_many(name, text)
        except PCamError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = name
    return parse


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=_path, help="PCam data folder (default: $PCAM_DATA_DIR or data/)"
    )


def _parameter(text: str) -> tuple[str, str]:
    """NAME=VALUE as (NAME, VALUE text); `pcam.execute.notebooks.parse_parameters` reads the value
    by the setting's type (no guessing: `-p data_dir=123` is the folder "123")."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pcam", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = subparsers.add_parser("download", help="download, verify and unpack PCam (about 8 GB)")
    _add_data_dir(p)
    p.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    p.set_defaults(func=commands.cmd_download)

    p = subparsers.add_parser("check", help="check every split in a data folder and print a table")
    _add_data_dir(p)
    p.add_argument("--md5", action="store_true", help="also verify MD5 checksums (slow for train)")
    p.add_argument("--quick", action="store_true",
                   help="skip reading every patch (a minute or more for train on a slow disk); "
                   "a corrupt chunk then goes unnoticed until training reads it")
    p.set_defaults(func=commands.cmd_check)

    p = subparsers.add_parser("synthetic", help="write synthetic PCam-layout files (no download)")
    _add_data_dir(p)
    p.add_argument("--train", type=_non_negative_int, default=4096)
    p.add_argument("--valid", type=_non_negative_int, default=1024)
    p.add_argument("--test", type=_non_negative_int, default=1024)
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--layout", choices=LAYOUTS, default=LAYOUTS[0],
                   help="how images are stored: gzip (chunks of 32 patches, default) or "
                        "official (contiguous, uncompressed, as the official files)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace or delete split files already in the folder (one line each)")
    p.set_defaults(func=commands.cmd_synthetic)

    p = subparsers.add_parser(
        "import-images", help="convert SRC/{0,1}/*, SRC/<split>/{0,1}/* or a Kaggle folder"
    )
    p.add_argument("src", type=_path, help="folder of images")
    _add_data_dir(p)
    p.add_argument("--split", choices=SPLITS, help="split name when SRC holds one split")
    p.add_argument("--holdout", type=_non_negative_int, default=0, help="hold out this many "
                   "train patches (stratified) as valid; SRC's valid becomes test")
    p.add_argument("--test-from-valid", type=_non_negative_int, default=0, dest="test_from_valid",
                   help="move this many of SRC's valid patches (stratified) to test; train stays "
                   "whole, and valid and test come from slides train does not hold")
    p.add_argument("--seed", type=_seed, default=0,
                   help="seed of the hold-out draws and the file order")
    p.add_argument("--overwrite", action="store_true",
                   help="replace or delete split files already in the folder (one line each)")
    p.set_defaults(func=commands.cmd_import_images)

    p = subparsers.add_parser("train", help="train a model (runs its notebook), write results/RUN/")
    p.add_argument("--model", help="mobilenet or resnet50 (or the settings file's model)")
    p.add_argument("--config", type=_path, metavar="FILE",
                   help="settings from a TOML file (`pcam settings` writes one); options "
                   "given here change them")
    p.add_argument("--preset", choices=PRESETS,
                   help="named settings: smoke, demo, subset, full "
                        "(files in pcam/experiments/presets/)")
    p.add_argument("--results", type=_path,
                   help="records folder (default: $PCAM_RESULTS_DIR or results/)")
    p.add_argument("--log-output", action="store_true", dest="log_output",
                   help="stream every cell output, not only the epoch lines")
    _add_settings(p)
    p.set_defaults(func=commands.cmd_train)

    p = subparsers.add_parser("settings", help="write a run's settings as a TOML file "
                              "(rerun it with `pcam train --config FILE`)")
    p.add_argument("--run", required=True, type=_path, help="results/NAME or NAME")
    p.add_argument("--out", type=_path, metavar="FILE",
                   help="file to write (default: print the settings)")
    p.set_defaults(func=commands.cmd_settings)

    p = subparsers.add_parser("evaluate",
                              help="evaluate a run's best checkpoint, update its record")
    p.add_argument("--run", required=True, type=_path, help="results/NAME or NAME")
    p.add_argument("--data-dir", type=_path,
                   help="data folder to score (default: the run's own data); "
                   "other data are scored apart, under \"external\" in the record")
    p.add_argument("--split", nargs="+", choices=SPLITS, default=["valid", "test"])
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="also evaluate with 8-fold dihedral test-time augmentation")
    p.set_defaults(func=commands.cmd_evaluate)

    p = subparsers.add_parser("predict", help="apply a run's model to your own patches "
                              "(a folder of images, a PCam x .h5 file or one image), write a CSV")
    p.add_argument("input", type=_path, metavar="INPUT",
                   help="folder of 96x96 RGB images (searched recursively; labelled by 0/ and "
                   "1/ subfolders), a PCam x .h5 file (labelled by the y file beside it) or an "
                   "image")
    p.add_argument("--run", required=True, type=_path, help="results/NAME or NAME")
    p.add_argument("--out", type=_path, metavar="FILE",
                   help="CSV to write (default: predictions.csv in this folder); replaced only "
                   "when every patch is scored")
    p.add_argument("--tta", action="store_true",
                   help="also predict the mean over the 8 dihedral transforms (8x the work)")
    p.add_argument("--format", choices=("csv", "kaggle"), default="csv", dest="fmt",
                   help="csv: id, source, probability, label at the run's threshold, ...; "
                   "kaggle: the submission file `id,label`, label = probability (TTA with --tta)")
    p.add_argument("--batch-size", type=_positive_int, default=256, dest="batch_size",
                   metavar="N", help="patches per inference batch (default 256)")
    p.set_defaults(func=commands.cmd_predict)

    p = subparsers.add_parser("export", help="export a run's model (SavedModel, ONNX, LiteRT) "
                              "and check it against Keras on the test split")
    p.add_argument("--run", required=True, type=_path, help="results/NAME or NAME")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt",
                   help="saved_model (a folder), onnx (a .onnx file) or litert (a .tflite file)")
    p.add_argument("--out", required=True, type=_path,
                   help="where the artifact goes; written only once it matches the Keras model")
    p.add_argument("--quantize", choices=QUANTIZATIONS,
                   help="litert only: float16 weights, or dynamic-range int8 (dynamic)")
    p.add_argument("--max-samples", type=_positive_int, dest="max_samples",
                   help="score the first N test patches (default: the whole test split)")
    p.add_argument("--data-dir", type=_path,
                   help="data folder whose test split is scored (default: the run's own)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export of the same format at --out")
    p.set_defaults(func=commands.cmd_export)

    p = subparsers.add_parser("report", help="rebuild images/ and the README table from results/")
    p.add_argument("--results", type=_path, help="records folder (default: results/)")
    p.add_argument("--readme", type=_path, help="README to update (default: README.md)")
    p.add_argument("--images", type=_path, help="figures folder (default: images/)")
    p.add_argument("--drop-missing", action="store_true", dest="drop_missing",
                   help="rebuild the table without a model that has no published run any more")
    p.add_argument("--allow-dirty", action="store_true", dest="allow_dirty",
                   help="publish runs trained from a dirty tree (uncommitted changes), "
                   "named under the table; without it they are refused")
    p.set_defaults(func=commands.cmd_report)

    p = subparsers.add_parser("notebooks", help="run both notebooks headless (papermill)")
    p.add_argument("--preset", choices=PRESETS, default="full")
    _add_data_dir(p)
    p.add_argument("--results", type=_path,
                   help="records folder (default: $PCAM_RESULTS_DIR or results/)")
    p.add_argument("--models", nargs="+", choices=tuple(BACKBONE_DEFAULTS),
                   default=list(BACKBONE_DEFAULTS))
    p.add_argument("-p", "--parameter", type=_parameter, action="append", default=[],
                   metavar="NAME=VALUE",
                   help="override a setting, e.g. -p EPOCHS=3 or -p epochs=3 (repeatable)")
    p.add_argument("--log-output", action="store_true", help="stream cell outputs")
    p.set_defaults(func=commands.cmd_notebooks)

    p = subparsers.add_parser("study", help="budgeted runs on the subset: the recipe study "
                              "(one change per arm, two seeds) or the budget and data curves")
    p.add_argument("arms", nargs="*", help="arms to run (default: all of the experiment's; "
                   "pcam.study.experiments.EXPERIMENTS)")
    p.add_argument("--experiment", choices=("study", "curves"), default="study",
                   help="study (default) or curves; arms go to RESULTS/<experiment>/")
    _add_data_dir(p)
    p.add_argument("--results", type=_path, help="records folder (default: results/)")
    p.add_argument("--weights-dir", type=_path,
                   help="folder of mobilenet_v1_<alpha>_imagenet_no_top.h5")
    p.add_argument("--plan-minutes", type=_minutes, metavar="MINUTES",
                   help="train nothing: print the settings that fill MINUTES for each arm, "
                        "from its costs measured in plan.json (how presets get a budget)")
    p.add_argument("--plan-only", action="store_true",
                   help="plan the arms (measure costs, write plan.json) and train nothing; "
                        "then several processes can train disjoint arms at once")
    p.set_defaults(func=commands.cmd_study)

    p = subparsers.add_parser("demo",
                            help="synthetic data + both notebooks + report (README command 1)")
    p.add_argument("--data-dir", type=_path,
                   help="synthetic data folder (default: data/synthetic in the "
                   "project)")
    p.add_argument("--out", type=_path,
                   help="demo results folder (default: demo/ in $PCAM_RESULTS_DIR or "
                   "the project's results/)")
    p.add_argument("--fresh", action="store_true", help="delete the demo's earlier runs first "
                   "(default: keep complete ones, resume interrupted ones)")
    p.add_argument("--weights", help="MobileNet weights: imagenet, none or a file (default: "
                   "the ImageNet weights shipped in pcam/assets/, so the demo runs offline)")
    p.set_defaults(func=commands.cmd_demo)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm, Kubernetes, `docker stop`), raised where Ctrl-C raises KeyboardInterrupt."""


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up (kernel shutdown) finish
    raise _Terminated()


# Commands that pick up where an interrupted run of them stopped.
RESUMING = ("download", "train", "notebooks", "study", "demo")


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 1 a check failed, 2 a user error (one `error:`
    line), 130 Ctrl-C, 143 SIGTERM; after 130 or 143 the same command resumes a run
    (`RESUMING`) or starts again."""
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    native_log = tempfile.TemporaryFile() if native_stderr.hidden() else None
    try:
        with native_stderr.stderr_fd_to(native_log, keep_python=True):
            check_mplbackend()
            return args.func(args)
    except KeyboardInterrupt as stop:  # papermill shuts the kernel down on its way out
        if args.command in RESUMING:
            print("interrupted; rerun the same command to resume", file=sys.stderr)
        else:  # these start over; what they write appears whole or not at all
            print("interrupted; nothing was left half-written; rerun the same command to start "
                  "again", file=sys.stderr)
        return 143 if isinstance(stop, _Terminated) else 130
    except Exception as error:
        if (message := user_message(error)) is None:  # a bug: a traceback, with the native lines
            if native_log is not None:
                print(native_stderr.tail(native_log), file=sys.stderr)
            raise
        # one line, whatever a file name in the message holds
        print("error: " + " ".join(message.splitlines()), file=sys.stderr)
        return 2
    finally:
        if native_log is not None:
            native_log.close()
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
