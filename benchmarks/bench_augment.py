"""Cost of the training augmentations per batch: step by step (as first written) against fused.

Rows, each the median of `--repeats` timings of `--iterations` batches, on real-looking
synthetic patches (batch 64 by default), inside a `tf.function` as `tf.data` runs them:
  reference       tests/augment_reference.py: each step on its own, uint8 in and out
  fused           pcam.data.augment with jit=False: one pixel gather for the geometry,
                  one 3x3 matrix per image for the stain jitter, plain TensorFlow ops
  fused+XLA       the same, XLA-compiled into one function (jit=True; the default
                  where XLA runs)
for all four augmentations together, and for each alone. The ratio column is each
row's time over the reference's. One process, one core's worth of threads unless
`taskset` says otherwise; outputs agree (tests/test_augment.py).

Usage:
    python benchmarks/bench_augment.py
    python benchmarks/bench_augment.py --batch-size 64 --repeats 7
"""

import argparse
import sys

from common import ROOT, median, time_repeats  # also puts pcam on sys.path

sys.path.insert(0, str(ROOT / "tests"))  # the step-by-step reference lives with the tests


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timings per row (median)")
    parser.add_argument("--iterations", type=int, default=20, help="batches per timing")
    args = parser.parse_args(argv)

    import tensorflow as tf
    from augment_reference import reference_augment

    from pcam.data import augment
    from pcam.data.spec import AUGMENTATIONS
    from pcam.data.synthetic import make_patches

    x = tf.constant(make_patches(args.batch_size, seed=0)[0])
    seed = tf.constant([1, 2], tf.int64)
    xla = augment.xla_available()
    print(f"batch {args.batch_size}, median of {args.repeats} x {args.iterations} batches; "
          f"XLA {'available' if xla else 'not available'}")
    print(f"{'augmentations':<22} {'variant':<10} {'ms/batch':>9} {'us/patch':>9} {'ratio':>6}")
    for names in [list(AUGMENTATIONS)] + [[n] for n in AUGMENTATIONS]:
        variants = {"reference": tf.function(lambda a, s, n=names: reference_augment(a, s, n))}
        variants["fused"] = _wrap(augment.build_augmenter(names, jit=False))
        if xla:
            variants["fused+XLA"] = _wrap(augment.build_augmenter(names, jit=True))
        times = {}
        for variant, fn in variants.items():
            seconds = time_repeats(lambda fn=fn: [fn(x, seed) for _ in range(args.iterations)],
                                   args.repeats, warmup=1)
            times[variant] = median(seconds) / args.iterations
        label = "all four" if len(names) > 1 else names[0]
        for variant, t in times.items():
            print(f"{label:<22} {variant:<10} {t * 1e3:>9.2f} {t * 1e6 / args.batch_size:>9.1f} "
                  f"{t / times['reference']:>6.2f}", flush=True)
    return 0


def _wrap(augmenter):
    import tensorflow as tf

    return tf.function(lambda a, s: augmenter(a, seed=s))


if __name__ == "__main__":
    sys.exit(main())
