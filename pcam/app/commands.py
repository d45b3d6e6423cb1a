"""What each `python -m pcam` command does: a thin call into the package.

`pcam.app.cli` parses the command line and hands the arguments here; each
function returns the exit status. Heavy imports (TensorFlow) happen inside,
so that `--help` is instant.
"""

import argparse

from pcam.core.errors import PCamError


def cmd_download(args: argparse.Namespace) -> int:
    from pcam.data.download import download

    download(args.data_dir, splits=args.splits)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from pcam.data.check import check_data_dir, format_check_table

    rows = check_data_dir(args.data_dir, verify_md5=args.md5, read=not args.quick)
    print(format_check_table(rows))
    return 0 if rows and all(row["ok"] for row in rows) else 1


def cmd_synthetic(args: argparse.Namespace) -> int:
    from pcam.data.synthetic import write_synthetic

    sizes = {"train": args.train, "valid": args.valid, "test": args.test}
    write_synthetic(args.data_dir, sizes=sizes, seed=args.seed, overwrite=args.overwrite,
                    layout=args.layout)
    return 0


def cmd_import_images(args: argparse.Namespace) -> int:
    from pcam.data.import_images import import_images

    info = import_images(
        args.src, args.data_dir, split=args.split, holdout=args.holdout, seed=args.seed,
        test_from_valid=args.test_from_valid, overwrite=args.overwrite,
    )
    for name, n in info["splits"].items():
        print(f"{name}: {n:,} patches ({info['positives'][name]:,} positive): "
              f"{info['mapping'][name]}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pcam.execute.notebooks import run_notebook
    from pcam.run.config import TrainConfig

    given = {key: value for key, value in vars(args).items()
             if key not in ("command", "func", "model", "preset", "results", "log_output",
                            "config")}
    for key, value in given.items():  # `--head-units 256 64`: one tuple per word
        if isinstance(value, list):
            given[key] = tuple(item for part in value for item in part)
    if args.config is not None:
        from pcam.run.settings_file import read_settings

        try:
            given = {**read_settings(args.config), **given}
        except PCamError as error:
            raise PCamError(f"--config: {error}") from None
        model = given.pop("model")
        if args.model is not None and args.model != model:
            raise PCamError(f"--model {args.model}, but {args.config} trains {model}: leave "
                            "--model out, or change the file")
    elif args.model is None:
        raise PCamError("say which model to train: --model mobilenet|resnet50, or --config FILE")
    else:
        model = args.model
    config = TrainConfig.for_model(model, args.preset, **given)
    if config.run is None:
        config = config.replace(run=f"{config.model}-{_utc_stamp()}")
    from pcam.data.check import check_data_dir
    from pcam.data.h5read import open_split

    # Bad data fail here, before a kernel or a run folder, as `pcam check` says them.
    for row in check_data_dir(config.data_dir):
        if not row["ok"]:  # the message names the split and its file
            raise PCamError(row["error"])
    for split in ("train", "valid"):
        open_split(config.data_dir, split)
    run_notebook(config, results=args.results, log_output=args.log_output)
    return 0


def _utc_stamp() -> str:
    from datetime import UTC, datetime

    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


def cmd_settings(args: argparse.Namespace) -> int:
    from pcam.run.records import read_record
    from pcam.run.settings_file import settings_text, write_settings

    settings = read_record(args.run)["config"]
    if args.out is None:
        print(settings_text(settings), end="")
    else:
        write_settings(args.out, settings)
        print(f"settings of run {settings['run']} -> {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pcam.evaluation.evaluate import evaluate_run

    evaluate_run(args.run, data_dir=args.data_dir, splits=args.split, tta=args.tta)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pcam.evaluation.score_patches import predict_patches

    predict_patches(args.run, args.input, out=args.out, tta=args.tta, fmt=args.fmt,
                    batch_size=args.batch_size)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pcam.evaluation.export import export_run, format_summary

    summary = export_run(args.run, args.fmt, args.out, quantize=args.quantize,
                         max_samples=args.max_samples, data_dir=args.data_dir,
                         overwrite=args.overwrite)
    print(format_summary(summary))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pcam.report.build import build_report

    build_report(results=args.results, readme=args.readme, images=args.images,
                 drop_missing=args.drop_missing, allow_dirty=args.allow_dirty)
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    from pcam.execute.notebooks import parse_parameters, run_notebooks

    overrides = parse_parameters(args.parameter)  # every value checked before a kernel starts
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    run_notebooks(args.preset, models=tuple(args.models), overrides=overrides,
                  results=args.results, log_output=args.log_output)
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from pcam.study.experiments import plan_longer, run_study

    if args.plan_minutes is not None:
        if not args.arms:
            raise PCamError("--plan-minutes needs the arms to plan, e.g. baseline")
        for name, settings in plan_longer(args.arms, args.plan_minutes,
                                          experiment=args.experiment,
                                          data_dir=args.data_dir,
                                          results=args.results).items():
            print(f"{name}: {args.plan_minutes:g} minutes buy " +
                  ", ".join(f"{k}={v}" for k, v in settings.items()))
        return 0
    run_study(args.arms, experiment=args.experiment, data_dir=args.data_dir,
              results=args.results, weights_dir=args.weights_dir, train=not args.plan_only)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pcam.app.demo import run_demo

    run_demo(data_dir=args.data_dir, out_dir=args.out, weights=args.weights, fresh=args.fresh)
    return 0
