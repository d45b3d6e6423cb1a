"""What `precision="auto"` chooses on this machine, per model, and the timing it chose from.

For each model, the settings of `--preset` (default "full", whose precision is "auto")
are given to `pcam.train.precision.choose_precision`, as `pcam train` does before the
first epoch: it builds the model once per policy and times float32 against the
hardware's 16-bit policy (mixed_bfloat16 on a CPU with bfloat16 instructions,
mixed_float16 on a GPU with tensor cores), step by step in turn, and keeps float32
unless the other is at least `MIN_SPEEDUP` as fast. Its cache is bypassed (a
temporary folder), so every row is timed now. `bench_training.py --precisions`
measures the same question with longer, pipeline-fed timings.

Usage:
    python benchmarks/bench_precision.py
    python benchmarks/bench_precision.py --models mobilenet --alpha 0.5
"""

import argparse
import os
import sys
import tempfile
import time

from common import machine  # also puts pcam on sys.path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet", "resnet50"])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--alpha", type=float, help="MobileNet width (default: the preset's)")
    args = parser.parse_args(argv)
    os.environ["PCAM_CACHE_DIR"] = tempfile.mkdtemp(prefix="pcam-bench-precision-")

    from pcam.run.config import TrainConfig
    from pcam.train.precision import CPU_BF16_FLAGS, MIN_SPEEDUP, choose_precision, cpu_flags

    flags = sorted(set(CPU_BF16_FLAGS) & cpu_flags())
    print(f"machine: {machine()}; bfloat16 flags: {', '.join(flags) or 'none'}")
    print(f"preset {args.preset!r}, random weights; 16-bit kept when >= {MIN_SPEEDUP:g}x float32")
    for model in args.models:
        overrides = {"weights": None, "precision": "auto"}
        if model == "mobilenet" and args.alpha is not None:
            overrides["alpha"] = args.alpha
        config = TrainConfig.for_model(model, args.preset, **overrides)
        start = time.perf_counter()
        choice = choose_precision(config)
        seconds = choice.get("seconds_per_step", {})
        steps = ", ".join(f"{policy} {s:.3f} s/step" for policy, s in seconds.items())
        width = f" alpha {config.alpha:g}" if model == "mobilenet" else ""
        print(f"{model}{width}, batch {config.batch_size}: {choice['policy']} "
              f"({steps or 'not timed'}; {time.perf_counter() - start:.0f} s)\n"
              f"  {choice['reason']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
