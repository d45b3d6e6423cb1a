"""Helpers shared by the benchmark scripts: timing, machine description, memory.

The scripts import this as `common` (they run as `python benchmarks/NAME.py`,
so this folder is on `sys.path`); importing it also puts the repository root
on `sys.path`, so `pcam` imports without an installed package.
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence; `ValueError` naming it when empty."""
    if not values:
        raise ValueError(f"median of an empty sequence: {values!r}")
    return float(statistics.median(values))


def time_repeats(run: Callable[[], object], repeats: int, *, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `repeats` calls of `run`, after `warmup` untimed calls.

    Args:
        run: the work to time; called with no arguments.
        repeats: timed calls, >= 1.
        warmup: untimed calls first (tracing, caches, thread pools), >= 0.

    Returns:
        The seconds of each timed call, in order.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats!r}, {warmup!r}")
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    """One line: CPU model, cores, memory, load, GPUs, Python and TensorFlow versions."""
    import tensorflow as tf

    from pcam.core.environment import hardware_info

    hw = hardware_info()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    gpus = ", ".join(hw["gpus"]) or "none"
    return (f"{hw['cpu']}, {hw['cpu_count']} cores, {hw['memory_gb']} GiB; load {load}; "
            f"GPUs: {gpus}; Python {platform.python_version()}, TensorFlow {tf.__version__}, "
            f"Keras {_keras_version()}")


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A plain-text table.

    Args:
        rows: dicts holding each column's key.
        columns: (key, header, format spec) per column, e.g. ("ips", "images/s", ",.0f").

    Returns:
        The table as lines joined by newlines, header first.
    """
    cells = [[header for _, header, _ in columns]]
    cells += [[format(row[key], spec) if row.get(key) is not None else "-"
               for key, _, spec in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(line, widths, strict=True)))
             for line in cells]
    return "\n".join(lines)


def run_child(name: str, command: Sequence[str]) -> dict | None:
    """Run a benchmark's child process (its own peak RSS); its last stdout line as JSON, or
    None after printing its error (TensorFlow's start-up lines left out)."""
    done = subprocess.run(list(command), capture_output=True, text=True)
    if done.returncode != 0:
        noise = ("I0000", "WARNING: All log", "oneDNN", "cuda", "cpu_feature_guard", "To enable")
        lines = [line for line in done.stderr.splitlines() if not line.startswith(noise)]
        print(f"{name}: failed\n" + "\n".join(lines[-15:]), file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _keras_version() -> str:
    import keras

    return keras.__version__
