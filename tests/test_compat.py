"""pcam.core.compat: version guards on the private internals pcam uses, and gzip-only detection.

The first tests fail as soon as h5py or Keras moves from the version its
workaround was verified with: re-check what `PATCHES[...].recheck` names,
then update `verified` (see the pcam.core.compat docstring).
"""

import importlib.metadata
import inspect
import re
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from h5_files import write_pcam

from pcam.core import compat
from pcam.data.blocks import BlockReader, gzip_only
from pcam.data.h5read import open_split
from pcam.train import distribute

ROOT = Path(__file__).resolve().parents[1]


# -- the installed versions are the verified ones -------------------------------------


@pytest.mark.parametrize("name", sorted(compat.PATCHES))
def test_installed_version_is_the_verified_one(name):
    patch = compat.PATCHES[name]
    installed = importlib.metadata.version(patch.package)
    assert installed == patch.verified, (
        f"{patch.package} {installed} is installed but {name!r} was verified with "
        f"{patch.verified}: re-check {patch.recheck}, then update pcam/core/compat.py")
    assert compat.installed_version(patch.package) == installed  # no other copy shadows it


def test_requirements_pin_the_verified_versions():
    # Bumping a pin without re-verifying the workaround would only fail at run time.
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "requirements.txt").read_text(),
                           re.MULTILINE))
    for name, patch in compat.PATCHES.items():
        assert pins.get(patch.package) == patch.verified, name


def test_a_moved_version_fails_loudly_where_the_patch_is_used(monkeypatch, tmp_path):
    monkeypatch.setattr(compat, "installed_version", lambda package: "0.0.1")
    with pytest.raises(RuntimeError, match=r"h5py 0\.0\.1 is installed.*verified only with "
                                           r"h5py 3\.14\.0.*PR #2764"):
        compat.h5py_chunk_lock()
    with pytest.raises(RuntimeError, match=r"keras 0\.0\.1 is installed.*keras 3\.15\.1"
                                           r".*keras-team/keras#20585"):
        compat.multiworker_fit(object(), None)
    write_pcam(tmp_path, "valid", 16, chunk=8)  # gzip-only: the chunk reader needs the lock
    with pytest.raises(RuntimeError, match="h5py 0.0.1 is installed"):
        BlockReader(open_split(tmp_path, "valid"), 16, 8)
    # Where the patch is not used nothing is checked: one-machine training.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert distribute.fit_ready(model, tf.distribute.get_strategy()) is model
    assert not hasattr(model, "_pcam_fit_ready")
    with pytest.raises(ValueError, match="got 'nope'"):
        compat.check_verified("nope")


# -- the private attributes still exist -----------------------------------------------


def test_h5py_phil_is_the_reentrant_lock_h5py_takes():
    lock = compat.h5py_chunk_lock()
    assert lock is h5py._objects.phil
    assert lock is h5py._hl.base.phil  # the one h5py's high-level calls take
    with lock, lock:  # reentrant: h5py calls made while holding it do not deadlock
        pass


def test_keras_symbolic_build_methods_keep_their_signatures():
    for name in ("_maybe_symbolic_build", "_symbolic_build"):
        method = getattr(keras.Model, name)
        assert callable(method), name
        # pcam's replacement takes, and passes on, these keyword arguments.
        assert {"iterator", "data_batch"} <= set(inspect.signature(method).parameters), name


def test_multiworker_fit_overrides_once():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    step = model.train_step
    assert compat.multiworker_fit(model, tf.distribute.get_strategy()) is model
    patched = model.train_step
    assert patched is not step and "_maybe_symbolic_build" in vars(model)
    compat.multiworker_fit(model, tf.distribute.get_strategy())
    assert model.train_step is patched  # not wrapped twice
    logs = patched((np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32)))
    assert all(v.shape == (1,) for v in logs.values())  # the leading axis reduce() needs


# -- gzip-only detection through public h5py properties -------------------------------


def _dataset(path: Path, **options) -> h5py.Dataset:
    f = h5py.File(path, "w")
    return f.create_dataset("x", data=np.arange(64, dtype=np.uint8).reshape(16, 4), **options)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"chunks": (4, 4), "compression": "gzip"}, True),
        ({"chunks": (4, 4), "compression": "gzip", "compression_opts": 9}, True),
        ({"chunks": (4, 4), "compression": "gzip", "shuffle": True}, False),
        ({"chunks": (4, 4), "compression": "gzip", "fletcher32": True}, False),
        ({"chunks": (4, 4), "compression": "gzip", "scaleoffset": 0}, False),
        ({"chunks": (4, 4), "compression": "lzf"}, False),
        ({"chunks": (4, 4)}, False),
        ({}, False),  # contiguous, uncompressed
    ],
)
def test_gzip_only(tmp_path, options, expected):
    x = _dataset(tmp_path / "x.h5", **options)
    try:
        assert gzip_only(x) is expected
    finally:
        x.file.close()


def test_gzip_next_to_a_filter_without_a_property_is_not_gzip_only(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((4, 4))
        dcpl.set_filter(h5py.h5z.FILTER_LZF, h5py.h5z.FLAG_OPTIONAL)
        dcpl.set_deflate(4)
        h5py.h5d.create(f.id, b"x", h5py.h5t.STD_U8LE, h5py.h5s.create_simple((16, 4)),
                        dcpl=dcpl)
        x = f["x"]
        # The properties alone read as gzip-only; the raw chunks are not zlib streams.
        assert (x.compression, x.shuffle, x.fletcher32, x.scaleoffset) == ("gzip", False,
                                                                           False, None)
        assert gzip_only(x) is False
