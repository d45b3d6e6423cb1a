"""Training images/s fed by the pcam pipeline vs fed by in-memory tensors.

For each training phase of each model (MobileNet: "head" = frozen base and
"finetune" = top blocks unfrozen; ResNet50: "scratch"), one compiled model is
trained by `model.fit` from each feed in turn, alternating, in the same process:

  memory     the same patches read into a numpy array first,
             `tf.data.Dataset.from_tensor_slices(...).repeat().batch().prefetch()`
  pipeline   `pcam.data.pipeline.make_dataset` streaming the HDF5 file (shuffled,
             no cache, gzip inflated per block), with `--augment` as training
             uses it (default: TrainConfig's)

The train step is traced once first. Then, `--repeats` rounds: each feed runs
one `fit` of `--warmup` + `--steps` steps, and only the last `--steps` are
timed (the warm-up covers the pipeline's start: its shuffle buffer fills
before the first batch); the feed that goes first alternates by round, so a
change in machine load hits both. The figure is median images/s per feed and
the ratio pipeline / memory (goal >= 0.9: the pipeline is not the bottleneck).
Weights do not change speed, so the default is random initialisation (no
download); the frozen base still runs forward.

`--precisions float32 mixed_bfloat16` times every case under each Keras dtype
policy in turn (a model built under each) and prints the 16-bit policy's speed
over float32's per case and feed, with the CPU's bfloat16 flags: what
`precision="auto"` (pcam.train.precision) decides from its own short timing.

Usage:
    python -m pcam synthetic --data-dir /tmp/pcam-bench --train 8192 --valid 0 --test 0
    python benchmarks/bench_training.py --data-dir /tmp/pcam-bench
"""

import argparse
import sys
import time
from pathlib import Path

from common import machine, median, table

FEEDS = ("memory", "pipeline")


def _parse(argv=None) -> argparse.Namespace:
    from pcam.run.config import PRECISIONS, TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with a train split")
    parser.add_argument("--models", nargs="+", default=["mobilenet", "resnet50"],
                        help="registry names; transfer models run both phases")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps before each timed block (pipeline fill)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed blocks per feed, feeds alternating (median)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNet width multiplier")
    parser.add_argument("--weights", default="none",
                        help="none (default), imagenet or a weights file for transfer models")
    parser.add_argument("--precisions", nargs="+", default=["float32"],
                        choices=[p for p in PRECISIONS if p != "auto"],
                        help="dtype policies, each timed in turn (side by side)")
    parser.add_argument("--augment", default=",".join(TrainConfig.augment),
                        help="pipeline augmentations, comma-separated, or 'none'")
    parser.add_argument("--max-samples", type=int, default=4096,
                        help="patches both feeds cycle through (the in-memory copy's size)")
    parser.add_argument("--feeds", nargs="+", choices=FEEDS, default=list(FEEDS))
    args = parser.parse_args(argv)
    for name in ("steps", "warmup", "repeats", "batch_size", "max_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    args.augment = () if args.augment in ("", "none") else tuple(args.augment.split(","))
    args.weights = None if args.weights in ("none", "None") else args.weights
    return args


def cases(models: list[str]) -> list[tuple[str, str]]:
    """(model, phase) pairs: both phases of a transfer model, "scratch" otherwise."""
    from pcam.models import get_backbone

    found = []
    for name in models:
        recipe = get_backbone(name).recipe
        found += [(name, p) for p in (("head", "finetune") if recipe == "transfer"
                                      else ("scratch",))]
    return found


def make_feeds(split, args, pipeline_samples: int | None = None) -> dict:
    """The tf.data datasets of each feed in `args.feeds`.

    Args:
        split: an opened train `Split`.
        args: batch_size, max_samples, augment and feeds (as parsed here).
        pipeline_samples: patches the pipeline streams; None: the same first
            `max_samples` as the in-memory copy.

    Returns:
        {feed name: repeated, batched `tf.data.Dataset`}.
    """
    import numpy as np
    import tensorflow as tf

    from pcam.data.h5read import read_images, read_labels
    from pcam.data.pipeline import make_dataset

    n = min(args.max_samples, split.length)
    if n < args.batch_size:
        raise SystemExit(f"{split.x_path.name} holds {n} patches, fewer than one batch of "
                         f"{args.batch_size}; make a larger file or lower --batch-size")
    feeds = {}
    if "memory" in args.feeds:
        images = read_images(split, 0, n)
        labels = read_labels(split)[:n].astype(np.float32).reshape(-1, 1)
        feeds["memory"] = (tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
                           .batch(args.batch_size, drop_remainder=True)
                           .prefetch(tf.data.AUTOTUNE))
    if "pipeline" in args.feeds:
        # cache=False: full PCam train (7.2 GB) is never cached, so stream every epoch.
        feeds["pipeline"] = make_dataset(split, batch_size=args.batch_size, shuffle=True,
                                         seed=0, max_samples=pipeline_samples or n,
                                         augment=args.augment,
                                         cache=False, repeat=True, drop_remainder=True)
    return feeds


def time_fit(model, dataset, steps: int, warmup: int) -> float:
    """Seconds of `steps` training steps in one `model.fit`, after `warmup` untimed steps."""
    import keras

    class _Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == warmup - 1:
                float(logs["loss"])  # wait for the warm-up steps to finish
                self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])  # wait for the last step's result
            self.seconds = time.perf_counter() - self.start

    timer = _Timer()
    model.fit(dataset, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer])
    return timer.seconds


def bench_case(name: str, phase: str, feeds: dict, args, precision: str) -> list[dict]:
    """Rows of images/s per feed for one model phase; feeds alternate round by round."""
    import keras

    from pcam.evaluation.metrics import training_metrics
    from pcam.models import build_model, set_phase

    keras.backend.clear_session()
    keras.config.set_dtype_policy(precision)
    weights = args.weights if phase != "scratch" else None
    model = build_model(name, alpha=args.alpha if phase != "scratch" else 1.0, weights=weights)
    trainable = set_phase(model, phase)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy",
                  metrics=training_metrics())
    time_fit(model, next(iter(feeds.values())), 1, 1)  # trace the train step once
    seconds = {feed: [] for feed in feeds}
    for r in range(args.repeats):
        for feed in list(feeds)[:: 1 if r % 2 == 0 else -1]:  # alternate who goes first
            seconds[feed].append(time_fit(model, feeds[feed], args.steps, args.warmup))
    rows = []
    for feed, values in seconds.items():
        ips = [args.steps * args.batch_size / s for s in values]
        rows.append({"case": f"{name}/{phase}", "precision": precision, "feed": feed,
                     "trainable": trainable,
                     "ips": median(ips), "min": min(ips), "max": max(ips),
                     "step_ms": 1000 * median(values) / args.steps})
    return rows


def main(argv=None) -> int:
    args = _parse(argv)
    from pcam.data.h5read import open_split
    from pcam.train.precision import CPU_BF16_FLAGS, cpu_flags

    split = open_split(args.data_dir, "train")
    flags = sorted(f for f in cpu_flags() if f in CPU_BF16_FLAGS)
    print(f"machine: {machine()}; bfloat16 flags: {', '.join(flags) or 'none'}")
    print(f"data: train of {args.data_dir.name} ({split.length} patches; feeds cycle the first "
          f"{min(args.max_samples, split.length)}), batch {args.batch_size}, "
          f"{' and '.join(args.precisions)}, pipeline augment={','.join(args.augment) or 'none'}")
    print(f"timing: per feed {args.repeats} blocks of {args.steps} steps, each after "
          f"{args.warmup} untimed steps, feeds alternating; median images/s\n", flush=True)
    feeds = make_feeds(split, args)
    rows, ratios = [], []
    for name, phase in cases(args.models):
        for precision in args.precisions:
            start = time.perf_counter()
            case_rows = bench_case(name, phase, feeds, args, precision)
            by_feed = {r["feed"]: r for r in case_rows}
            if len(by_feed) == 2:
                ratio = by_feed["pipeline"]["ips"] / by_feed["memory"]["ips"]
                by_feed["pipeline"]["ratio"] = ratio
                ratios.append((f"{name}/{phase} {precision}", ratio))
            rows += case_rows
            figures = ", ".join(f"{r['feed']} {r['ips']:,.1f}" for r in case_rows)
            print(f"{name}/{phase} {precision}: {figures} images/s "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    print()
    print(table(rows, [("case", "model/phase", "s"), ("precision", "precision", "s"),
                       ("feed", "feed", "s"), ("trainable", "trainable params", ",d"),
                       ("ips", "images/s", ",.1f"), ("min", "min", ",.1f"),
                       ("max", "max", ",.1f"), ("step_ms", "ms/step", ",.0f"),
                       ("ratio", "pipeline/memory", ".3f")]))
    if len(args.precisions) > 1:
        base = args.precisions[0]
        print(f"\nspeed over {base}'s (same case and feed):")
        ref = {(r["case"], r["feed"]): r["ips"] for r in rows if r["precision"] == base}
        for r in rows:
            if r["precision"] != base:
                print(f"  {r['case']:<20} {r['feed']:<9} {r['precision']}: "
                      f"{r['ips'] / ref[(r['case'], r['feed'])]:.2f}x")
    if ratios:
        worst = min(ratios, key=lambda r: r[1])
        verdict = "meets" if worst[1] >= 0.9 else "misses"
        print(f"\nlowest ratio pipeline/memory: {worst[1]:.3f} ({worst[0]}); {verdict} the "
              f"goal of >= 0.9")
    return 0


if __name__ == "__main__":
    sys.exit(main())
