"""Patches/s and peak memory of `pcam predict` against `pcam evaluate`, on the same patches.

Methods, each timed in a fresh subprocess (so peak RSS is its own):
  evaluate x file   `pcam.evaluation.predict.predict_split` on the x file (what
                    `pcam evaluate` runs per split: the streaming tf.data pipeline,
                    parallel gzip inflation)
  predict x file    `pcam.evaluation.score_patches.score_patches` on the same x
                    file (what `pcam predict` runs: batches read ahead on threads,
                    the CSV written row by row), its y file beside it, so the
                    metrics are computed too
  predict folder    the same on a flat folder of one .tif file per patch (the
                    Kaggle test layout), the same patches

Both paths score through one `Predictor` (a traced `model(x, training=False)`);
each call is timed whole (reading, inference, for predict also checks, CSV and
metrics) after one untimed warm-up call, so tracing is not counted. Weights do
not change speed, so the model is randomly initialised. Peak RSS is the
process's maximum resident set (ru_maxrss); "after setup" is that before the
first call (TensorFlow and the model).

Usage:
    python benchmarks/bench_predict.py --patches 4096
Quick run: `--patches 512 --repeats 1`. The data (a synthetic test split and
its patches as .tif files) are written to a temporary folder, or to `--work DIR`
(kept, and reused when it holds the same number of patches).
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from common import machine, median, peak_rss_mb, run_child, table, time_repeats  # pcam on sys.path

METHODS = ("evaluate x file", "predict x file", "predict folder")


def _child(args: argparse.Namespace) -> dict:
    """Time one method in this process; return its figures."""
    from pcam.data.h5read import open_split
    from pcam.data.user_patches import find_patches
    from pcam.evaluation.predict import Predictor, predict_split
    from pcam.evaluation.score_patches import score_patches
    from pcam.models import build_model

    predictor = Predictor(build_model("mobilenet", alpha=args.alpha, weights=None))
    split = open_split(args.work / "data", "test")
    if args.child == "evaluate x file":
        def run():
            predict_split(predictor, split, batch_size=args.batch_size)
    else:
        source = split.x_path if args.child == "predict x file" else args.work / "images"
        out = args.work / f"{args.child.replace(' ', '-')}.csv"

        def run():  # as the command: list and check INPUT, then score it
            score_patches(predictor, find_patches(source), out, {"value": 0.5},
                          batch_size=args.batch_size)
    setup_mb = peak_rss_mb()
    seconds = time_repeats(run, args.repeats, warmup=1)
    return {"method": args.child, "n": split.length, "seconds": median(seconds),
            "ips": split.length / median(seconds), "peak_rss_mb": peak_rss_mb(),
            "setup_mb": setup_mb}


def _make_data(work: Path, n: int) -> None:
    """A synthetic test split of `n` patches in work/data, and each as work/images/<i>.tif."""
    from PIL import Image

    from pcam.data.h5read import open_split, read_images
    from pcam.data.synthetic import write_synthetic

    images = work / "images"
    try:
        if open_split(work / "data", "test").length == n and len(os.listdir(images)) == n:
            return
    except Exception:  # nothing there yet, or another size: write it again
        pass
    write_synthetic(work / "data", sizes={"train": 0, "valid": 0, "test": n}, overwrite=True)
    split = open_split(work / "data", "test")
    images.mkdir(parents=True, exist_ok=True)
    for old in images.iterdir():
        old.unlink()
    for start in range(0, n, 1024):
        for i, patch in enumerate(read_images(split, start, min(start + 1024, n)), start):
            Image.fromarray(patch).save(images / f"{i:08d}.tif")


def _run_child(method: str, args: argparse.Namespace) -> dict | None:
    command = [sys.executable, __file__, "--child", method, "--work", str(args.work),
               "--alpha", str(args.alpha), "--batch-size", str(args.batch_size),
               "--repeats", str(args.repeats)]
    return run_child(method, command)


def _parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=4096, help="patches in the x file and "
                        "the folder")
    parser.add_argument("--alpha", type=float, default=0.5, help="MobileNet width multiplier")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method (median)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--work", type=Path, help="folder for the data (default: a temporary "
                        "one, deleted afterwards)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("patches", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv=None) -> int:
    args = _parse(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as temp:
        if args.work is None:
            args.work = Path(temp)
        _make_data(args.work, args.patches)
        print(f"machine: {machine()}")
        print(f"data: {args.patches} synthetic patches, as a gzip-chunked x file and as "
              f"{args.patches} .tif files; MobileNet alpha {args.alpha} (random weights), "
              f"batch {args.batch_size}, {len(os.sched_getaffinity(0))} usable cores")
        print(f"timing: each method in its own process, {args.repeats} call(s) after one "
              "warm-up; median\n", flush=True)
        rows = [row for method in args.methods if (row := _run_child(method, args))]
    base = next((r["ips"] for r in rows if r["method"] == "evaluate x file"), None)
    for row in rows:
        row["vs"] = row["ips"] / base if base else None
    print(table(rows, [("method", "method", "s"), ("n", "patches", "d"),
                       ("seconds", "seconds", ",.2f"), ("ips", "patches/s", ",.1f"),
                       ("vs", "vs evaluate", ".2f"), ("setup_mb", "RSS after setup MB", ",.0f"),
                       ("peak_rss_mb", "peak RSS MB", ",.0f")]))
    print("\nvs evaluate: patches/s relative to predict_split on the x file (1.0 = as fast)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
