"""`pcam predict`: a run's model on a user's own patches (folders, x files, one image).

The run is a fake record (`fake_runs.make_run`, threshold 0.55) with a tiny
random model saved as its best checkpoint; images are written here with
Pillow, the x file is the session's synthetic test split.
"""

import csv
import os
import struct
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
from fake_runs import THRESHOLD, make_run
from PIL import Image

from pcam.app.cli import main
from pcam.core.errors import PCamError
from pcam.core.fileio import stale_temps
from pcam.data.h5read import open_split, read_labels
from pcam.data.patch_image import read_patch_image
from pcam.data.spec import SPEC
from pcam.data.user_patches import find_patches, read_batches
from pcam.evaluation.metrics import evaluate_predictions
from pcam.models import (
    BEST_CHECKPOINT,
    INFERENCE_MODEL,
    load_run_model,
    run_model_file,
)


def _tiny_model() -> keras.Model:
    """A model with the project's input contract (uint8 patches, preprocessing inside, one
    sigmoid) that traces in a second; MobileNet's 8-fold TTA graph takes many more."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((96, 96, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inputs)
    x = keras.layers.Conv2D(4, 5, strides=4, activation="relu", name="backbone")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="prediction",
                                 bias_initializer=keras.initializers.Constant(0.2))(x)
    return keras.Model(inputs, outputs, name="pcam_tiny")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A complete run (threshold 0.55 from valid) whose best checkpoint is a tiny model."""
    run = make_run(tmp_path_factory.mktemp("results"), "tiny")
    (run / "checkpoints").mkdir()
    _tiny_model().save(run / BEST_CHECKPOINT)
    return run


@pytest.fixture(scope="module")
def model(run_dir):
    return load_run_model(run_dir)


def _patch(seed: int, size: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _save(path, image, mode: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    (image.convert(mode) if mode else image).save(path)
    return path


def _png16(path, rgb: np.ndarray):
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one; it reads it as 8-bit RGB)."""
    rows = b"".join(b"\0" + (row.astype(">u2") * 257).tobytes() for row in rgb)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", rgb.shape[1], rgb.shape[0], 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def _predict(capsys, run_dir, *args) -> tuple[int, str, str]:
    code = main(["predict", "--run", str(run_dir), *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _expected(model, paths) -> np.ndarray:
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    return model.predict(images, verbose=0).reshape(-1)


# --- each kind of INPUT -----------------------------------------------------------------

@pytest.mark.slow
def test_folder_recursive_mixed_suffixes(run_dir, model, tmp_path, capsys, monkeypatch):
    src = tmp_path / "mine"
    files = [_save(src / name, _patch(i)) for i, name in enumerate(
        ["b.png", "sub/c.tif", "sub/deeper/d.jpg", "a.jpeg", "e.TIFF"])]
    (src / "notes.txt").write_text("not an image")
    _save(src / ".hidden.png", _patch(9))
    monkeypatch.chdir(tmp_path)  # default --out: predictions.csv here
    code, out, _ = _predict(capsys, run_dir, src)
    assert code == 0, out
    rows = _rows(tmp_path / "predictions.csv")
    assert [r["id"] for r in rows] == ["a", "b", "e", "sub/c", "sub/deeper/d"]
    assert [r["source"] for r in rows] == ["a.jpeg", "b.png", "e.TIFF", "sub/c.tif",
                                           "sub/deeper/d.jpg"]
    assert list(rows[0]) == ["id", "source", "probability", "label", "converted_from"]
    order = [files[i] for i in (3, 0, 4, 1, 2)]
    probs = np.array([float(r["probability"]) for r in rows])
    np.testing.assert_allclose(probs, _expected(model, order), rtol=1e-4, atol=1e-6)
    assert [int(r["label"]) for r in rows] == [int(p >= THRESHOLD) for p in probs]
    assert "skipped 1 file(s)" in out and "notes.txt" in out and "1 hidden" in out
    positives = int(np.sum(probs >= THRESHOLD))
    assert f"5 patches, {positives} predicted positive at threshold 0.5500" in out
    assert "converted to RGB: none" in out and "no metrics" in out
    assert f"wrote {(tmp_path / 'predictions.csv').resolve()}" in out


@pytest.mark.slow
def test_x_file_with_y_beside_scores_as_evaluate_does(run_dir, model, tmp_path, capsys):
    from pcam.data.synthetic import write_synthetic
    from pcam.evaluation.predict import predict_split

    write_synthetic(tmp_path / "data", sizes={"train": 0, "valid": 0, "test": 48}, seed=3)
    split = open_split(tmp_path / "data", "test")
    out_csv = tmp_path / "out.csv"
    code, out, _ = _predict(capsys, run_dir, split.x_path, "--out", out_csv, "--tta",
                            "--batch-size", 20)
    assert code == 0, out
    rows = _rows(out_csv)
    assert list(rows[0]) == ["id", "source", "true_label", "probability", "label",
                             "probability_tta", "label_tta"]
    assert [r["id"] for r in rows] == [str(i) for i in range(split.length)]
    assert rows[7]["source"] == f"{split.x_path.name}:7"
    np.testing.assert_array_equal([int(r["true_label"]) for r in rows], read_labels(split))
    # The same probabilities as `pcam evaluate` (predict_split) on the same patches.
    expected = predict_split(model, split, tta=True)
    for column, key in (("probability", "y_prob"), ("probability_tta", "y_prob_tta")):
        got = np.array([float(r[column]) for r in rows], np.float32)
        np.testing.assert_allclose(got, expected[key], rtol=0, atol=1e-6)
    # Metrics as evaluate scores them (its meta CSV has too few slides: patches resampled).
    scores = evaluate_predictions(expected["y_true"], expected["y_prob"], THRESHOLD,
                                  slides=expected["slides"])
    lo, hi = scores["ci"]["roc_auc"]
    assert (f"labels from the y file {SPEC['test'].y.name}: ROC AUC {scores['roc_auc']:.4f} "
            f"(95% CI {lo:.4f} to {hi:.4f}), accuracy {scores['at_chosen']['accuracy']:.4f}"
            ) in out
    assert "bootstrap over patches, 1,000 replicates" in out
    assert "predict: TTA: ROC AUC" in out and "converted" not in out


def test_slides_beside_an_x_file_are_read(synthetic_data_dir):
    patches = find_patches(synthetic_data_dir / SPEC["test"].x.name)
    assert patches.kind == "hdf5" and patches.count == 256
    assert patches.label_source == f"the y file {SPEC['test'].y.name}"
    assert len(np.unique(patches.slides)) == 16


@pytest.mark.slow
def test_single_image_and_kaggle_format(run_dir, model, tmp_path, capsys):
    image = _save(tmp_path / "one.png", _patch(1))
    code, out, _ = _predict(capsys, run_dir, image, "--out", tmp_path / "one.csv")
    assert code == 0, out
    [row] = _rows(tmp_path / "one.csv")
    assert (row["id"], row["source"], row["converted_from"]) == ("one", "one.png", "")
    assert "1 patch, " in out

    # Kaggle's test layout: a flat folder of <id>.tif; the submission is id,probability.
    test = tmp_path / "test"
    ids = ["f38a6374c348f90b587e046aac6079959adf3835", "0b2ea2a822ad23fdb1b5dd26653da899fbd2c0d5"]
    files = [_save(test / f"{name}.tif", _patch(i)) for i, name in enumerate(ids)]
    code, out, _ = _predict(capsys, run_dir, test, "--format", "kaggle", "--out",
                            tmp_path / "submission.csv")
    assert code == 0, out
    text = (tmp_path / "submission.csv").read_text()
    lines = text.splitlines()
    assert lines[0] == "id,label" and text.endswith("\n") and len(lines) == 3
    probs = _expected(model, files)
    by_id = dict(line.split(",") for line in lines[1:])
    assert sorted(by_id) == sorted(ids)
    for name, p in zip(ids, probs, strict=True):
        assert by_id[name] == str(np.float32(float(by_id[name])))  # shortest float32 text
        assert abs(float(by_id[name]) - p) < 1e-6


@pytest.mark.slow
def test_labelled_folder_and_conversions_reported(run_dir, model, tmp_path, capsys):
    src = tmp_path / "labelled"
    rgb = _patch(5)
    for i in range(4):
        _save(src / "0" / f"n{i}.png", _patch(10 + i))
        _save(src / "1" / f"t{i}.png", _patch(20 + i))
    # Lossless conversions: RGBA with an opaque alpha, and an 8-bit palette image.
    _save(src / "1" / "rgba.png", np.dstack([rgb, np.full((96, 96), 255, np.uint8)]))
    palette = Image.fromarray(rgb).convert("P")
    _save(src / "0" / "palette.png", palette)
    out_csv = tmp_path / "labelled.csv"
    code, out, _ = _predict(capsys, run_dir, src, "--out", out_csv)
    assert code == 0, out
    rows = {r["id"]: r for r in _rows(out_csv)}
    assert rows["1/rgba"]["converted_from"] == "RGBA" and rows["0/palette"]["converted_from"] == "P"
    assert rows["0/n0"]["converted_from"] == "" and rows["1/t3"]["true_label"] == "1"
    np.testing.assert_allclose(float(rows["1/rgba"]["probability"]),
                               model.predict(rgb[None], verbose=0)[0, 0], rtol=1e-4, atol=1e-6)
    assert ("converted to RGB without loss: 2 image(s) (1 8-bit palette (P), 1 RGBA with an "
            "opaque alpha)") in out
    assert "labels from the folders labelled/0 and labelled/1: ROC AUC" in out
    assert "bootstrap over patches" in out


# --- bad input: one error line naming the file, nothing written --------------------------

def _bad_images(folder):
    rgb = _patch(0)
    alpha = np.full((96, 96), 255, np.uint8)
    alpha[0, 0] = 0
    truncated = folder / "truncated.tif"
    _save(truncated, rgb)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    (folder / "junk.jpg").write_bytes(b"this is not a jpeg")
    return {
        "grey.png": (_save(folder / "grey.png", rgb, "L"), "is greyscale (mode L)"),
        "grey16.png": (_save(folder / "grey16.png", Image.fromarray(
            rgb[..., 0].astype(np.uint16) * 257)), "is greyscale (mode I;16, 16-bit)"),
        "rgb16.png": (_png16(folder / "rgb16.png", rgb), "has 16 bits per channel, not 8"),
        "alpha.png": (_save(folder / "alpha.png", np.dstack([rgb, alpha])),
                      "has an alpha channel and 1 of its 9216 pixels are not opaque"),
        "small.tif": (_save(folder / "small.tif", _patch(0, size=64)),
                      "is 64x64 pixels, not 96x96"),
        "cmyk.jpg": (_save(folder / "cmyk.jpg", rgb, "CMYK"), "has mode CMYK, not RGB"),
        "junk.jpg": (folder / "junk.jpg", "cannot be read as an image"),
        "truncated.tif": (truncated, "cannot be read as an image"),
        "pages.tif": (_multi_frame(folder / "pages.tif", rgb), "holds 2 frames"),
        "animated.png": (_multi_frame(folder / "animated.png", rgb), "holds 2 frames"),
        "trns.png": (_save_with(folder / "trns.png", rgb, transparency=(0, 0, 0)),
                     "is RGB with a transparent colour"),
        "rotated.jpg": (_rotated(folder / "rotated.jpg", rgb), "has EXIF orientation 6"),
        "huge.png": (_save(folder / "huge.png", np.zeros((9000, 10000, 3), np.uint8)),
                     "is 10000x9000 pixels, not 96x96"),  # past Pillow's bomb limit
    }


def _multi_frame(path, rgb):
    first, second = Image.fromarray(rgb), Image.fromarray(255 - rgb)
    first.save(path, save_all=True, append_images=[second])
    return path


def _save_with(path, rgb, **info):
    Image.fromarray(rgb).save(path, **info)
    return path


def _rotated(path, rgb):
    exif = Image.Exif()
    exif[274] = 6  # Orientation: rotate 90 degrees clockwise to view
    Image.fromarray(rgb).save(path, exif=exif)
    return path


def test_every_bad_patch_is_named_with_what_to_do(tmp_path):
    for name, (path, problem) in _bad_images(tmp_path).items():
        with pytest.raises(PCamError) as caught:
            read_patch_image(path)
        message = str(caught.value)
        assert message.startswith(str(path)) and problem in message, (name, message)
        assert "\n" not in message and ("rerun" in message or "move it out" in message)


@pytest.mark.parametrize("case", ["missing", "empty", "no images", "y file", "not PCam",
                                  "gz", "labels", "text"])
def test_bad_input_is_one_line_naming_it(case, run_dir, tmp_path, capsys):
    import h5py

    target, expected = tmp_path / "in", None
    if case == "missing":
        expected = f"INPUT {target} does not exist"
    elif case in ("empty", "no images"):
        target.mkdir()
        if case == "no images":
            (target / "readme.txt").write_text("x")
            (target / "camelyonpatch_level_2_split_test_x.h5").write_bytes(b"")
        expected = f"no image files (.tif, .tiff, .png, .jpg, .jpeg) in {target}"
    elif case == "y file":
        target = tmp_path / SPEC["test"].y.name
        with h5py.File(target, "w") as f:
            f["y"] = np.zeros((4, 1, 1, 1), np.uint8)
        expected = "has no dataset 'x' (found: y) (its 'y' holds labels: give the x file"
    elif case == "not PCam":
        target = tmp_path / "other.h5"
        with h5py.File(target, "w") as f:
            f["x"] = np.zeros((4, 64, 64, 3), np.uint8)
        expected = "is not a PCam x file: its dataset 'x' is uint8 with shape (4, 64, 64, 3)"
    elif case == "gz":
        target = tmp_path / (SPEC["test"].x.name + ".gz")
        target.write_bytes(b"\x1f\x8b")
        expected = "unpack it first"
    elif case == "labels":
        target = tmp_path / SPEC["test"].x.name
        with h5py.File(target, "w") as f:
            f["x"] = np.zeros((4, 96, 96, 3), np.uint8)
        with h5py.File(tmp_path / SPEC["test"].y.name, "w") as f:
            f["y"] = np.zeros((5, 1, 1, 1), np.uint8)
        expected = "holds 5 labels but"
    elif case == "text":
        target = tmp_path / "notes.txt"
        target.write_text("hello")
        expected = "is neither an image"
    with pytest.raises(PCamError) as caught:
        find_patches(target)
    assert expected in str(caught.value) and str(target.name) in str(caught.value)
    # The command line: one `error:` line, exit status 2, no CSV.
    out_csv = tmp_path / "p.csv"
    code, _, err = _predict(capsys, run_dir, target, "--out", out_csv)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not out_csv.exists()


def test_a_run_without_a_model_names_both_files(run_dir, tmp_path, capsys):
    run = make_run(tmp_path, "untrained")
    image = _save(tmp_path / "one.png", _patch(1))
    code, _, err = _predict(capsys, run, image, "--out", tmp_path / "p.csv")
    assert code == 2 and err.count("\n") == 1
    assert str(run / INFERENCE_MODEL) in err and str(run / BEST_CHECKPOINT) in err
    assert "python -m pcam train --config untrained.toml --run NEW-NAME" in err
    assert not (tmp_path / "p.csv").exists()
    # inference.keras, when present, is the model loaded; else the best checkpoint.
    (run / "checkpoints").mkdir()
    (run / BEST_CHECKPOINT).write_bytes(b"")
    assert run_model_file(run) == run / BEST_CHECKPOINT
    (run / INFERENCE_MODEL).write_bytes(b"not a zip")
    assert run_model_file(run) == run / INFERENCE_MODEL
    with pytest.raises(PCamError, match="inference.keras is damaged or incomplete"):
        load_run_model(run)


@pytest.mark.slow
def test_a_failure_midway_keeps_the_earlier_csv(run_dir, tmp_path, capsys):
    src = tmp_path / "late"
    for i in range(20):
        _save(src / f"p{i:02d}.png", _patch(i))
    (src / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out_csv = tmp_path / "kept.csv"
    out_csv.write_text("id,source,probability,label\nearlier,results,0.5,1\n")
    code, _, err = _predict(capsys, run_dir, src, "--out", out_csv, "--batch-size", 4)
    assert code == 2
    assert f"error: {src / 'zz_corrupt.png'} cannot be read as an image" in err
    assert out_csv.read_text() == "id,source,probability,label\nearlier,results,0.5,1\n"
    assert not stale_temps(out_csv)


def test_out_that_cannot_be_written_is_refused_first(run_dir, tmp_path, capsys):
    image = _save(tmp_path / "one.png", _patch(1))
    code, _, err = _predict(capsys, run_dir, image, "--out", tmp_path / "nowhere" / "p.csv")
    assert code == 2 and "the folder" in err and "does not exist" in err
    code, _, err = _predict(capsys, run_dir, image, "--out", tmp_path)
    assert code == 2 and "is a folder; give a file name" in err
    code, _, err = _predict(capsys, run_dir, image, "--out", image)  # INPUT mistyped as --out
    assert code == 2 and "named like an image or HDF5 file" in err and image.exists()


def test_out_replaces_only_an_earlier_output_of_predict(run_dir, tmp_path, capsys):
    """A mistyped --out never destroys another file: a run's record, a meta CSV, ..."""
    image = _save(tmp_path / "one.png", _patch(1))
    for name, text in (("settings.json", '{"run": "x"}'), ("meta.csv", "coord_y,coord_x\n"),
                       ("inference.keras", "PK")):
        other = tmp_path / name
        other.write_text(text)
        code, _, err = _predict(capsys, run_dir, image, "--out", other)
        assert code == 2 and "is not a CSV that pcam predict wrote" in err, name
        assert other.read_text() == text
    code, _, err = _predict(capsys, run_dir, image, "--out", "-")
    assert code == 2 and "predict writes a file, not standard output" in err
    code, _, err = _predict(capsys, run_dir, image, "--out", f"{tmp_path}/newdir/")
    assert code == 2 and "names a folder, which does not exist" in err
    assert not (tmp_path / "newdir").exists()


def test_names_that_are_not_utf8_are_refused_before_scoring(tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    _save(folder / "ok.png", _patch(1))
    _save(Path(os.fsdecode(os.fsencode(str(folder)) + b"/bad\xff.png")), _patch(2))
    with pytest.raises(PCamError, match="not valid UTF-8, which the CSV cannot hold"):
        find_patches(folder)


def test_duplicate_ids_are_refused(tmp_path):
    _save(tmp_path / "a.png", _patch(0))
    _save(tmp_path / "a.tif", _patch(0))
    with pytest.raises(PCamError, match="would get the same id 'a'"):
        find_patches(tmp_path)


def test_batches_stream_only_what_is_in_flight(tmp_path, monkeypatch):
    import pcam.data.user_patches as user_patches

    for i in range(40):
        _save(tmp_path / f"{i:02d}.png", _patch(i))
    decoded = []

    def counting(path):
        decoded.append(path)
        return read_patch_image(path)

    monkeypatch.setattr(user_patches, "read_patch_image", counting)
    patches = find_patches(tmp_path)
    batches = read_batches(patches, batch_size=4, ahead=2, threads=2)
    first = next(batches)
    assert first.start == 0 and first.images.shape == (4, 96, 96, 3)
    assert len(decoded) <= 12  # this batch and the two read ahead, not all 40
    starts = [first.start] + [b.start for b in batches]
    assert starts == list(range(0, 40, 4)) and len(decoded) == 40


def test_an_interrupted_predict_says_it_starts_again(monkeypatch, tmp_path, capsys):
    """Ctrl-C: predict keeps nothing half-written and starts over; it does not resume."""
    from pcam.app import commands

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "cmd_predict", interrupted)
    assert main(["predict", "--run", "x", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "nothing was left half-written" in err and "resume" not in err


def test_the_committed_mobilenet_scores_patches_in_a_fresh_clone(tmp_path, capsys):
    """The published MobileNet's inference model is committed with its run, so a clone
    scores patches without training: the model loads and its probabilities are real."""
    from pcam.core.paths import PROJ_ROOT

    committed = sorted(PROJ_ROOT.glob("results/**/inference.keras"))
    assert committed, "no run's inference.keras is committed"
    for model_file in committed:
        run = model_file.parent
        folder = tmp_path / run.name
        for i in range(4):
            _save(folder / f"p{i}.png", _patch(i))
        out = tmp_path / f"{run.name}.csv"
        code, stdout, err = _predict(capsys, run, folder, "--out", out)
        assert code == 0, err
        rows = _rows(out)
        assert [r["id"] for r in rows] == [f"p{i}" for i in range(4)]
        assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)
        assert len({r["probability"] for r in rows}) > 1  # a trained model, not a constant
