"""Issue 14, the data layer: every bad input gives one line and loses nothing.

A table of cases: how the bad input is made (tiny files in tmp_path), the
`pcam.app.cli.main` command, its exit status, a regex for the one `error:` line on
stderr (exit 2) or for `check`'s table on stdout, and that no file there before
was changed or lost (unless told `--overwrite`).
"""

import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from h5_files import write_pcam
from PIL import Image

from pcam.app.cli import main
from pcam.data.spec import SPEC, SPLITS

# --- making bad inputs ----------------------------------------------------------------------


def _path(tmp, split, kind="x") -> Path:
    return tmp / "d" / getattr(SPEC[split], kind).name


def _write(path: Path, key: str, data=None, **layout) -> None:
    path.unlink(missing_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=data, **layout)


def _bad(split, kind="x", data=None, damage=None, **layout):
    """A maker: tmp/d with three splits of 16 patches (h5py, gzip chunks of 4), then
    `split`'s `kind` file rewritten to hold `data` (with `layout`) and/or `damage(path)`d."""
    def make(tmp):
        for name in SPLITS:
            write_pcam(tmp / "d", name, 16, chunk=4)
        (tmp / "d" / "dataset.json").write_text('{"source": "synthetic", "synthetic": true}')
        if data is not None or layout:
            _write(_path(tmp, split, kind), kind, data, **layout)
        if damage:
            damage(_path(tmp, split, kind))
    return make


def _empty(split):
    return _bad(split, data=np.zeros((0, 96, 96, 3), np.uint8), damage=lambda x: _write(
        x.with_name(x.name.replace("_x.", "_y.")), "y", np.zeros((0, 1, 1, 1), np.uint8)))


def _labels(split, labels, **layout):
    return _bad(split, "y", np.asarray(labels, np.uint8).reshape(-1, 1, 1, 1), **layout)


def _flip(chunk):
    """A damage: 64 bytes flipped in the middle of the file's gzip chunk `chunk`."""
    def damage(path):
        with h5py.File(path, "r") as f:
            info = f[path.stem[-1]].id.get_chunk_info(chunk)  # dataset x or y
        data = bytearray(path.read_bytes())
        at = info.byte_offset + info.size // 2
        data[at:at + 64] = bytes(b ^ 0xFF for b in data[at:at + 64])
        path.write_bytes(bytes(data))
    return damage


def _images(tmp, name="src", n=2, classes=(0, 1)):
    """tmp/name/{0,1}/*.png: 96x96 RGB patches, as `import-images` wants them."""
    for label, i in [(label, i) for label in classes for i in range(n)]:
        (tmp / name / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((96, 96, 3), 40 * i + label, np.uint8)).save(
            tmp / name / str(label) / f"{i}.png")
    (tmp / name / str(1 - classes[0])).mkdir(parents=True, exist_ok=True)


def _imported(tmp, splits=SPLITS):
    """tmp/d holding `splits`, imported earlier one by one from tmp/src/<split>/."""
    for split in SPLITS:
        _images(tmp, f"src/{split}")
    for split in splits:
        assert main(_argv("import-images {src} --data-dir {d} --split " + split, tmp)) == 0


def _synthetic_made(tmp):
    main(_argv(SYN, tmp))
    _images(tmp)


# --- the table ------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    make: object  # tmp_path -> None; tmp_path/afile is always there
    argv: str  # split on spaces; "{d}", "{src}" and "{tmp}" are filled in
    code: int
    err: str | None = None  # regex of the one stderr line (exit 2); None: stderr empty
    out: str | None = None  # regex searched in stdout
    env: str | None = None  # PCAM_DATA_DIR


CHECK = "check --data-dir {d}"
CORRUPT_X = _bad("train", damage=_flip(2))  # patches 8:12
CORRUPT_Y = _labels("valid", np.arange(16) % 2, chunks=(4, 1, 1, 1), compression="gzip",
                    damage=_flip(1))  # labels 4:8
SYN = "synthetic --data-dir {d} --train 16 --valid 16 --test 16"
IMPORT = "import-images {src} --data-dir {d} --split valid"
FILE_ERR = r"afile is a file, not a folder; give --data-dir"

CASES = [
    # Rule 2: splits that cannot train or score; `check` reads every chunk.
    Case("empty train", _empty("train"), CHECK, 1,
         out=r"train: split 'train': .*_train_x\.h5 and .*_train_y\.h5 hold 0 patches"),
    Case("empty valid", _empty("valid"), CHECK, 1, out=r"valid: split 'valid': .* hold 0 patches"),
    Case("empty test", _empty("test"), CHECK, 1, out=r"test: split 'test': .* hold 0 patches"),
    Case("one-class train", _labels("train", [0] * 16), CHECK, 1,
         out=r"train: split 'train': all 16 labels in .*_train_y\.h5 are 0; train needs "
             r"patches of both classes \(0 and 1\) to learn from"),
    Case("one-class valid", _labels("valid", [1] * 16), CHECK, 1,
         out=r"valid: .* are 1; valid needs patches of both classes \(0 and 1\) to measure AUC"),
    Case("one-class test still scores", _labels("test", [1] * 16), CHECK, 0, out=r"test .* ok"),
    Case("corrupt x chunk", CORRUPT_X, CHECK, 1,
         out=r"(?s)train .* failed .*BAD.*train: cannot read patches 8:12 of .*_train_x\.h5 .*"
             r"the file is corrupt; delete it"),
    Case("corrupt x chunk, --md5 (none for synthetic)", CORRUPT_X, CHECK + " --md5", 1,
         out=r"(?s)failed  n/a \(synthetic/imported\)  BAD.*cannot read patches 8:12"),
    Case("corrupt x chunk, --quick skips the read", CORRUPT_X, CHECK + " --quick", 0,
         out=r"train .* skipped .* ok"),
    Case("corrupt y chunk", CORRUPT_Y, CHECK, 1, out=r"valid: cannot read labels 4:8 of .*_y\.h5"),
    Case("corrupt y chunk, --quick still reads labels", CORRUPT_Y, CHECK + " --quick", 1,
         out=r"valid: cannot read labels 4:8"),
    Case("truncated x", _bad("test", damage=lambda p: p.write_bytes(p.read_bytes()[:9000])),
         CHECK, 1, out=r"test: .*_test_x\.h5 is not a readable HDF5 file \(truncated file"),
    Case("chunks never written", _bad("valid", shape=(16, 96, 96, 3), dtype=np.uint8,
                                      chunks=(4, 96, 96, 3)), CHECK, 1,
         out=r"valid: .*_valid_x\.h5: part of dataset 'x' was never written"),
    Case("x is float32", _bad("train", data=np.zeros((16, 96, 96, 3), np.float32)), CHECK, 1,
         out=r"dtype float32, expected uint8"),
    Case("x is 64x64", _bad("valid", data=np.zeros((16, 64, 64, 3), np.uint8)), CHECK, 1,
         out=r"has shape \(16, 64, 64, 3\), expected \(N, 96, 96, 3\)"),
    Case("x and y lengths differ", _labels("test", [0, 1] * 7 + [0]), CHECK, 1,
         out=r"holds 16 patches but .*_test_y\.h5 holds 15 labels"),
    Case("labels not 0/1", _labels("train", [3] * 16), CHECK, 1, out=r"16 labels are not 0 or 1"),
    Case("x file is a folder", _bad("test", damage=lambda p: (p.unlink(), p.mkdir())), CHECK, 1,
         out=r"test: split 'test': .*_test_x\.h5 is a folder, not an HDF5 file"),
    # The data folder itself.
    Case("check --data-dir is a file", None, "check --data-dir {tmp}/afile", 2, FILE_ERR),
    Case("PCAM_DATA_DIR is a file", None, "check", 2,
         r"PCAM_DATA_DIR=.*afile is a file, not a folder; set PCAM_DATA_DIR to a folder",
         env="{tmp}/afile"),
    Case("synthetic --data-dir is a file", None, "synthetic --data-dir {tmp}/afile", 2, FILE_ERR),
    Case("synthetic --data-dir under a file", None, "synthetic --data-dir {tmp}/afile/sub",
         2, r"data folder .*afile/sub: .*afile is a file, not a folder"),
    Case("import-images --data-dir is a file", _images,
         "import-images {src} --data-dir {tmp}/afile --split test", 2, FILE_ERR),
    # Rule 1: nothing made earlier is replaced or deleted without --overwrite.
    Case("synthetic over imported", _imported, SYN, 2,
         r"holds imported patches, images from src: train, valid and test would be replaced by "
         r"`synthetic`; rerun with --overwrite to do that, or choose another --data-dir"),
    Case("synthetic over imported, --overwrite", _imported, SYN + " --overwrite", 0,
         out=r"replaced .*_train_x\.h5 \(imported patches, images from src\)"),
    Case("synthetic smaller than before", _synthetic_made,
         "synthetic --data-dir {d} --train 16 --valid 16 --test 0", 2,
         r"synthetic patches, seed 0: train and valid would be replaced and test deleted"),
    Case("synthetic over the official download, even --overwrite",
         lambda t: write_pcam(t / "d", "train", 8), SYN + " --overwrite", 2,
         r"_train_x\.h5 was not written by pcam .* even with --overwrite"),
    Case("synthetic of nothing", lambda t: None,
         "synthetic --data-dir {d} --train 0 --valid 0 --test 0", 2,
         r"nothing to write: give at least one of --train, --valid, --test"),
    Case("synthetic one-class valid", lambda t: None, "synthetic --data-dir {d} --valid 1", 2,
         r"--valid 1 with seed 0 gives patches of one class only; .* use --valid 16 or more"),
    Case("import valid beside synthetic splits", _synthetic_made, IMPORT, 2,
         r"valid would be replaced and train and test deleted by `import-images`"),
    Case("import valid beside imported splits keeps them",
         lambda t: _imported(t, ("train", "test")), IMPORT, 0),
    Case("import valid over imported valid", _imported, IMPORT, 2,
         r"imported patches, images from src: valid would be replaced by `import-images`"),
    Case("import valid over imported valid, --overwrite", _imported, IMPORT + " --overwrite",
         0, out=r"replaced .*_valid_y\.h5"),
    Case("import with unreadable dataset.json", lambda t: (
        _imported(t, ("train", "test")), (t / "d" / "dataset.json").write_text("{broken")),
         IMPORT, 2, r"PCam files written by pcam: train and test would be deleted"),
    Case("import one class", lambda t: _images(t, classes=(1,)),
         "import-images {src} --data-dir {d} --split train", 2,
         r"train \(src\) would hold class 1 only; train needs both 0 and 1"),
    Case("import --holdout leaves valid one class", lambda t: _images(t, "src/train", n=3),
         "import-images {src} --data-dir {d} --holdout 1", 2,
         r"valid \(1 held out .*\) would hold class \d only; .* or raise --holdout"),
]


def _argv(text: str, tmp: Path) -> list[str]:
    return text.format(d=tmp / "d", src=tmp / "src", tmp=tmp).split()


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PCAM_DATA_DIR", raising=False)
    (tmp_path / "afile").write_text("not a folder")
    if case.make:
        case.make(tmp_path)
    if case.env:
        monkeypatch.setenv("PCAM_DATA_DIR", case.env.format(tmp=tmp_path))
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = main(_argv(case.argv, tmp_path))
    out, err = capsys.readouterr()
    assert code == case.code, (out, err)
    assert "Traceback" not in out + err
    if case.err is None:
        assert err == ""
    else:
        [line] = err.splitlines()
        assert line.startswith("error: ") and re.search(case.err, line), line
    if case.out is not None:
        assert re.search(case.out, out), out
    # Rule 1: nothing changes unless a printed line names it (a write may extend dataset.json).
    told = [ln.split()[1] for ln in out.splitlines() if ln.startswith(("replaced ", "removed "))]
    after = _snapshot(tmp_path)
    for path, value in before.items():
        if str(tmp_path / path) not in told and not (code == 0 and path.name == "dataset.json"):
            assert after.get(path) == value, path


# --- what --overwrite says and keeps -------------------------------------------------------


def test_overwrite_prints_one_line_per_file(tmp_path, capsys):
    _imported(tmp_path, ("train", "test"))
    before = set(_snapshot(tmp_path / "d"))
    argv = "synthetic --data-dir {d} --train 16 --valid 16 --test 0 --overwrite"
    assert main(_argv(argv, tmp_path)) == 0
    out = capsys.readouterr().out.splitlines()
    replaced = [line for line in out if line.startswith("replaced ")]
    removed = [line for line in out if line.startswith("removed ")]
    assert len(replaced) == 3 and len(removed) == 2  # train x, y, dataset.json; test x, y
    kind = "(imported patches, images from src)"
    assert all(line.endswith(kind) for line in replaced[:2] + removed)
    assert replaced[2].endswith("dataset.json (its description of the files above)")
    test, valid = ({Path(SPEC[s].x.name), Path(SPEC[s].y.name)} for s in ("test", "valid"))
    metas = {Path(SPEC[s].meta.name) for s in ("train", "valid")}  # new: synthetic slide ids
    assert set(_snapshot(tmp_path / "d")) == before - test | valid | metas


# --- training refuses before any epoch; a corrupt chunk names file and patches ---------------


@pytest.mark.parametrize(
    ("make", "cap", "message"),
    [
        (_empty("train"), None, r"split 'train': .* hold 0 patches"),
        (_empty("valid"), None, r"split 'valid': .* hold 0 patches"),
        (_labels("train", [1] * 16), None, r"split 'train': all 16 labels in .* are 1"),
        (_labels("valid", [0] * 16), None, r"split 'valid': all 16 labels in .* are 0"),
        (_labels("train", np.arange(16) >= 8), 8,
         r"split 'train': max_samples=8 keeps the first 8 patches of .*_train_y\.h5, all "
         r"labelled 0; .* raise max_samples or leave it out"),
    ],
    ids=["empty train", "empty valid", "one-class train", "one-class valid", "cap, one class"],
)
def test_training_refuses_before_any_epoch(tmp_path, make, cap, message):
    from pcam.core.errors import PCamError
    from pcam.run.config import TrainConfig
    from pcam.train.session import start_run

    make(tmp_path)
    config = TrainConfig(model="mobilenet", run="r", data_dir=str(tmp_path / "d"), alpha=0.25,
                         weights=None, epochs=1, head_epochs=0, batch_size=8, augment=(),
                         tta=False, max_samples=cap, precision="float32")
    with pytest.raises(PCamError, match=message):
        start_run(config, results=tmp_path / "results")
    assert not list(tmp_path.rglob("record.json"))  # no run was started


def test_corrupt_chunk_in_training_names_file_and_patches(tmp_path):
    import tensorflow as tf

    from pcam.core.errors import user_message
    from pcam.data.h5read import open_split
    from pcam.data.pipeline import make_dataset

    CORRUPT_X(tmp_path)
    ds = make_dataset(open_split(tmp_path / "d", "train"), batch_size=4, cache=False)
    with pytest.raises(tf.errors.OpError) as error:
        for _ in ds:
            pass
    message = user_message(error.value)  # the PCamError's, from TensorFlow's text
    assert message.startswith(f"cannot read patches 8:12 of {_path(tmp_path, 'train')} (")
    assert message.endswith("the file is corrupt; delete it and download, generate or import "
                            "it again")
    assert user_message(tf.errors.UnknownError(None, None, "some other TensorFlow error")) is None
