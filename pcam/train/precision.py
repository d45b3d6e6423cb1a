"""`precision="auto"`: the Keras dtype policy that trains this model fastest here, measured.

Mixed precision computes in 16-bit floats while weights and the loss stay
float32. Whether it is faster depends on the hardware and on the model: on a
CPU with bfloat16 instructions (AVX512-BF16, AMX) ResNet50 trains up to twice as
fast in `mixed_bfloat16`, while MobileNet's depthwise convolutions gain nothing;
without them bfloat16 is emulated and slower. GPUs of compute capability 7.0 or
more have float16 tensor cores (`mixed_float16`).

So "auto" times a few training steps of the run's own model (random weights,
its batch size, its training phase) in float32 and in the hardware's 16-bit
policy, the two taking turns step by step, and keeps float32 unless the other
is at least `MIN_SPEEDUP` times as fast. Hardware without 16-bit instructions
keeps float32 without timing. A choice is cached per machine and model settings
(`pcam.core.paths.cache_dir()`, `precision.json`) and recorded with the run
(`environment.precision`).
"""

import json
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from pcam.core.environment import hardware_info
from pcam.core.fileio import write_text
from pcam.core.paths import cache_dir
from pcam.models import build_model, get_backbone, set_phase
from pcam.run.config import TrainConfig
from pcam.train.distribute import wants_multiworker

MIN_SPEEDUP = 1.1  # a 16-bit policy must beat float32 by this much (noise, rounding risk)
WARMUP, STEPS = 2, 6  # untimed steps (tracing), then timed ones (median)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 (Linux names), Arm (Features)
# The settings that decide a model's speed (the rest, e.g. learning rate, do not).
SPEED_FIELDS = ("model", "alpha", "image_size", "head_units", "batch_size",
                "finetune_layers")
CACHE_FILE = "precision.json"

_current: dict | None = None  # the choice `apply_precision` made last


def apply_precision(config: TrainConfig) -> dict:
    """Set Keras' global dtype policy for `config`: its own, or the one "auto" chooses.

    Returns:
        The choice, as the run's record keeps it: requested, policy, reason,
        and for a timed choice device, seconds_per_step {policy: s}, cached.
    """
    global _current
    if config.precision == "auto":
        choice = choose_precision(config)
        print(f"precision auto: {choice['policy']} ({choice['reason']})", flush=True)
    else:
        choice = explicit_choice(config.precision)
    keras.config.set_dtype_policy(choice["policy"])
    _current = choice
    return choice


def explicit_choice(policy: str) -> dict:
    """The record's entry for a policy the run's settings name (no choice was made)."""
    return {"requested": policy, "policy": policy, "reason": "set in the run's settings"}


def current_choice() -> dict | None:
    """The choice `apply_precision` made, while Keras' global policy is still its policy."""
    if _current is not None and keras.config.dtype_policy().name == _current["policy"]:
        return _current
    return None


def choose_precision(config: TrainConfig) -> dict:
    """Time float32 against the hardware's 16-bit policy for this model (or read the cache).

    Returns:
        {"requested": "auto", "policy", "reason", "device"}, plus
        "seconds_per_step" and "cached" when the choice was timed.
    """
    if wants_multiworker(config.strategy):
        return {"requested": "auto", "policy": "float32", "reason": (
            "a multi-worker run is not timed (TensorFlow must not start before its collective "
            "ops are set up, and every worker must train in one policy); pass --precision "
            "to choose another")}
    device, candidate, absent = sixteen_bit_policy()
    if candidate is None:
        return {"requested": "auto", "policy": "float32", "device": device, "reason": absent}
    key = _cache_key(config, device)
    cache = _read_cache()
    entry = cache.get(key)
    if entry is not None and _valid_entry(entry, candidate):
        return {**entry, "cached": True}
    if entry is not None:
        print(f"warning: ignoring a malformed entry for this model in "
              f"{cache_dir() / CACHE_FILE}; precision is timed again", file=sys.stderr)
    seconds = seconds_per_step(config, ("float32", candidate))
    speedup = seconds["float32"] / seconds[candidate]
    policy = candidate if speedup >= MIN_SPEEDUP else "float32"
    verdict = ("chosen" if policy == candidate else
               f"float32 kept: {candidate} must be {MIN_SPEEDUP:g}x as fast")
    reason = (f"{candidate} trained {speedup:.2f}x as fast as float32 on {device}, "
              f"medians of {STEPS} alternating steps of batch {config.batch_size}; {verdict}")
    choice = {"requested": "auto", "policy": policy, "device": device, "reason": reason,
              "seconds_per_step": {k: round(v, 5) for k, v in seconds.items()}}
    _write_cache({**cache, key: choice})
    return {**choice, "cached": False}


def sixteen_bit_policy() -> tuple[str, str | None, str]:
    """(device, the 16-bit policy its hardware runs natively or None, why None)."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        name = details.get("device_name", "GPU")
        capability = details.get("compute_capability")
        if capability and tuple(capability) >= (7, 0):
            return name, "mixed_float16", ""
        return name, None, f"{name} (compute capability {capability}) has no float16 tensor cores"
    cpu = hardware_info()["cpu"]
    flags = cpu_flags()
    if any(flag in flags for flag in CPU_BF16_FLAGS):
        return cpu, "mixed_bfloat16", ""
    return cpu, None, (f"{cpu} has no bfloat16 instructions ({', '.join(CPU_BF16_FLAGS)}), "
                       "so bfloat16 would be emulated")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's instruction-set flags (Linux `flags`, Arm `Features`); empty elsewhere."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def seconds_per_step(config: TrainConfig, policies: tuple[str, ...]) -> dict[str, float]:
    """Median seconds of one training step of `config`'s model under each policy.

    One model per policy is built with random weights (speed does not depend on
    them), set to the phase that trains longest (fine-tune, or from scratch) and
    trained on the same random patches of the run's batch size. After `WARMUP`
    steps each, the models take turns, step by step, so a change in machine
    load falls on all of them alike. Keras' global policy is restored.
    """
    previous = keras.config.dtype_policy()
    recipe = get_backbone(config.model).recipe
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (config.batch_size, 96, 96, 3), dtype=np.uint8)
    y = rng.integers(0, 2, (config.batch_size, 1)).astype(np.float32)
    try:
        models = {}
        for policy in policies:
            keras.config.set_dtype_policy(policy)
            model = build_model(config.model, alpha=config.alpha, weights=None,
                                head_units=config.head_units, dropout=config.dropout,
                                image_size=config.image_size)
            set_phase(model, "finetune" if recipe == "transfer" else "scratch",
                      finetune_layers=config.finetune_layers)
            model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
            for _ in range(WARMUP):
                model.train_on_batch(x, y)
            models[policy] = model
        times = {policy: [] for policy in policies}
        for _ in range(STEPS):
            for policy, model in models.items():
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times[policy].append(time.perf_counter() - start)
        return {policy: statistics.median(t) for policy, t in times.items()}
    finally:
        keras.config.set_dtype_policy(previous)
        keras.backend.clear_session()


def _valid_entry(entry, candidate: str) -> bool:
    """Whether a cached choice has the shape `choose_precision` writes and a policy it picks."""
    keys = {"requested", "policy", "device", "reason", "seconds_per_step"}
    if not isinstance(entry, dict) or set(entry) != keys:
        return False
    seconds = entry["seconds_per_step"]
    return (entry["requested"] == "auto" and entry["policy"] in ("float32", candidate)
            and isinstance(entry["reason"], str) and isinstance(entry["device"], str)
            and isinstance(seconds, dict) and set(seconds) == {"float32", candidate}
            and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0
                    for v in seconds.values()))


def _cache_key(config: TrainConfig, device: str) -> str:
    values = config.to_dict()
    speed = {name: values[name] for name in SPEED_FIELDS}
    return json.dumps({"device": device, "tensorflow": tf.__version__, **speed}, sort_keys=True)


def _read_cache() -> dict:
    path = cache_dir() / CACHE_FILE
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:  # a damaged cache is re-measured, not fatal
        print(f"warning: ignoring {path} ({error}); precision is timed again",
              file=sys.stderr)
        return {}
    if not isinstance(cache, dict):
        print(f"warning: ignoring {path} (not a JSON object); precision is timed again",
              file=sys.stderr)
        return {}
    return cache


def _write_cache(cache: dict) -> None:
    path = cache_dir() / CACHE_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(cache, indent=1) + "\n")
    except OSError as error:  # an unwritable cache only costs timing again next run
        print(f"warning: could not cache the precision choice in {path}: {error}",
              file=sys.stderr)
