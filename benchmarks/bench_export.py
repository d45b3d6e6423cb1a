"""CPU patches/s of each exported format's runtime beside Keras, on the same patches.

For each model, randomly initialised (weights do not change speed):

  keras        the traced `model(x, training=False)` that `pcam evaluate` runs
               (`pcam.evaluation.predict.Predictor.single`)
  saved_model  `model.export(format="tf_saved_model")`, reloaded with
               `tf.saved_model.load`, its "serving_default" signature
  onnx         `model.export(format="onnx")`, run by onnxruntime (CPU provider)
  litert       `model.export(format="litert")`, run by ai-edge-litert's Interpreter;
               with `--quantized`, also its float16 and dynamic-range int8 files

Every method gets the same uint8 patches, read into memory before timing, in
batches of `--batch-size` (default 64), each runtime through
`pcam.evaluation.runtimes.load_artifact` (what `pcam export` scores with).
After one untimed pass, the methods are timed alternately, `--repeats` times;
figures are medians. GPUs are hidden: every figure is the CPU's, each runtime
with its own default threads (LiteRT: one per usable core). A format whose
packages are missing is skipped with the line `pcam export` would print.
Random weights make every probability about 0.5, so agreement is not measured
here: `pcam export` checks it, on a trained run.

Usage:
    python -m pcam synthetic --data-dir /tmp/pcam-test --train 0 --valid 0 --test 32768
    python benchmarks/bench_export.py --data-dir /tmp/pcam-test
Quick run: `--models mobilenet --alpha 0.25 --max-samples 512 --repeats 2`.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import machine, median, table


def _parse(argv=None) -> argparse.Namespace:
    from pcam.evaluation.export import FORMATS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with a test split")
    parser.add_argument("--split", default="test")
    parser.add_argument("--models", nargs="+", default=["mobilenet", "resnet50"])
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNet width multiplier")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--quantized", action="store_true",
                        help="also the float16 and dynamic-range int8 LiteRT files")
    parser.add_argument("--max-samples", type=int, default=2048,
                        help="patches timed (default 2048; read into memory)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per method (median)")
    args = parser.parse_args(argv)
    for name in ("repeats", "batch_size", "max_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def _methods(model, formats, quantized: bool, folder: Path) -> dict:
    """name -> (runtime function over a batch, export seconds or None)."""
    from pcam.core.errors import PCamError
    from pcam.evaluation.export import SUFFIXES, export_model
    from pcam.evaluation.predict import Predictor
    from pcam.evaluation.runtimes import load_artifact, require

    single = Predictor(model).single
    methods = {"keras": (lambda x: single(x).numpy().reshape(-1), None)}
    variants = [(fmt, None) for fmt in formats]
    if quantized and "litert" in formats:
        variants += [("litert", "float16"), ("litert", "dynamic")]
    for fmt, quantize in variants:
        name = fmt + (f" {quantize}" if quantize else "")
        try:
            require(fmt)
        except PCamError as error:
            print(f"{name}: skipped: {error}", flush=True)
            continue
        path = folder / f"{fmt}-{quantize or 'float32'}{SUFFIXES.get(fmt, '')}"
        start = time.perf_counter()
        export_model(model, fmt, path, quantize=quantize)
        methods[name] = (load_artifact(fmt, path), time.perf_counter() - start)
    return methods


def bench_model(name: str, images, args) -> list[dict]:
    """Rows (one per method) for one model; the methods alternate per repeat."""
    from pcam.models import build_model

    model = build_model(name, alpha=args.alpha if name == "mobilenet" else 1.0, weights=None)
    batches = [images[i:i + args.batch_size] for i in range(0, len(images), args.batch_size)]
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        methods = _methods(model, args.formats, args.quantized, Path(folder))
        for run, _ in methods.values():  # one untimed pass: tracing, thread pools
            for batch in batches:
                run(batch)
        seconds = {m: [] for m in methods}
        for _ in range(args.repeats):
            for method, (run, _) in methods.items():
                start = time.perf_counter()
                for batch in batches:
                    run(batch)
                seconds[method].append(time.perf_counter() - start)
    keras_s = median(seconds["keras"])
    rows = []
    for method, values in seconds.items():
        s = median(values)
        rows.append({"model": name, "method": method, "n": len(images), "seconds": s,
                     "ips": len(images) / s, "vs_keras": keras_s / s,
                     "export_s": methods[method][1]})
    print(f"{name}: " + ", ".join(f"{r['method']} {r['ips']:,.0f}" for r in rows)
          + " patches/s", flush=True)
    return rows


def main(argv=None) -> int:
    args = _parse(argv)
    import tensorflow as tf

    from pcam.core.environment import usable_cores
    from pcam.data.h5read import open_split, read_images

    tf.config.set_visible_devices([], "GPU")  # the CPU's figures, for every runtime
    split = open_split(args.data_dir, args.split)
    n = min(args.max_samples, split.length)
    images = read_images(split, 0, n)
    print(f"machine: {machine()}")
    print(f"data: {args.split} of {args.data_dir.name}, {n} of {split.length} patches in "
          f"memory, batch {args.batch_size}, float32, alpha {args.alpha} (MobileNet); "
          f"{usable_cores()} usable cores, GPUs hidden")
    print(f"timing: {args.repeats} alternating passes per method; median\n", flush=True)
    rows = []
    for name in args.models:
        rows += bench_model(name, images, args)
    print()
    print(table(rows, [("model", "model", "s"), ("method", "runtime", "s"),
                       ("n", "patches", "d"), ("seconds", "seconds", ",.2f"),
                       ("ips", "patches/s", ",.1f"), ("vs_keras", "speed vs keras", ".2f"),
                       ("export_s", "export s", ",.1f")]))
    print("\nspeed vs keras: patches/s relative to the traced Keras model on the same batches "
          "(> 1: faster); export s: the seconds of model.export (tracing and conversion)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
