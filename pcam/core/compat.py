"""The private internals of other libraries that pcam cannot avoid, in one place.

No other module of `pcam` touches a private attribute of h5py or Keras. Each
use here is listed in `PATCHES`: what is touched, in which package, the exact
version it was verified against (the one pinned in `requirements.txt`), why
(the upstream issue or pull request) and what to re-check on an upgrade.

Each patch checks the installed version at the point of use and raises
`RuntimeError` when it differs from the verified one, rather than warning:

- both packages are pinned exactly, so a different version is an environment
  nobody tested, and private attributes change without notice or deprecation;
- when they change under a patch, what breaks is silent or far from the
  cause: a data race inside HDF5 that corrupts or hangs reads now and then,
  or (once Keras fixes its own reduce) logs averaged over the wrong axis
  across workers. A warning would scroll past in a long run's log;
- the check costs nothing where the patch is not used: one-machine training
  never looks at the Keras version, files that are not gzip-only never look
  at the h5py one.

To move to a new version: re-check what the entry's `recheck` names, run
`tests/test_compat.py`, `tests/test_pipeline.py` and `tests/test_distribute.py`
with it, then set `verified` here and the pin in `requirements.txt`.
"""

import importlib
import importlib.metadata
from dataclasses import dataclass

import h5py
import tensorflow as tf


@dataclass(frozen=True)
class Patch:
    """One use of another library's private internals.

    Args:
        package: whose internals are used, by import (and distribution) name.
        verified: the exact version the use was checked against.
        touches: the private names used.
        why: the upstream issue or pull request that makes it necessary.
        recheck: what to look at again before trusting a new version.
    """

    package: str
    verified: str
    touches: str
    why: str
    recheck: str


PATCHES = {
    "h5py_chunk_lock": Patch(
        package="h5py",
        verified="3.14.0",
        touches="h5py._objects.phil (h5py's global reentrant lock)",
        why="h5py <= 3.14 does not take phil in DatasetID.read_direct_chunk (fixed upstream "
            "in h5py PR #2764); concurrent calls from tf.data threads then fail or hang in HDF5",
        recheck="whether read_direct_chunk now takes phil itself (then drop this lock) and "
                "that h5py._objects.phil is still the lock h5py's own calls take",
    ),
    "keras_multiworker_fit": Patch(
        package="keras",
        verified="3.15.1",
        touches="keras.Model._maybe_symbolic_build (replaced), keras.Model._symbolic_build "
                "(called)",
        why="keras-team/keras#20585: Keras 3 fit/evaluate fail under "
            "MultiWorkerMirroredStrategy (the first batch is all-reduced to learn its shapes; "
            "scalar logs are reduced with reduce(MEAN, axis=0))",
        recheck="TensorFlowTrainer._maybe_symbolic_build and reduce_per_replica in "
                "keras/src/backend/tensorflow/trainer.py, and Trainer._symbolic_build's "
                "signature in keras/src/trainers/trainer.py",
    ),
}


def installed_version(package: str) -> str:
    """The version of the module that `import package` loads.

    Its `__version__`, not the distribution metadata: a `keras-nightly` install
    or a copy earlier on `sys.path` is what runs, whatever pip recorded.
    """
    version = getattr(importlib.import_module(package), "__version__", None)
    return str(version) if version else importlib.metadata.version(package)


def check_verified(name: str) -> Patch:
    """Raise unless the installed package is the version patch `name` was verified on.

    Args:
        name: a key of `PATCHES`.

    Returns:
        The `Patch`.

    Raises:
        RuntimeError: naming the package, the installed and verified versions
            and what to re-check.
    """
    if name not in PATCHES:
        raise ValueError(f"name must be one of {', '.join(PATCHES)}, got {name!r}")
    patch = PATCHES[name]
    installed = installed_version(patch.package)
    if installed != patch.verified:
        raise RuntimeError(
            f"pcam.core.compat: {patch.package} {installed} is installed, but the workaround "
            f"{name!r} uses {patch.touches} and was verified only with {patch.package} "
            f"{patch.verified}. Why it exists: {patch.why}. Install "
            f"{patch.package}=={patch.verified} as requirements.txt pins it, or re-check "
            f"{patch.recheck}; then run tests/test_compat.py, tests/test_pipeline.py and "
            f"tests/test_distribute.py and set PATCHES[{name!r}].verified in pcam/core/compat.py.")
    return patch


def h5py_chunk_lock():
    """The lock to hold around `DatasetID.read_direct_chunk` calls.

    It is h5py's own global lock, so a chunk read cannot overlap any other h5py
    call from another thread. Reentrant.

    Returns:
        `h5py._objects.phil`.

    Raises:
        RuntimeError: when the installed h5py is not the verified version.
    """
    check_verified("h5py_chunk_lock")
    return h5py._objects.phil


def multiworker_fit(model, strategy: tf.distribute.Strategy):
    """Let `model.fit`/`evaluate` run under `MultiWorkerMirroredStrategy`; returns `model`.

    Two Keras 3 steps fail across workers (keras-team/keras#20585), so this
    model (not Keras) gets two small overrides:

    - before building its loss and metrics Keras all-reduces the first input
      batch only to learn its shapes; one local replica's batch has them too;
    - Keras averages each step's logs over replicas with `reduce(MEAN, axis=0)`,
      which fails on scalars; the logs get a leading axis of length 1, so the
      same reduce gives the same mean over replicas as on one machine.

    Call it only for a multi-worker strategy; a second call does nothing.

    Args:
        model: a compiled `keras.Model`.
        strategy: the `tf.distribute.MultiWorkerMirroredStrategy` it trains under.

    Returns:
        `model`, patched in place.

    Raises:
        RuntimeError: when the installed Keras is not the verified version.
    """
    check_verified("keras_multiworker_fit")
    if getattr(model, "_pcam_fit_ready", False):
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
