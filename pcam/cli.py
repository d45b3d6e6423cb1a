"""Command line: `python -m pcam <command> ...`.

The parser and the entry point; what each command does is in `pcam.commands`,
a thin call into the package (the notebooks call the same functions). An error
a user can fix is printed as one `error:` line without a traceback, exit status 2.
"""

import argparse
import signal
import sys
import tempfile
import threading

from pcam import commands, native_stderr
from pcam.data.spec import SPLITS
from pcam.errors import user_message
from pcam.presets import PRESETS


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", help="PCam data folder (default: $PCAM_DATA_DIR or data/)"
    )


def _parameter(text: str) -> tuple[str, object]:
    import ast

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value  # a bare string, e.g. WEIGHTS=imagenet


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
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="replace or delete split files already in the folder (one line each)")
    p.set_defaults(func=commands.cmd_synthetic)

    p = subparsers.add_parser(
        "import-images", help="convert SRC/{0,1}/*, SRC/<split>/{0,1}/* or a Kaggle folder"
    )
    p.add_argument("src", help="folder of images")
    _add_data_dir(p)
    p.add_argument("--split", choices=SPLITS, help="split name when SRC holds one split")
    p.add_argument("--holdout", type=_non_negative_int, default=0, help="hold out this many "
                   "train patches (stratified) as valid; SRC's valid becomes test")
    p.add_argument("--test-from-valid", type=_non_negative_int, default=0, dest="test_from_valid",
                   help="move this many of SRC's valid patches (stratified) to test; train stays "
                   "whole, and valid and test come from slides train does not hold")
    p.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the hold-out draws and the file order")
    p.add_argument("--overwrite", action="store_true",
                   help="replace or delete split files already in the folder (one line each)")
    p.set_defaults(func=commands.cmd_import_images)

    p = subparsers.add_parser("train", help="train a model (runs its notebook), write results/RUN/")
    p.add_argument("--model", required=True, help="mobilenet or resnet50")
    p.add_argument("--preset", choices=PRESETS,
                   help="named settings: smoke, demo, subset, full (pcam.presets.PRESETS)")
    p.add_argument("--results", help="records folder (default: $PCAM_RESULTS_DIR or results/)")
    p.add_argument("--log-output", action="store_true", dest="log_output",
                   help="stream every cell output, not only the epoch lines")
    _add_data_dir(p)
    p.add_argument("--run", help="run name (folder under results/)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--head-epochs", type=int, dest="head_epochs")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--max-samples", type=int, dest="max_samples")
    p.add_argument("--max-eval-samples", type=int, dest="max_eval_samples")
    p.add_argument("--steps-per-epoch", type=int, dest="steps_per_epoch",
                   help="batches an epoch, drawn anew each epoch (default: one whole pass)")
    p.add_argument("--planned-minutes", type=float, dest="planned_minutes",
                   help="training minutes a budget plan predicted (recorded beside the realised)")
    p.add_argument("--alpha", type=float)
    p.add_argument("--image-size", type=int, dest="image_size",
                   help="transfer: backbone input side, 32-512; above 96 patches are upsampled")
    p.add_argument("--weights", help="imagenet, none, or a path to a weights file")
    p.add_argument("--learning-rate", type=float, dest="learning_rate")
    p.add_argument("--finetune-learning-rate", type=float, dest="finetune_learning_rate")
    p.add_argument("--augment",
                   help="comma-separated: dihedral,shift,hed,brightness_contrast, or none")
    p.add_argument("--seed", type=int)
    p.add_argument("--deterministic", action="store_true", default=None)
    p.add_argument("--strategy", help="auto, none, mirrored or multiworker")
    p.add_argument("--precision", help="float32, mixed_float16 or mixed_bfloat16")
    p.add_argument("--schedule", help="cosine (with warm-up), plateau or constant")
    p.add_argument("--patience", type=int, help="early-stopping patience (epochs, val AUC)")
    p.add_argument("--finetune-layers", type=int, dest="finetune_layers",
                   help="top backbone layers unfrozen in phase 2 (default: per backbone)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="also evaluate with 8-fold dihedral test-time augmentation (default on)")
    p.add_argument("--head-units", type=_positive_int, nargs="+", dest="head_units",
                   help="sizes of the new dense layers before the sigmoid (default: 128)")
    p.add_argument("--dropout", type=float, help="dropout before each dense layer, in [0, 1)")
    p.add_argument("--warmup-epochs", type=int, dest="warmup_epochs",
                   help="linear warm-up epochs of the cosine schedule")
    p.add_argument("--bn-momentum", type=float, dest="bn_momentum",
                   help="from scratch: momentum of BatchNorm's moving statistics (default 0.99)")
    p.add_argument("--published", action="store_true", default=None,
                   help="put this run in the README table (`python -m pcam report`)")
    p.set_defaults(func=commands.cmd_train)

    p = subparsers.add_parser("evaluate",
                              help="evaluate a run's best checkpoint, update its record")
    p.add_argument("--run", required=True, help="results/NAME or NAME")
    p.add_argument("--data-dir", help="data folder to score (default: the run's own data); "
                   "other data are scored apart, under \"external\" in the record")
    p.add_argument("--split", nargs="+", choices=SPLITS, default=["valid", "test"])
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="also evaluate with 8-fold dihedral test-time augmentation")
    p.set_defaults(func=commands.cmd_evaluate)

    p = subparsers.add_parser("report", help="rebuild images/ and the README table from results/")
    p.add_argument("--results", help="records folder (default: results/)")
    p.add_argument("--readme", help="README to update (default: README.md)")
    p.add_argument("--images", help="figures folder (default: images/)")
    p.add_argument("--drop-missing", action="store_true", dest="drop_missing",
                   help="rebuild the table without a model that has no published run any more")
    p.add_argument("--allow-dirty", action="store_true", dest="allow_dirty",
                   help="publish runs trained from a dirty tree (uncommitted changes), "
                   "named under the table; without it they are refused")
    p.set_defaults(func=commands.cmd_report)

    p = subparsers.add_parser("notebooks", help="run both notebooks headless (papermill)")
    p.add_argument("--preset", choices=PRESETS, default="full")
    _add_data_dir(p)
    p.add_argument("--results", help="records folder (default: $PCAM_RESULTS_DIR or results/)")
    p.add_argument("--models", nargs="+", default=["mobilenet", "resnet50"])
    p.add_argument("-p", "--parameter", type=_parameter, action="append", default=[],
                   metavar="NAME=VALUE",
                   help="override a setting, e.g. -p EPOCHS=3 or -p epochs=3 (repeatable)")
    p.add_argument("--log-output", action="store_true", help="stream cell outputs")
    p.set_defaults(func=commands.cmd_notebooks)

    p = subparsers.add_parser("study", help="budgeted runs on the subset: the recipe study "
                              "(one change per arm, two seeds) or the budget and data curves")
    p.add_argument("arms", nargs="*", help="arms to run (default: all of the experiment's; "
                   "pcam.study.EXPERIMENTS)")
    p.add_argument("--experiment", choices=("study", "curves"), default="study",
                   help="study (default) or curves; arms go to RESULTS/<experiment>/")
    _add_data_dir(p)
    p.add_argument("--results", help="records folder (default: results/)")
    p.add_argument("--weights-dir", help="folder of mobilenet_v1_<alpha>_imagenet_no_top.h5")
    p.add_argument("--plan-minutes", type=float, metavar="MINUTES",
                   help="train nothing: print the settings that fill MINUTES for each arm, "
                        "from its costs measured in plan.json (how presets get a budget)")
    p.set_defaults(func=commands.cmd_study)

    p = subparsers.add_parser("demo",
                            help="synthetic data + both notebooks + report (README command 1)")
    p.add_argument("--data-dir", default="data/synthetic")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--weights", help="MobileNet weights: imagenet, none or a file (default: "
                   "the ImageNet weights shipped in pcam/assets/, so the demo runs offline)")
    p.set_defaults(func=commands.cmd_demo)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm, Kubernetes, `docker stop`), raised where Ctrl-C raises KeyboardInterrupt."""


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up (kernel shutdown) finish
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 1 a check failed, 2 a user error (one `error:`
    line), 130 Ctrl-C, 143 SIGTERM; after 130 or 143 the same command resumes a run."""
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    native_log = tempfile.TemporaryFile() if native_stderr.hidden() else None
    try:
        with native_stderr.stderr_fd_to(native_log, keep_python=True):
            return args.func(args)
    except KeyboardInterrupt as stop:  # papermill shuts the kernel down on its way out
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(stop, _Terminated) else 130
    except Exception as error:
        if (message := user_message(error)) is None:  # a bug: a traceback, with the native lines
            if native_log is not None:
                print(native_stderr.tail(native_log), file=sys.stderr)
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        if native_log is not None:
            native_log.close()
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
