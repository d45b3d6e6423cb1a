"""open_split and friends: good files open, each bad file gives one clear message."""

import json

import h5py
import numpy as np
import pytest
from h5_files import patch_index, write_pcam

from pcam.core.errors import PCamError
from pcam.data.h5read import (
    Split,
    available_splits,
    open_split,
    read_dataset_info,
    read_images,
    read_labels,
)
from pcam.data.spec import SPEC


def _rewrite(path, key, data, **kwargs):
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=data, **kwargs)


def test_open_split_reads_shape_and_labels(tmp_path):
    x_path, y_path = write_pcam(tmp_path, "valid", 50)
    split = open_split(tmp_path, "valid")
    assert split == Split("valid", x_path, y_path, 50)
    labels = read_labels(split)
    assert labels.dtype == np.uint8 and labels.shape == (50,)
    np.testing.assert_array_equal(labels, np.arange(50) % 3 == 0)
    images = read_images(split, 10, 20)
    assert images.shape == (10, 96, 96, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(patch_index(images), np.arange(10, 20))


def test_flat_labels_accepted(tmp_path):
    _, y_path = write_pcam(tmp_path, "test", 12)
    _rewrite(y_path, "y", np.ones(12, dtype=np.uint8))
    assert read_labels(open_split(tmp_path, "test")).sum() == 12


def test_data_dir_from_environment(tmp_path, monkeypatch):
    write_pcam(tmp_path, "train", 8)
    monkeypatch.setenv("PCAM_DATA_DIR", str(tmp_path))
    assert open_split(split="train").length == 8
    assert available_splits() == ["train"]


def test_read_images_rejects_bad_range(tmp_path):
    write_pcam(tmp_path, "valid", 10)
    with pytest.raises(ValueError, match="start=5, stop=11"):
        read_images(open_split(tmp_path, "valid"), 5, 11)


def test_unknown_split(tmp_path):
    with pytest.raises(PCamError, match="unknown split 'training'"):
        open_split(tmp_path, "training")


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(PCamError) as info:
        open_split(tmp_path, "valid")
    message = str(info.value)
    assert SPEC["valid"].x.name in message and SPEC["valid"].y.name in message
    assert str(tmp_path) in message
    assert "python -m pcam download" in message and "python -m pcam synthetic" in message


def test_missing_label_file_only(tmp_path):
    _, y_path = write_pcam(tmp_path, "valid", 10)
    y_path.unlink()
    with pytest.raises(PCamError, match=f"{SPEC['valid'].y.name} not found") as info:
        open_split(tmp_path, "valid")
    assert SPEC["valid"].x.name + " " not in str(info.value)
    assert available_splits(tmp_path) == ["valid"]  # present, so `check` reports it


def test_truncated_file(tmp_path):
    x_path, _ = write_pcam(tmp_path, "valid", 40)
    data = x_path.read_bytes()
    x_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PCamError) as info:
        open_split(tmp_path, "valid")
    message = str(info.value)
    assert str(x_path) in message and "truncated" in message
    assert "delete it and download or generate it again" in message


def test_not_hdf5(tmp_path):
    _, y_path = write_pcam(tmp_path, "valid", 10)
    y_path.write_text("<html>503 Service Unavailable</html>")
    with pytest.raises(PCamError, match="not a readable HDF5 file") as info:
        open_split(tmp_path, "valid")
    assert str(y_path) in str(info.value) and "delete it" in str(info.value)


def test_corrupt_chunk_reported_on_read(tmp_path):
    x_path, _ = write_pcam(tmp_path, "valid", 40)
    split = open_split(tmp_path, "valid")
    data = bytearray(x_path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)  # zero a stretch of gzip data
    x_path.write_bytes(bytes(data))
    with pytest.raises(PCamError, match="corrupt") as info:
        read_images(split, 0, 40)
    assert str(x_path) in str(info.value)


def test_wrong_key(tmp_path):
    x_path, _ = write_pcam(tmp_path, "valid", 10)
    _rewrite(x_path, "images", np.zeros((10, 96, 96, 3), np.uint8))
    with pytest.raises(PCamError, match="has no dataset 'x' \\(found: images\\)") as info:
        open_split(tmp_path, "valid")
    assert str(x_path) in str(info.value)


@pytest.mark.parametrize("shape", [(10, 96, 96), (10, 64, 64, 3), (10, 96, 96, 1)])
def test_wrong_image_shape(tmp_path, shape):
    x_path, _ = write_pcam(tmp_path, "valid", 10)
    _rewrite(x_path, "x", np.zeros(shape, np.uint8))
    with pytest.raises(PCamError, match=f"has shape \\({shape[0]}, ") as info:
        open_split(tmp_path, "valid")
    assert str(x_path) in str(info.value) and "(N, 96, 96, 3)" in str(info.value)


def test_wrong_image_dtype(tmp_path):
    x_path, _ = write_pcam(tmp_path, "valid", 10)
    _rewrite(x_path, "x", np.zeros((10, 96, 96, 3), np.float32))
    with pytest.raises(PCamError, match="dtype float32, expected uint8") as info:
        open_split(tmp_path, "valid")
    assert str(x_path) in str(info.value)


def test_wrong_label_shape_and_dtype(tmp_path):
    _, y_path = write_pcam(tmp_path, "valid", 10)
    _rewrite(y_path, "y", np.zeros((10, 2), np.uint8))
    with pytest.raises(PCamError, match=r"shape \(10, 2\), expected \(N, 1, 1, 1\) or \(N,\)"):
        open_split(tmp_path, "valid")
    _rewrite(y_path, "y", np.zeros(10, np.float32))
    with pytest.raises(PCamError, match="dtype float32, expected integer") as info:
        open_split(tmp_path, "valid")
    assert str(y_path) in str(info.value)


def test_length_mismatch(tmp_path):
    x_path, y_path = write_pcam(tmp_path, "valid", 10)
    _rewrite(y_path, "y", np.zeros((9, 1, 1, 1), np.uint8))
    with pytest.raises(PCamError, match="holds 10 patches but .* holds 9 labels") as info:
        open_split(tmp_path, "valid")
    assert str(x_path) in str(info.value) and str(y_path) in str(info.value)
    assert "replace both" in str(info.value)


def test_labels_outside_0_1(tmp_path):
    labels = np.array([0, 1, 2, 1, 0, 255, 0, 1, 0, 1], np.uint8)
    _, y_path = write_pcam(tmp_path, "valid", 10, labels=labels)
    with pytest.raises(PCamError, match="2 labels are not 0 or 1 \\(e.g. 2\\)") as info:
        open_split(tmp_path, "valid")
    assert str(y_path) in str(info.value) and "fix the labels" in str(info.value)


def test_available_splits_in_spec_order(tmp_path):
    assert available_splits(tmp_path) == []
    write_pcam(tmp_path, "test", 4)
    write_pcam(tmp_path, "train", 4)
    assert available_splits(tmp_path) == ["train", "test"]


def test_read_dataset_info(tmp_path):
    assert read_dataset_info(tmp_path) == {
        "source": "PCam, Zenodo record 2546921",
        "synthetic": False,
    }
    (tmp_path / "dataset.json").write_text(json.dumps({"source": "synthetic", "seed": 3}))
    assert read_dataset_info(tmp_path) == {"source": "synthetic", "seed": 3}
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(PCamError, match="dataset.json"):
        read_dataset_info(tmp_path)
