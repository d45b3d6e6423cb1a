"""Several GPUs and several machines through `tf.distribute`.

Scaling rule (Goyal et al. 2017, "Accurate, Large Minibatch SGD"):
`batch_size` is the batch of ONE replica (a GPU, or the CPU), so on one
device nothing changes. With R replicas the global batch is
`batch_size * R` and both learning rates are multiplied by R; the cosine
schedule's warm-up (from-scratch runs) softens the first steps at the larger
rate. An epoch is still one pass over the data, in R times fewer steps.

Input: `MirroredStrategy` splits each global batch across the GPUs of one
machine. `MultiWorkerMirroredStrategy` gets the `DATA` auto-shard policy:
every worker reads the same seeded stream and keeps its own slice of each
global batch, so each patch is used once an epoch and every worker runs the
same number of steps (uneven file shards would leave workers waiting on each
other); the price is that every worker reads the whole split.

Writing: only the chief writes the run folder. Other workers run the same
callbacks (saving a distributed model is a collective step) into a temporary
folder that is deleted afterwards, the pattern of the Keras multi-worker guide.

Reference:
    - [Distributed training with Keras](https://www.tensorflow.org/tutorials/distribute/keras)
    - [Multi-worker training with Keras](https://www.tensorflow.org/tutorials/distribute/multi_worker_with_keras)
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from pcam.core import compat
from pcam.core.errors import PCamError
from pcam.run.config import STRATEGIES, TrainConfig

SCALING_RULE = ("global batch = batch_size x replicas; learning rates x replicas "
                "(linear scaling, Goyal et al. 2017)")


# The jobs of a MultiWorkerMirroredStrategy cluster (TF also knows "ps" and "evaluator",
# which that strategy does not train with).
JOBS = ("chief", "worker")


def tf_config() -> dict | None:
    """The parsed `TF_CONFIG` environment variable, or None when unset or empty.

    Checked as TensorFlow checks a cluster (`multi_worker_util._validate_cluster_spec`),
    so a bad one fails here, before a kernel starts, not inside the strategy:
    "cluster" maps "chief" (at most one task) and "worker" to lists of "host:port"
    addresses; "task", when given, names a job of the cluster and a whole-number
    "index" below that job's number of tasks.

    Returns:
        The value, with "task" filled in ({"type": "worker", "index": 0} when
        absent) and its index an int.

    Raises:
        PCamError: one line naming TF_CONFIG and what is wrong.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise PCamError(f"TF_CONFIG is not valid JSON ({error}): {text[:200]!r}") from None
    if not isinstance(value, dict) or not isinstance(value.get("cluster"), dict):
        raise PCamError(f'TF_CONFIG needs a "cluster" mapping, got {text[:200]!r}')
    cluster = value["cluster"]
    for job, tasks in cluster.items():
        if job not in JOBS:
            raise PCamError(f"TF_CONFIG: cluster job {job!r} is not one pcam trains with; use "
                            f"{' and '.join(JOBS)} (MultiWorkerMirroredStrategy)")
        if not (isinstance(tasks, list) and tasks and all(
                isinstance(a, str) and a.strip() for a in tasks)):
            raise PCamError(f'TF_CONFIG: cluster job "{job}" needs a list of "host:port" '
                            f"addresses, got {json.dumps(tasks)[:200]}")
    if not cluster:
        raise PCamError('TF_CONFIG: the "cluster" mapping is empty; list its "worker" tasks')
    if len(cluster.get("chief", [])) > 1:
        raise PCamError('TF_CONFIG: a cluster has at most one "chief" task')
    task = value.get("task", {})
    if not isinstance(task, dict):
        raise PCamError(f'TF_CONFIG: "task" must be a mapping like {{"type": "worker", '
                        f'"index": 0}}, got {json.dumps(task)[:200]}')
    kind, index = task.get("type", "worker"), task.get("index", 0)
    if not isinstance(kind, str) or kind not in cluster:
        raise PCamError(f"TF_CONFIG: task type {json.dumps(kind)[:100]} is not a job of the "
                        f"cluster ({', '.join(cluster)})")
    if isinstance(index, str) and index.strip().isdecimal():  # TensorFlow takes "1" too
        index = int(index)
    tasks = len(cluster[kind])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < tasks:
        what = "is beyond" if isinstance(index, int) and not isinstance(index, bool) else (
            "is no whole number for")
        raise PCamError(f"TF_CONFIG: task index {json.dumps(index)[:100]} {what} the "
                        f'{tasks} "{kind}" task(s) of the cluster; use 0 to {tasks - 1}')
    return {**value, "task": {**task, "type": kind, "index": index}}


def wants_multiworker(name: str) -> bool:
    """Whether strategy `name` makes a multi-worker run: "multiworker", or "auto" with a
    TF_CONFIG of several tasks (read only: TensorFlow is not started)."""
    cluster = tf_config()
    tasks = sum(len(v) for v in cluster["cluster"].values()) if cluster else 0
    return name == "multiworker" or (name == "auto" and tasks > 1)


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The `tf.distribute` strategy for `name`; create it before other TF work.

    `MultiWorkerMirroredStrategy` must exist before TensorFlow initialises its
    devices, so this only counts physical GPUs (that initialises nothing).

    Args:
        name: "auto" (TF_CONFIG with several tasks: multi-worker; else several
            GPUs: mirrored; else the default one-device strategy), "mirrored"
            (all GPUs of this machine, or all logical CPUs when there is no
            GPU), "multiworker" (TF_CONFIG describes the cluster) or "none".

    Returns:
        A `tf.distribute.Strategy`; `num_replicas_in_sync` is its replica count.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    cluster = tf_config()
    if wants_multiworker(name):
        if cluster is None:
            raise PCamError("--strategy multiworker needs TF_CONFIG describing the cluster "
                            "(see the README, 'Several GPUs and machines')")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        kind = "GPU" if gpus else "CPU"  # CPUs: logical devices, used by the tests
        devices = [d.name for d in tf.config.list_logical_devices(kind)]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def is_multiworker(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` spans several processes (`MultiWorkerMirroredStrategy`)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes results: the "chief" task, else worker 0.

    Args:
        strategy: a strategy from `make_strategy`; any single-process strategy
            is its own chief. None reads TF_CONFIG directly.
    """
    if strategy is not None and not is_multiworker(strategy):
        return True
    cluster = tf_config()
    if cluster is None:
        return True
    kind, index = cluster["task"]["type"], cluster["task"]["index"]  # checked by tf_config
    if "chief" in cluster["cluster"]:
        return kind == "chief"
    return kind == "worker" and index == 0


def scale_config(config: TrainConfig, replicas: int) -> TrainConfig:
    """`config` with the global batch and learning rates for `replicas` replicas.

    Args:
        config: run settings; `batch_size` is per replica.
        replicas: `strategy.num_replicas_in_sync`, >= 1.

    Returns:
        A copy with `batch_size`, `learning_rate` and `finetune_learning_rate`
        multiplied by `replicas` (the same config when `replicas` is 1).
    """
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas must be an integer >= 1, got {replicas!r}")
    if replicas == 1:
        return config
    return config.replace(batch_size=config.batch_size * replicas,
                          learning_rate=config.learning_rate * replicas,
                          finetune_learning_rate=config.finetune_learning_rate * replicas)


def describe(strategy: tf.distribute.Strategy, config: TrainConfig, policy: str) -> dict:
    """The record's "distribution" entry: strategy, replicas and effective values.

    Args:
        policy: the Keras dtype policy the run trains in (what "auto" chose).
    """
    scaled = scale_config(config, strategy.num_replicas_in_sync)
    cluster = tf_config() if is_multiworker(strategy) else None
    return {
        "strategy": _strategy_name(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "workers": sum(len(v) for v in cluster["cluster"].values()) if cluster else 1,
        "precision": policy,
        "per_replica_batch": config.batch_size,
        "global_batch": scaled.batch_size,
        "learning_rate": scaled.learning_rate,
        "finetune_learning_rate": scaled.finetune_learning_rate,
        "rule": SCALING_RULE,
    }


def _strategy_name(strategy: tf.distribute.Strategy) -> str:
    # The class behind tf.distribute.MultiWorkerMirroredStrategy is named
    # CollectiveAllReduceStrategy; records use the public names.
    if is_multiworker(strategy):
        return "MultiWorkerMirroredStrategy"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "MirroredStrategy"
    if strategy is tf.distribute.get_strategy():
        return "default (one device)"
    return type(strategy).__name__


def distribute_input(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy):
    """Mark a global-batch dataset so that `strategy` uses each example once.

    Multi-worker: the `DATA` auto-shard policy (each worker keeps its slice
    of every global batch; the stream must be the same on every worker, which
    pcam's seeded pipeline is). Otherwise the dataset is returned unchanged
    (a single machine's strategy splits each batch itself).
    """
    if not is_multiworker(strategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def fit_ready(model, strategy: tf.distribute.Strategy):
    """Let `model.fit`/`evaluate` run under `MultiWorkerMirroredStrategy`; returns `model`.

    Keras 3 fails there (keras-team/keras#20585); `pcam.core.compat.multiworker_fit`
    gives the model two small overrides. Other strategies keep Keras' own code.

    Raises:
        RuntimeError: multi-worker only, when the installed Keras is not the
            version that workaround was verified with.
    """
    if not is_multiworker(strategy):
        return model
    return compat.multiworker_fit(model, strategy)


def worker_folder(target: Path, strategy: tf.distribute.Strategy) -> Path:
    """The folder this process writes the run to: `target` on the chief.

    Other workers get a new temporary folder (remove it with
    `remove_worker_folder`), seeded with the chief's record and last
    checkpoint when `target` is visible (a shared file system), so that a
    resumed run takes the same steps on every worker.
    """
    if is_chief(strategy):
        return Path(target)
    folder = Path(tempfile.mkdtemp(prefix=f"pcam-worker-{Path(target).name}-"))
    for name in ("record.json", "checkpoints/last.keras", "checkpoints/best.keras"):
        if (Path(target) / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(target) / name, folder / name)
    return folder


def remove_worker_folder(folder: Path, strategy: tf.distribute.Strategy) -> None:
    """Delete a non-chief worker's temporary folder; nothing on the chief."""
    if not is_chief(strategy):
        shutil.rmtree(folder, ignore_errors=True)
