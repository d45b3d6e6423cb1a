"""The official file layout (contiguous, uncompressed) next to the gzip-chunked one:
written as the official files are, reported by `pcam check`, read alike by the pipeline."""

import h5py
import numpy as np
import pytest

from pcam.data.blocks import PARALLEL_READERS, BlockReader
from pcam.data.check import check_data_dir, format_check_table
from pcam.data.h5read import open_split, read_images, storage_layout
from pcam.data.pipeline import make_dataset
from pcam.data.synthetic import write_synthetic

SIZES = {"train": 96, "valid": 64, "test": 0}
PATCH_BYTES = 96 * 96 * 3


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    for layout in ("gzip", "official"):
        write_synthetic(root / layout, sizes=SIZES, seed=4, layout=layout)
    return root


def test_official_layout_is_contiguous_uncompressed_and_the_size_of_its_pixels(both):
    split = open_split(both / "official", "train")
    with h5py.File(split.x_path, "r") as f:
        assert f["x"].chunks is None and f["x"].compression is None
        assert f["x"].shape == (96, 96, 96, 3)
    with h5py.File(split.y_path, "r") as f:
        assert f["y"].compression is None and f["y"].shape == (96, 1, 1, 1)
    size = split.x_path.stat().st_size
    assert 96 * PATCH_BYTES <= size < 96 * PATCH_BYTES + 64 * 1024  # pixels + a small header
    assert storage_layout(split.x_path) == "contiguous, uncompressed"
    gzip_x = open_split(both / "gzip", "train").x_path
    assert storage_layout(gzip_x) == "chunks of 32 patches, gzip level 4"


def test_both_layouts_hold_the_same_patches_and_stream_the_same_batches(both):
    gzip, official = (open_split(both / name, "train") for name in ("gzip", "official"))
    assert np.array_equal(read_images(gzip, 0, 96), read_images(official, 0, 96))

    def batches(split):
        ds = make_dataset(split, batch_size=16, shuffle=True, seed=3, block_size=32, cache=False)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    for (xa, ya), (xb, yb) in zip(batches(gzip), batches(official), strict=True):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)


def test_reader_threads_follow_the_layout(both):
    gzip, official = (open_split(both / name, "train") for name in ("gzip", "official"))
    assert BlockReader(gzip, 96, 64).readers == PARALLEL_READERS
    assert BlockReader(official, 96, 64).readers == 2
    with pytest.raises(ValueError, match="readers must be an integer >= 1, got 0"):
        make_dataset(official, readers=0)


def test_check_reports_each_files_layout(both):
    rows = check_data_dir(both / "official", read=True)
    assert [row["layout"] for row in rows] == ["contiguous, uncompressed"] * 2
    table = format_check_table(rows)
    assert table.splitlines()[0].split()[-1] == "layout"
    assert "contiguous, uncompressed" in table


def test_an_unknown_layout_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="layout must be one of"):
        write_synthetic(tmp_path / "d", sizes=SIZES, layout="zarr")
    assert not (tmp_path / "d").exists()
