"""GPU check: training and inference images/s on synthetic PCam, in under 8 minutes.

Steps (each printed with its seconds):
  1. write a synthetic test split (inference) and time the generator; size
     the train split to what it writes in `--gen-seconds` (at most 262,144,
     the full PCam train size; the rate is printed)
  2. per model phase (MobileNet head and fine-tune, ResNet50 from scratch),
     under a mixed-precision policy: images/s of `model.fit` fed by the pcam
     pipeline (streaming the whole train file, augmented as in training) and
     by in-memory tensors, and their ratio (bench_training.py's method)
  3. inference images/s of `pcam.evaluation.evaluate.predict_split` (single and TTA)
  4. when more than one GPU is visible: the pipeline-fed figure again under a
     multi-GPU strategy (`pcam.train.distribute.make_strategy` when present, else
     `tf.distribute.MirroredStrategy`) with the batch scaled by the replicas
  5. a summary with the minutes one full PCam epoch would take: 262,144 /
     train images/s, and the minutes to score valid (32,768) at the inference rate

Run through benchmarks/gpu_check.sh (which installs wheels when given them).
`--smoke` shrinks everything for a dry run on a CPU (about 2 minutes on 2 cores).
Figures also go to `--json FILE` when given.
"""

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from bench_training import bench_case, cases, make_feeds
from common import machine, median, table

FULL_TRAIN, FULL_VALID = 262_144, 32_768


def _parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a CPU dry run")
    parser.add_argument("--work-dir", type=Path, help="data folder (default: a temporary one)")
    parser.add_argument("--models", nargs="+", default=["mobilenet", "resnet50"])
    parser.add_argument("--precision", default="mixed_bfloat16",
                        choices=("float32", "mixed_float16", "mixed_bfloat16"))
    parser.add_argument("--batch-size", type=int, default=256, help="per-GPU batch")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gen-seconds", type=float, default=100,
                        help="budget for writing the train split (sizes it)")
    parser.add_argument("--test-size", type=int, default=8192)
    parser.add_argument("--memory-samples", type=int, default=32_768,
                        help="patches of the in-memory feed")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch_size, args.steps, args.repeats, args.warmup = 16, 2, 2, 1
        args.gen_seconds, args.test_size, args.memory_samples = 5, 64, 256
        args.alpha = 0.25
    return args


def _step(label: str):
    print(f"\n== {label}", flush=True)
    return time.perf_counter()


def generate(folder: Path, args) -> dict:
    """Write test, then a train split sized by the measured generator rate."""
    from pcam.data.synthetic import write_synthetic

    start = time.perf_counter()
    write_synthetic(folder / "test", {"test": args.test_size}, seed=1)
    rate = args.test_size / (time.perf_counter() - start)
    floor = 1024 if args.smoke else 32_768
    n_train = int(min(FULL_TRAIN, max(floor, rate * args.gen_seconds)) // 1024 * 1024)
    start = time.perf_counter()
    write_synthetic(folder / "train", {"train": n_train}, seed=0)
    train_rate = n_train / (time.perf_counter() - start)
    print(f"generator: {rate:,.0f} patches/s (test, {args.test_size}), {train_rate:,.0f} "
          f"patches/s (train, {n_train}); full PCam train would take "
          f"{FULL_TRAIN / train_rate / 60:.1f} min to generate", flush=True)
    return {"generator_patches_per_s": round(train_rate, 1), "train_patches": n_train,
            "test_patches": args.test_size}


def train_figures(split, args, strategy=None, batch_size=None) -> list[dict]:
    """bench_training rows for every model phase; pipeline streams the whole file."""
    import contextlib

    batch = batch_size or args.batch_size
    opts = SimpleNamespace(batch_size=batch, steps=args.steps, repeats=args.repeats,
                           warmup=args.warmup,
                           alpha=args.alpha, weights=None, augment=("dihedral", "shift"),
                           max_samples=args.memory_samples,
                           feeds=["memory", "pipeline"] if strategy is None else ["pipeline"])
    feeds = make_feeds(split, opts, pipeline_samples=split.length)
    rows = []
    for name, phase in cases(args.models):
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            case_rows = bench_case(name, phase, feeds, opts)
        by_feed = {r["feed"]: r for r in case_rows}
        if len(by_feed) == 2:
            by_feed["pipeline"]["ratio"] = by_feed["pipeline"]["ips"] / by_feed["memory"]["ips"]
        for r in case_rows:
            r["epoch_min"] = FULL_TRAIN / r["ips"] / 60
            print(f"{r['case']:<20} {r['feed']:<9} {r['ips']:>10,.0f} images/s", flush=True)
        rows += case_rows
    return rows


def inference_figures(split, args) -> list[dict]:
    """predict_split single and TTA images/s per model (median over repeats)."""
    from pcam.evaluation.evaluate import predict_split
    from pcam.models import build_model

    rows = []
    for name in args.models:
        model = build_model(name, alpha=args.alpha if name.startswith("mobilenet") else 1.0,
                            weights=None)
        predict_split(model, split, max_samples=args.batch_size, tta=True)  # warm-up
        single, tta = [], []
        for _ in range(args.repeats):
            out = predict_split(model, split, tta=True)
            single.append(out["inference"]["seconds"])
            tta.append(out["inference"]["tta_seconds"])
        single_ips = split.length / median(single)
        rows.append({"model": name, "single_ips": single_ips,
                     "tta_ips": split.length / median(tta),
                     "valid_min": FULL_VALID / single_ips / 60})
        print(f"{name}: single {rows[-1]['single_ips']:,.0f}, TTA {rows[-1]['tta_ips']:,.0f} "
              f"images/s", flush=True)
    return rows


def multi_gpu(split, args, single_rows) -> list[dict] | None:
    """The pipeline-fed rows again under a multi-GPU strategy; None with one GPU."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) < 2:
        print(f"{len(gpus)} GPU visible: multi-GPU line skipped")
        return None
    if importlib.util.find_spec("pcam.train.distribute") is not None:
        from pcam.train.distribute import make_strategy

        strategy, how = make_strategy("mirrored"), "pcam.train.distribute.make_strategy('mirrored')"
    else:
        strategy, how = tf.distribute.MirroredStrategy(), "tf.distribute.MirroredStrategy()"
    replicas = strategy.num_replicas_in_sync
    print(f"{how}: {replicas} replicas, global batch {args.batch_size * replicas}")
    rows = train_figures(split, args, strategy, batch_size=args.batch_size * replicas)
    single = {r["case"]: r["ips"] for r in single_rows if r["feed"] == "pipeline"}
    for r in rows:
        r["scaling"] = r["ips"] / single[r["case"]]
        r["replicas"] = replicas
    return rows


def main(argv=None) -> int:
    args = _parse(argv)
    began = time.perf_counter()
    import keras

    from pcam.data.h5read import open_split

    print(f"machine: {machine()}")
    print(f"settings: {args.precision}, batch {args.batch_size}/GPU, {args.steps} steps x "
          f"{args.repeats} timed rounds, models {' '.join(args.models)}"
          + (" (SMOKE sizes)" if args.smoke else ""), flush=True)
    keras.config.set_dtype_policy(args.precision)
    folder = args.work_dir or Path(tempfile.mkdtemp(prefix="pcam-gpu-check-"))
    figures = {"machine": machine(), "smoke": args.smoke, "precision": args.precision,
               "batch_size": args.batch_size}
    try:
        t = _step("1. synthetic data")
        figures["data"] = generate(folder, args)
        print(f"({time.perf_counter() - t:.0f} s)")
        train = open_split(folder / "train", "train")
        test = open_split(folder / "test", "test")

        t = _step("2. training images/s (pipeline vs in-memory)")
        figures["training"] = train_figures(train, args)
        print(f"({time.perf_counter() - t:.0f} s)")

        t = _step("3. inference images/s (predict_split)")
        figures["inference"] = inference_figures(test, args)
        print(f"({time.perf_counter() - t:.0f} s)")

        t = _step("4. multi-GPU")
        figures["multi_gpu"] = multi_gpu(train, args, figures["training"])
        print(f"({time.perf_counter() - t:.0f} s)")
    finally:
        if args.work_dir is None:
            shutil.rmtree(folder, ignore_errors=True)

    _step("5. summary")
    print(table(figures["training"], [
        ("case", "model/phase", "s"), ("feed", "feed", "s"), ("ips", "images/s", ",.0f"),
        ("step_ms", "ms/step", ",.1f"), ("ratio", "pipeline/memory", ".3f"),
        ("epoch_min", "min per PCam epoch", ",.1f")]))
    print()
    print(table(figures["inference"], [
        ("model", "model", "s"), ("single_ips", "eval images/s", ",.0f"),
        ("tta_ips", "TTA images/s", ",.0f"), ("valid_min", "min to score valid", ",.2f")]))
    if figures["multi_gpu"]:
        print()
        print(table(figures["multi_gpu"], [
            ("case", "model/phase", "s"), ("replicas", "GPUs", "d"),
            ("ips", "images/s", ",.0f"), ("scaling", "vs 1 GPU", ".2f")]))
    figures["seconds"] = round(time.perf_counter() - began, 1)
    print(f"\nfull PCam epoch = {FULL_TRAIN:,} train patches at the pipeline-fed rate above "
          f"+ {FULL_VALID:,} valid patches scored; total check time {figures['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
