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

from pcam.config import STRATEGIES, TrainConfig
from pcam.errors import PCamError

SCALING_RULE = ("global batch = batch_size x replicas; learning rates x replicas "
                "(linear scaling, Goyal et al. 2017)")


def tf_config() -> dict | None:
    """The parsed `TF_CONFIG` environment variable, or None when unset or empty.

    Raises:
        PCamError: when it is set but is not JSON with a "cluster" mapping.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise PCamError(f"TF_CONFIG is not valid JSON ({error}): {text[:200]!r}") from error
    if not isinstance(value, dict) or not isinstance(value.get("cluster"), dict):
        raise PCamError(f'TF_CONFIG needs a "cluster" mapping, got {text[:200]!r}')
    return value


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
    tasks = sum(len(v) for v in cluster["cluster"].values()) if cluster else 0
    if name == "multiworker" or (name == "auto" and tasks > 1):
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
    task = cluster.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
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


def describe(strategy: tf.distribute.Strategy, config: TrainConfig) -> dict:
    """The record's "distribution" entry: strategy, replicas and effective values."""
    scaled = scale_config(config, strategy.num_replicas_in_sync)
    cluster = tf_config() if is_multiworker(strategy) else None
    return {
        "strategy": _strategy_name(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "workers": sum(len(v) for v in cluster["cluster"].values()) if cluster else 1,
        "precision": config.precision,
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

    Two Keras 3 steps fail across workers (keras-team/keras#20585), so this
    model (not Keras) gets two small overrides; other strategies keep Keras'
    own code:

    - before building its loss and metrics Keras all-reduces the first input
      batch only to learn its shapes; one local replica's batch has them too;
    - Keras averages each step's logs over replicas with `reduce(MEAN, axis=0)`,
      which fails on scalars; the logs get a leading axis of length 1, so the
      same reduce gives the same mean over replicas as on one machine.
    """
    if not is_multiworker(strategy) or getattr(model, "_pcam_fit_ready", False):
        return model

    def build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:  # as Keras does: peek at the first batch
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def with_axis(step):
        return lambda data: tf.nest.map_structure(lambda v: tf.expand_dims(v, 0), step(data))

    model._maybe_symbolic_build = build
    model.train_step, model.test_step = with_axis(model.train_step), with_axis(model.test_step)
    model._pcam_fit_ready = True
    return model


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


def describe_devices(check: bool = True) -> str:
    """One line on the GPUs visible and what `--strategy auto` does with them.

    Args:
        check: with more than one GPU, also all-reduce a tensor under
            `MirroredStrategy` and say whether the sum came out right.

    Returns:
        e.g. "2 GPUs (NVIDIA H200 x2): auto -> MirroredStrategy, 2 replicas;
        global batch = batch_size x 2, learning rates x 2; all-reduce ok".
    """
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "no GPU visible: auto -> default strategy on the CPU, 1 replica"
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
             for g in gpus]
    kinds = ", ".join(f"{n} x{names.count(n)}" for n in dict.fromkeys(names))
    if len(gpus) == 1:
        return f"1 GPU ({kinds}): auto -> default strategy, 1 replica (no multi-GPU check)"
    strategy = tf.distribute.MirroredStrategy()
    replicas = strategy.num_replicas_in_sync
    line = (f"{len(gpus)} GPUs ({kinds}): auto -> MirroredStrategy, {replicas} replicas; "
            f"global batch = batch_size x {replicas}, learning rates x {replicas}")
    if check:  # replica i contributes i + 1, so the sum is known
        def ids():
            return tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group + 1,
                           tf.float32)

        total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(ids), axis=None)
        expected = replicas * (replicas + 1) / 2
        line += "; all-reduce ok" if float(total) == expected else (
            f"; all-reduce WRONG ({float(total)} != {expected})")
    return line
