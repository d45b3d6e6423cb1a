"""Seconds to score one split with confidence intervals: `evaluate_predictions` on N patches.

Every metric of a split (ROC/PR AUC, accuracy, precision, recall, F1, calibration) with
its bootstrap 95% interval (`--boot` resamples over patches, or over slides with
`--slides`), as `pcam evaluate` and the report compute them; random labels and
probabilities of a fair model. Median of `--repeats` timings after one untimed call.

Usage:
    python benchmarks/bench_metrics.py                     # a full PCam split, 32,768 patches
    python benchmarks/bench_metrics.py --patches 262144 --slides 400
"""

import argparse
import sys

import numpy as np
from common import median, time_repeats  # also puts pcam on sys.path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=32_768)
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--slides", type=int, default=0, help="resample N slides (0: patches)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from pcam.evaluation.metrics import evaluate_predictions

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, args.patches)
    p = (1 / (1 + np.exp(-(rng.normal(size=args.patches) + 1.5 * (2 * y - 1))))).astype(
        np.float32)
    slides = (np.array([f"s{i % args.slides}" for i in range(args.patches)])
              if args.slides else None)
    seconds = time_repeats(lambda: evaluate_predictions(y, p, 0.5, n_boot=args.boot,
                                                        slides=slides), args.repeats)
    unit = f"{args.slides} slides" if args.slides else "patches"
    print(f"evaluate_predictions: {args.patches:,} patches, {args.boot} resamples over {unit}: "
          f"median {median(seconds):.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
