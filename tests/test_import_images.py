"""Import of image folders (pcam.data.import_images) on tiny folders made in tmp_path."""

import json
import tarfile

import h5py
import numpy as np
import pytest
from PIL import Image

from pcam.core.errors import PCamError
from pcam.data.import_images import import_images
from pcam.data.spec import SPEC
from pcam.data.synthetic import write_synthetic


def _patch(value: int) -> np.ndarray:
    """A 96x96 RGB patch whose pixel (0, 0) encodes `value` (0..255)."""
    image = np.full((96, 96, 3), 128, np.uint8)
    image[0, 0] = (value, 255 - value, 3)
    return image


def _save(folder, name, array, mode=None):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(folder / name)


def _class_folder(root, n_per_class, suffix=".png", first=0):
    """root/{0,1}/NAME with patch values first, first+1, ...; returns {value: label}."""
    truth = {}
    for label in (0, 1):
        for i in range(n_per_class):
            value = first + label * n_per_class + i
            _save(root / str(label), f"p{value:03d}{suffix}", _patch(value))
            truth[value] = label
    return truth


def _read(data_dir, split):
    with h5py.File(data_dir / SPEC[split].x.name, "r") as fx, h5py.File(
        data_dir / SPEC[split].y.name, "r"
    ) as fy:
        return fx["x"][:], fy["y"][:].reshape(-1)


def _pairs(data_dir, split):
    images, labels = _read(data_dir, split)
    return {int(im[0, 0, 0]): int(lab) for im, lab in zip(images, labels, strict=True)}


def test_one_split_folder_png(tmp_path):
    truth = _class_folder(tmp_path / "src", 20)
    info = import_images(tmp_path / "src", tmp_path / "out", split="test")
    assert _pairs(tmp_path / "out", "test") == truth
    images, labels = _read(tmp_path / "out", "test")
    np.testing.assert_array_equal(images[0, 1:, :], 128)
    assert images.dtype == np.uint8 and images.shape == (40, 96, 96, 3)
    assert list(labels) != sorted(labels)  # shuffled, not folder order
    assert info["source"] == "images" and info["synthetic"] is False
    assert info["folder"] == "src" and info["splits"] == {"test": 40}
    assert info["positives"] == {"test": 20} and info["label"] == "images from src"
    assert str(tmp_path) not in (tmp_path / "out" / "dataset.json").read_text()
    assert json.loads((tmp_path / "out" / "dataset.json").read_text()) == info


def test_one_split_folder_needs_split(tmp_path):
    _class_folder(tmp_path / "src", 2)
    with pytest.raises(PCamError, match="one split.*--split train"):
        import_images(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_split_folders_jpeg_and_seeded_order(tmp_path):
    _class_folder(tmp_path / "src" / "train", 10, ".jpg")
    _class_folder(tmp_path / "src" / "valid", 3, ".jpg", first=100)
    info = import_images(tmp_path / "src", tmp_path / "a", seed=1)
    assert info["splits"] == {"train": 20, "valid": 6}
    assert info["mapping"] == {"train": "src/train", "valid": "src/valid"}
    import_images(tmp_path / "src", tmp_path / "b", seed=1)
    import_images(tmp_path / "src", tmp_path / "c", seed=2)
    for name in (SPEC["train"].x.name, SPEC["train"].y.name):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not np.array_equal(_read(tmp_path / "a", "train")[1], _read(tmp_path / "c", "train")[1])
    # JPEG is lossy: a flat grey patch survives within a few levels.
    images, _ = _read(tmp_path / "a", "valid")
    assert np.abs(images[:, 40:, 40:].astype(int) - 128).max() <= 3


def test_holdout_is_stratified_and_valid_becomes_test(tmp_path):
    train = _class_folder(tmp_path / "src" / "train", 20)
    valid = _class_folder(tmp_path / "src" / "valid", 5, first=200)
    info = import_images(tmp_path / "src", tmp_path / "out", holdout=10, seed=3)
    new_train, new_valid = _pairs(tmp_path / "out", "train"), _pairs(tmp_path / "out", "valid")
    assert len(new_train) == 30 and len(new_valid) == 10
    assert set(new_train) | set(new_valid) == set(train)
    assert not set(new_train) & set(new_valid)
    assert sum(new_valid.values()) == 5  # 50/50 like the source
    assert _pairs(tmp_path / "out", "test") == valid
    assert info["splits"] == {"train": 30, "valid": 10, "test": 10}
    assert info["positives"] == {"train": 15, "valid": 5, "test": 5}
    assert info["mapping"]["test"] == "src/valid"
    assert "10 held out from src/train" in info["mapping"]["valid"]
    assert info["holdout"] == 10 and info["seed"] == 3


def test_test_from_valid_keeps_train_whole_and_splits_valid_stratified(tmp_path):
    train = _class_folder(tmp_path / "src" / "train", 20)
    valid = _class_folder(tmp_path / "src" / "valid", 10, first=200)
    info = import_images(tmp_path / "src", tmp_path / "out", test_from_valid=8, seed=3)
    new_valid, new_test = _pairs(tmp_path / "out", "valid"), _pairs(tmp_path / "out", "test")
    assert _pairs(tmp_path / "out", "train") == train  # every train image, none elsewhere
    assert len(new_valid) == 12 and len(new_test) == 8
    assert set(new_valid) | set(new_test) == set(valid) and not set(new_valid) & set(new_test)
    assert sum(new_test.values()) == 4 and sum(new_valid.values()) == 6  # 50/50 like valid
    assert info["splits"] == {"train": 40, "valid": 12, "test": 8}
    assert info["test_from_valid"] == 8 and info["holdout"] == 0 and info["seed"] == 3
    assert "none of train's" in info["mapping"]["test"]
    again = import_images(tmp_path / "src", tmp_path / "again", test_from_valid=8, seed=3)
    assert again["splits"] == info["splits"]
    assert _pairs(tmp_path / "again", "test") == new_test  # the seed fixes the draw


@pytest.mark.parametrize("layout, kwargs, message", [
    ("train-valid", {"test_from_valid": 20}, "--test-from-valid 20 must be smaller than the 20 "
                                             "valid images"),
    ("train-valid", {"test_from_valid": 4, "holdout": 4}, "--holdout and --test-from-valid"),
    ("train", {"test_from_valid": 4}, "needs a valid split"),
    ("train-valid-test", {"test_from_valid": 4}, "test exists too"),
    ("train-valid", {"test_from_valid": -1}, "must be an integer >= 0, got -1"),
    ("train-valid", {"test_from_valid": True}, "must be an integer >= 0, got True"),
])
def test_test_from_valid_errors_write_nothing(tmp_path, layout, kwargs, message):
    for i, name in enumerate(layout.split("-")):
        _class_folder(tmp_path / "src" / name, 10, first=40 * i)
    with pytest.raises(PCamError, match=message):
        import_images(tmp_path / "src", tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_command_prints_what_each_split_holds(tmp_path, capsys):
    from pcam.app.cli import main

    _class_folder(tmp_path / "src" / "train", 20)
    _class_folder(tmp_path / "src" / "valid", 5, first=200)
    assert main(["import-images", str(tmp_path / "src"), "--data-dir", str(tmp_path / "out"),
                 "--holdout", "10"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "train: 30 patches (15 positive): src/train minus the 10 held out",
        "valid: 10 patches (5 positive): 10 held out from src/train (stratified, seed 0)",
        "test: 10 patches (5 positive): src/valid"]


@pytest.mark.parametrize(
    ("holdout", "make_test", "message"),
    [(40, False, "must be smaller than the 40"), (2, True, "src/test exists too")],
)
def test_holdout_errors(tmp_path, holdout, make_test, message):
    _class_folder(tmp_path / "src" / "train", 20)
    if make_test:
        _class_folder(tmp_path / "src" / "test", 2)
    with pytest.raises(PCamError, match=message):
        import_images(tmp_path / "src", tmp_path / "out", holdout=holdout)
    assert not (tmp_path / "out").exists()


def _kaggle(root, n, subfolder=""):
    folder = root / subfolder if subfolder else root
    rows = ["id,label"]
    for i in range(n):
        _save(folder, f"id{i:03d}.tif", _patch(i))
        rows.append(f"id{i:03d},{i % 2}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "train_labels.csv").write_text("\n".join(rows) + "\n")
    return {i: i % 2 for i in range(n)}


@pytest.mark.parametrize("subfolder", ["", "train"])
def test_kaggle_layout(tmp_path, subfolder):
    truth = _kaggle(tmp_path / "kaggle", 12, subfolder)
    info = import_images(tmp_path / "kaggle", tmp_path / "out")
    assert _pairs(tmp_path / "out", "train") == truth
    assert info["layout"] == "kaggle" and info["splits"] == {"train": 12}
    assert "Kaggle" in info["label"]


def test_kaggle_id_without_image(tmp_path):
    _kaggle(tmp_path / "kaggle", 4)
    (tmp_path / "kaggle" / "id002.tif").unlink()
    with pytest.raises(PCamError, match=r"1 id\(s\) in train_labels.csv have no image.*id002"):
        import_images(tmp_path / "kaggle", tmp_path / "out")


def test_kaggle_image_without_label(tmp_path):
    _kaggle(tmp_path / "kaggle", 4)
    for i in range(7):
        _save(tmp_path / "kaggle", f"extra{i}.tif", _patch(9))
    with pytest.raises(PCamError, match=r"7 image\(s\).*no row.*extra0.tif.*and 2 more"):
        import_images(tmp_path / "kaggle", tmp_path / "out")


def test_kaggle_bad_csv(tmp_path):
    _kaggle(tmp_path / "kaggle", 2)
    (tmp_path / "kaggle" / "train_labels.csv").write_text("id,label\nid000,0\nid001,yes\n")
    with pytest.raises(PCamError, match="label 'yes' for id 'id001' is not 0 or 1"):
        import_images(tmp_path / "kaggle", tmp_path / "out")


def _bad_grey(folder):
    _save(folder, "grey.png", np.zeros((96, 96), np.uint8))


def _bad_rgba(folder):
    _save(folder, "alpha.png", np.zeros((96, 96, 4), np.uint8))


def _bad_size(folder):
    _save(folder, "small.png", np.zeros((50, 60, 3), np.uint8))


def _bad_bytes(folder):
    (folder / "junk.jpg").write_bytes(b"not an image at all")


def _bad_truncated(folder):
    _save(folder, "cut.jpg", np.random.default_rng(0).integers(0, 255, (96, 96, 3), np.uint8))
    data = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("make_bad", "message"),
    [
        (_bad_grey, r"1/grey.png is greyscale \(mode L\), not RGB"),
        (_bad_rgba, r"1/alpha.png has mode RGBA, not RGB"),
        (_bad_size, r"1/small.png is 60x50 pixels, not 96x96"),
        (_bad_bytes, r"1/junk.jpg cannot be read as an image"),
        (_bad_truncated, r"1/cut.jpg cannot be read as an image \(image file is truncated"),
    ],
)
def test_bad_image_named_and_nothing_written(tmp_path, make_bad, message):
    _class_folder(tmp_path / "src", 3)
    make_bad(tmp_path / "src" / "1")
    write_synthetic(tmp_path / "out", sizes={"train": 16}, seed=0)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with pytest.raises(PCamError, match=message) as error:  # overwrite: decoding fails first
        import_images(tmp_path / "src", tmp_path / "out", split="train", overwrite=True)
    assert "must be a 96x96 RGB image. Convert or remove" in str(error.value)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_many_bad_images_listed_briefly(tmp_path):
    _class_folder(tmp_path / "src", 1)
    for i in range(8):
        _bad_grey(tmp_path / "src" / "0")
        (tmp_path / "src" / "0" / "grey.png").rename(tmp_path / "src" / "0" / f"g{i}.png")
    with pytest.raises(PCamError, match=r"^8 image\(s\) in .*; and 3 more$"):
        import_images(tmp_path / "src", tmp_path / "out", split="train")


def test_unknown_layout_and_missing_folder(tmp_path):
    (tmp_path / "src" / "cats").mkdir(parents=True)
    with pytest.raises(PCamError, match="none of the known layouts"):
        import_images(tmp_path / "src", tmp_path / "out")
    with pytest.raises(PCamError, match="is not a folder of images"):
        import_images(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "src" / "0").mkdir()
    (tmp_path / "src" / "1").mkdir()
    with pytest.raises(PCamError, match="no images"):
        import_images(tmp_path / "src", tmp_path / "out", split="train")


def test_one_split_imports_accumulate_and_replace_synthetic(tmp_path, capsys):
    write_synthetic(tmp_path / "out", sizes={"train": 16, "valid": 16, "test": 16})
    _class_folder(tmp_path / "tr", 4)
    _class_folder(tmp_path / "va", 2, first=50)
    with pytest.raises(PCamError, match="train would be replaced and valid and test deleted"):
        import_images(tmp_path / "tr", tmp_path / "out", split="train")
    assert (tmp_path / "out" / SPEC["valid"].x.name).exists()
    import_images(tmp_path / "tr", tmp_path / "out", split="train", overwrite=True)
    # The synthetic valid and test must not sit beside real train patches.
    assert not (tmp_path / "out" / SPEC["valid"].x.name).exists()
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("replaced ") for line in out) == 3  # train x, y, dataset.json
    # valid and test x, y and meta CSV, and train's synthetic meta CSV (images have no slides)
    assert sum(line.startswith("removed ") for line in out) == 7
    assert not (tmp_path / "out" / SPEC["train"].meta.name).exists()
    # A second one-split import adds valid beside the imported train: no flag needed.
    info = import_images(tmp_path / "va", tmp_path / "out", split="valid")
    assert info["splits"] == {"train": 8, "valid": 4}
    assert info["mapping"] == {"train": "tr", "valid": "va"}
    assert _pairs(tmp_path / "out", "valid") == {50 + i: int(i >= 2) for i in range(4)}


def test_shared_subset_sample(shared_dir, tmp_path):
    """Real PCam pixels: a sample of the shared JPEG subset imports faithfully."""
    tar_path = shared_dir / "data" / "pcam-subset" / "pcam_subset_train_valid_jpeg.tar"
    wanted = {"train/0": 200, "train/1": 200, "valid/0": 50, "valid/1": 50}
    src = tmp_path / "pcam-subset"
    with tarfile.open(tar_path) as tar:
        for member in tar:
            folder = member.name.rsplit("/", 1)[0]
            if member.isfile() and wanted.get(folder, 0) > 0:
                wanted[folder] -= 1
                tar.extract(member, src, filter="data")
    assert not any(wanted.values())
    info = import_images(src, tmp_path / "out", holdout=100, seed=0)
    assert info["label"] == "PCam subset (JPEG)" and info["folder"] == "pcam-subset"
    assert info["splits"] == {"train": 300, "valid": 100, "test": 100}
    assert info["positives"] == {"train": 150, "valid": 50, "test": 50}
    images, labels = _read(tmp_path / "out", "test")
    one = next((src / "valid" / "1").iterdir())
    expected = np.asarray(Image.open(one))
    matches = [i for i in range(len(images)) if np.array_equal(images[i], expected)]
    assert len(matches) == 1 and labels[matches[0]] == 1
    # Real H&E tissue: wide dynamic range, red and blue above green on average.
    assert images.min() < 40 and images.max() > 220
    mean = images.reshape(-1, 3).mean(axis=0)
    assert mean[0] > mean[1] and mean[2] > mean[1]
