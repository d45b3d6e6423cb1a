"""Images/s and peak memory of ways to feed PCam's HDF5 files to Keras.

Methods, each timed in a fresh subprocess (so peak RSS is its own):
  stream          pcam.data.pipeline.make_dataset, shuffled, no cache, no augmentation
  stream+augment  the same with every augmentation in pcam.run.config.AUGMENTATIONS
  per-sample      x[i] one patch at a time in shuffled order, as old Keras
                  HDF5Matrix / generator snippets read (capped: it is slow)
  in-memory       the whole used part read into a numpy array first, then
                  tf.data.Dataset.from_tensor_slices (the load is not timed)

Several `--data-dir` folders are measured one after the other, each row naming
its file's storage layout (`pcam check`'s words), so the gzip-chunked files of
`pcam synthetic` and the official layout (`--layout official`: contiguous,
uncompressed) compare in one run.

Usage (full-size train files, 262,144 patches: 4.7 GB gzip-chunked, 7.2 GB official):
    python -m pcam synthetic --data-dir /tmp/pcam-gzip --train 262144 --valid 0 --test 0
    python -m pcam synthetic --data-dir /tmp/pcam-official --train 262144 --valid 0 \
        --test 0 --layout official
    python benchmarks/bench_pipeline.py --data-dir /tmp/pcam-gzip /tmp/pcam-official
Quick run: add `--max-samples 4096`. Images/s is the median over `--repeats`
passes; peak RSS is the process's maximum resident set (ru_maxrss).
"""

import argparse
import json
import os
import sys
from pathlib import Path

from common import peak_rss_mb, run_child, time_repeats  # also puts pcam on sys.path

METHODS = ("stream", "stream+augment", "per-sample", "in-memory")


def _child(args: argparse.Namespace) -> dict:
    """Time one method in this process; return its figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import h5py
    import numpy as np
    import tensorflow as tf

    from pcam.data.h5read import open_split, read_labels
    from pcam.data.pipeline import make_dataset

    split = open_split(args.data_dir[0], args.split)
    n = split.length if args.max_samples is None else min(args.max_samples, split.length)
    baseline_mb = peak_rss_mb()
    method = args.child

    if method.startswith("stream"):
        augment = ()
        if method == "stream+augment":
            from pcam.run.config import AUGMENTATIONS

            augment = AUGMENTATIONS
        ds = make_dataset(split, batch_size=args.batch_size, shuffle=True, seed=0,
                          max_samples=n, cache=False, augment=augment)

        def run_pass():
            for _ in ds:
                pass

    elif method == "per-sample":
        n = min(n, args.per_sample_limit)
        order = np.random.default_rng(0).permutation(n)
        labels = read_labels(split)

        def run_pass():
            with h5py.File(split.x_path, "r") as f:
                x = f["x"]
                for start in range(0, n, args.batch_size):
                    idx = order[start : start + args.batch_size]
                    np.stack([x[i] for i in idx]), labels[idx]

    elif method == "in-memory":
        with h5py.File(split.x_path, "r") as f:
            images = f["x"][:n]
        labels = read_labels(split)[:n].astype(np.float32).reshape(-1, 1)
        ds = (
            tf.data.Dataset.from_tensor_slices((images, labels))
            .shuffle(4096, seed=0)
            .batch(args.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )

        def run_pass():
            for _ in ds:
                pass

    else:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")

    seconds = time_repeats(run_pass, args.repeats, warmup=0)
    return {
        "method": method,
        "n": n,
        "seconds": seconds,
        "images_per_s": n / float(np.median(seconds)),
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_imports_mb": baseline_mb,
    }


def _run_child(method: str, data_dir: Path, args: argparse.Namespace) -> dict | None:
    command = [sys.executable, __file__, "--child", method, "--data-dir", str(data_dir),
               "--split", args.split, "--batch-size", str(args.batch_size),
               "--repeats", str(args.repeats), "--per-sample-limit", str(args.per_sample_limit)]
    if args.max_samples is not None:
        command += ["--max-samples", str(args.max_samples)]
    return run_child(method, command)


def _parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, nargs="+", required=True,
                        help="PCam-layout data folder(s), measured in turn")
    parser.add_argument("--split", default="train")
    parser.add_argument("--max-samples", type=int, help="use the first N patches (quick run)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="passes per method (median)")
    parser.add_argument("--per-sample-limit", type=int, default=4096,
                        help="patches the slow per-sample reader reads per pass")
    parser.add_argument("--methods", nargs="+", choices=METHODS,
                        default=["stream", "per-sample", "in-memory"])
    parser.add_argument("--augment", action="store_true", help="also time stream+augment")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    methods = list(args.methods)
    if args.augment and "stream+augment" not in methods:
        methods.insert(1, "stream+augment")
    from pcam.data.h5read import open_split, storage_layout

    print(f"data: {args.split}, max_samples={args.max_samples}, batch {args.batch_size}, "
          f"{args.repeats} passes, {os.cpu_count()} CPUs")
    print(f"{'layout':<34} {'method':<16} {'patches':>8} {'images/s':>10} {'peak RSS MB':>12}")
    from pcam.core.errors import PCamError

    for data_dir in args.data_dir:
        try:
            layout = storage_layout(open_split(data_dir, args.split).x_path)
        except PCamError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for method in methods:
            row = _run_child(method, data_dir, args)
            if row:
                print(f"{layout:<34} {method:<16} {row['n']:>8} {row['images_per_s']:>10,.0f} "
                      f"{row['peak_rss_mb']:>12,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
