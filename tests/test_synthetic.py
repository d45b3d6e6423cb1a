"""Synthetic PCam (pcam.data.synthetic) and the atomic HDF5 writer (pcam.data.h5write)."""

import json

import h5py
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from pcam.core import fileio
from pcam.core.errors import PCamError
from pcam.data.h5write import write_dataset_info, write_split
from pcam.data.spec import SPEC, SPLITS
from pcam.data.synthetic import HARD_NEGATIVE, POSITIVE, make_patches, write_synthetic

SIZES = {"train": 512, "valid": 256, "test": 256}


def test_layout_is_pcam(synthetic_data_dir):
    names = {f.name for s in SPLITS for f in (SPEC[s].x, SPEC[s].y, SPEC[s].meta)}
    names |= {"dataset.json"}
    assert {p.name for p in synthetic_data_dir.iterdir()} == names
    for split in SPLITS:
        with h5py.File(synthetic_data_dir / SPEC[split].x.name, "r") as f:
            assert list(f) == ["x"]
            x = f["x"]
            assert (x.shape, x.dtype) == ((SIZES[split], 96, 96, 3), np.uint8)
            assert x.compression == "gzip" and x.chunks == (32, 96, 96, 3)
        with h5py.File(synthetic_data_dir / SPEC[split].y.name, "r") as f:
            assert list(f) == ["y"]
            y = f["y"][:]
            assert (y.shape, y.dtype) == ((SIZES[split], 1, 1, 1), np.uint8)
            assert y.sum() == SIZES[split] // 2  # balanced 50/50
    info = json.loads((synthetic_data_dir / "dataset.json").read_text())
    assert info["source"] == "synthetic" and info["synthetic"] is True
    assert info["seed"] == 0 and info["splits"] == SIZES


def test_splits_differ_and_files_match_make_patches(synthetic_data_dir):
    with h5py.File(synthetic_data_dir / SPEC["train"].x.name, "r") as f:
        train = f["x"][:8]
    with h5py.File(synthetic_data_dir / SPEC["valid"].x.name, "r") as f:
        valid = f["x"][:8]
    assert not np.array_equal(train, valid)
    np.testing.assert_array_equal(train, make_patches(8, 0, stream=0)[0])
    np.testing.assert_array_equal(valid, make_patches(8, 0, stream=1)[0])


def test_deterministic_by_seed_and_independent_of_blocking():
    images, labels = make_patches(300, 3)
    again, again_labels = make_patches(300, 3)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    part, part_labels = make_patches(100, 3, start=200)  # crosses a block boundary
    np.testing.assert_array_equal(part, images[200:])
    np.testing.assert_array_equal(part_labels, labels[200:])
    assert not np.array_equal(make_patches(8, 4)[0], images[:8])
    empty = make_patches(0, 3)
    assert empty[0].shape == (0, 96, 96, 3) and empty[1].shape == (0,)


def test_write_synthetic_same_seed_same_bytes(tmp_path):
    sizes = {"train": 40, "valid": 8, "test": 0}
    for name in ("a", "b"):
        write_synthetic(tmp_path / name, sizes=sizes, seed=5)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert SPEC["test"].x.name not in files  # a split of size 0 is not written
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_label_rule_from_ground_truth():
    images, labels, truth = make_patches(1024, 0, truth=True)
    assert labels.mean() == 0.5
    np.testing.assert_array_equal(labels, truth["tumour_centre"])
    np.testing.assert_array_equal(labels == 1, truth["kind"] == POSITIVE)
    negatives = labels == 0
    hard = truth["kind"] == HARD_NEGATIVE
    # Hard negatives: tumour cells in the border only, 30-50% of negatives.
    assert 0.3 <= hard[negatives].mean() <= 0.5
    assert truth["tumour_border"][hard].mean() > 0.9
    assert not truth["tumour_centre"][negatives].any()
    assert not truth["tumour_border"][negatives & ~hard].any()
    # H&E-like: tissue is pink/purple (red and blue above green) on average.
    mean = images.reshape(-1, 3).mean(axis=0)
    assert mean[0] > mean[1] and mean[2] > mean[1]


def test_centre_darkness_predicts_label_better_than_whole_patch():
    images, labels = make_patches(1024, 1)
    grey = images.astype(np.float32).mean(axis=-1)
    centre = 255 - grey[:, 32:64, 32:64].mean(axis=(1, 2), keepdims=False)[:, None]
    whole = 255 - grey.mean(axis=(1, 2))[:, None]
    acc_centre = cross_val_score(LogisticRegression(), centre, labels, cv=4).mean()
    acc_whole = cross_val_score(LogisticRegression(), whole, labels, cv=4).mean()
    assert acc_centre > 0.8
    assert acc_whole < acc_centre - 0.15


def test_write_synthetic_refuses_official_files(tmp_path):
    with h5py.File(tmp_path / SPEC["train"].x.name, "w") as f:
        f["x"] = np.zeros((2, 96, 96, 3), np.uint8)
    with pytest.raises(PCamError, match="not written by pcam.*another --data-dir"):
        write_synthetic(tmp_path, sizes={"train": 8})


def test_make_patches_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n=-1"):
        make_patches(-1, 0)


# --- pcam.data.h5write --------------------------------------------------------------------


def test_write_split_streams_blocks(tmp_path):
    images = np.arange(70 * 96 * 96 * 3, dtype=np.int64).astype(np.uint8).reshape(70, 96, 96, 3)
    labels = np.arange(70) % 2
    x_path, y_path = write_split(tmp_path, "valid", (images[i:i + 16] for i in range(0, 70, 16)),
                                 labels)
    assert x_path.name == SPEC["valid"].x.name and y_path.name == SPEC["valid"].y.name
    with h5py.File(x_path, "r") as fx, h5py.File(y_path, "r") as fy:
        np.testing.assert_array_equal(fx["x"][:], images)
        np.testing.assert_array_equal(fy["y"][:].reshape(-1), labels)
        assert fy["y"].shape == (70, 1, 1, 1)


def _failing_blocks(images):
    yield images[:16]
    raise RuntimeError("disk on fire")


def test_write_split_failure_leaves_nothing(tmp_path):
    images = np.zeros((32, 96, 96, 3), np.uint8)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_split(tmp_path, "train", _failing_blocks(images), np.zeros(32))
    assert list(tmp_path.iterdir()) == []


def test_write_split_failure_keeps_previous_version(tmp_path):
    write_split(tmp_path, "test", np.full((4, 96, 96, 3), 7, np.uint8), [0, 1, 0, 1])
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="3 images but 4 labels"):
        write_split(tmp_path, "test", np.zeros((3, 96, 96, 3), np.uint8), [1, 1, 1, 1])
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    with h5py.File(tmp_path / SPEC["test"].x.name, "r") as f:
        assert f["x"][0, 0, 0, 0] == 7


def test_write_split_removes_temp_left_by_killed_process(tmp_path):
    stale = tmp_path / f".{SPEC['train'].x.name}.99999.tmp.h5"
    stale.write_bytes(b"half a file")
    write_split(tmp_path, "train", np.zeros((2, 96, 96, 3), np.uint8), [0, 1])
    assert not stale.exists()


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((2, 96, 96, 3), np.float32), [0, 1], "uint8"),
        (np.zeros((2, 64, 64, 3), np.uint8), [0, 1], r"\(2, 64, 64, 3\)"),
        (np.zeros((2, 96, 96, 3), np.uint8), [0, 2], "0 or 1"),
        (np.zeros((3, 96, 96, 3), np.uint8), [0, 1], "more images than the 2 labels"),
        (np.zeros((0, 96, 96, 3), np.uint8), [], "nothing to write"),
    ],
)
def test_write_split_rejects_bad_input(tmp_path, images, labels, message):
    with pytest.raises(ValueError, match=message):
        write_split(tmp_path, "train", images, labels)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_write_dataset_info_atomic(tmp_path, monkeypatch):
    write_dataset_info(tmp_path, {"source": "synthetic"})

    def broken_replace(src, dst):
        raise OSError("no space left on device")

    monkeypatch.setattr(fileio.os, "replace", broken_replace)
    with pytest.raises(PCamError, match="could not write .*dataset.json.*no space"):
        write_dataset_info(tmp_path, {"source": "images"})
    assert [p.name for p in tmp_path.iterdir()] == ["dataset.json"]
    assert json.loads((tmp_path / "dataset.json").read_text()) == {"source": "synthetic"}
