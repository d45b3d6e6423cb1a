"""Inference images/s: the pcam evaluation path vs a bare `model.predict`.

On a test split (full size: 32,768 patches), for each model:

  evaluate      `pcam.evaluation.evaluate.predict_split` (what `pcam evaluate` runs per
                split): the streaming pipeline in file order, batches of 256,
                a traced `model(x, training=False)`; its own inference timer
                (tracing excluded), as stored in run records
  evaluate+tta  the same call's 8-fold dihedral TTA pass (mean of 8 predictions)
  predict       `model.predict(x, batch_size=256)` on the same patches already
                in a numpy array (read before timing), after a warm-up call

The two are timed alternately, `--repeats` times; figures are medians, and
the ratio evaluate / predict says what the streaming path costs (goal: ~1).
Weights do not change speed, so models are randomly initialised.

Usage:
    python -m pcam synthetic --data-dir /tmp/pcam-test --train 0 --valid 0 --test 32768
    python benchmarks/bench_inference.py --data-dir /tmp/pcam-test
Quick run: `--max-samples 2048 --no-tta`.
"""

import argparse
import sys
import time
from pathlib import Path

from common import machine, median, table


def _parse(argv=None) -> argparse.Namespace:
    from pcam.evaluation.evaluate import EVAL_BATCH
    from pcam.run.config import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with a test split")
    parser.add_argument("--split", default="test")
    parser.add_argument("--models", nargs="+", default=["mobilenet", "resnet50"])
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNet width multiplier")
    parser.add_argument("--max-samples", type=int, help="score the first N patches (quick run)")
    parser.add_argument("--batch-size", type=int, default=EVAL_BATCH)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per method (median)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the 8-fold TTA pass (8x the work)")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS)
    args = parser.parse_args(argv)
    for name in ("repeats", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_samples is not None and args.max_samples < 1:
        parser.error(f"--max-samples must be >= 1, got {args.max_samples}")
    return args


def bench_model(name: str, split, images, args) -> list[dict]:
    """Rows (one per method) for one model; evaluate and predict alternate per repeat."""
    from pcam.evaluation.evaluate import predict_split
    from pcam.models import build_model

    model = build_model(name, alpha=args.alpha if name.startswith("mobilenet") else 1.0,
                        weights=None)
    n = len(images)
    model.predict(images[: args.batch_size], batch_size=args.batch_size, verbose=0)  # trace
    seconds = {"evaluate": [], "evaluate+tta": [], "predict": [], "evaluate call": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = predict_split(model, split, max_samples=n, tta=args.tta,
                            batch_size=args.batch_size)
        seconds["evaluate call"].append(time.perf_counter() - start)
        seconds["evaluate"].append(out["inference"]["seconds"])
        if args.tta:
            seconds["evaluate+tta"].append(out["inference"]["tta_seconds"])
        start = time.perf_counter()
        model.predict(images, batch_size=args.batch_size, verbose=0)
        seconds["predict"].append(time.perf_counter() - start)
    predict_s = median(seconds["predict"])
    rows = []
    for method, values in seconds.items():
        if not values or method == "evaluate call":
            continue
        s = median(values)
        passes = 8 if method == "evaluate+tta" else 1
        rows.append({"model": name, "method": method, "n": n, "seconds": s,
                     "ips": n / s, "forward_ips": passes * n / s,
                     "vs_predict": predict_s / s * passes if method != "predict" else None})
    call = median(seconds["evaluate call"])
    print(f"{name}: " + ", ".join(f"{r['method']} {r['ips']:,.1f}" for r in rows)
          + f" images/s; whole predict_split call {call:.1f} s (tracing, labels, both passes)",
          flush=True)
    return rows


def main(argv=None) -> int:
    args = _parse(argv)
    import keras

    from pcam.data.h5read import open_split, read_images

    keras.config.set_dtype_policy(args.precision)
    split = open_split(args.data_dir, args.split)
    n = split.length if args.max_samples is None else min(args.max_samples, split.length)
    images = read_images(split, 0, n)
    print(f"machine: {machine()}")
    print(f"data: {args.split} of {args.data_dir.name}, {n} of {split.length} patches, "
          f"batch {args.batch_size}, {args.precision}, alpha {args.alpha} (MobileNet)")
    print(f"timing: {args.repeats} alternating passes per method; median\n", flush=True)
    rows = []
    for name in args.models:
        rows += bench_model(name, split, images, args)
    print()
    print(table(rows, [("model", "model", "s"), ("method", "method", "s"), ("n", "patches", "d"),
                       ("seconds", "seconds", ",.2f"), ("ips", "images/s", ",.1f"),
                       ("forward_ips", "forward passes/s", ",.1f"),
                       ("vs_predict", "speed vs predict", ".3f")]))
    print("\nspeed vs predict: forward passes/s relative to model.predict on the in-memory "
          "array (1.0 = no cost from streaming; TTA counts 8 passes per patch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
