"""What a run ran on: package versions, git state and hardware, for its record."""

import importlib.metadata
import os
import platform
import subprocess
import sys

from pcam.core.paths import PROJ_ROOT

PACKAGES = ("tensorflow", "keras", "numpy", "h5py", "scikit-learn", "scipy", "pandas")


def environment_info() -> dict:
    """Versions, git commit and dirtiness, and hardware, as plain JSON data."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "git": git_state(),
        "hardware": hardware_info(),
    }


def git_state() -> dict:
    """{"commit": sha or None, "dirty": bool or None}; None where git is unavailable."""
    try:
        commit = _git("rev-parse", "HEAD")
        # Untracked files (data) do not make a run irreproducible, nor do changes under
        # results/: what runs write there (records, the study's plan.json) is their
        # output, and the settings it fed a run are in that run's record.
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".",
                          ":(exclude)results"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def hardware_info() -> dict:
    """CPU model, logical cores (all, and those this process may use), memory in GiB
    and the GPUs TensorFlow sees."""
    import psutil
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append(details.get("device_name", device.name))
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_used": usable_cores(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpus,
    }


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: `taskset`, a container's limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=PROJ_ROOT, capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or sys.platform
