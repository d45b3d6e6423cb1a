"""Issue 21, the data layer: writes are all-or-nothing, fingerprints see any change,
and bad inputs are named in one line.

- Interruptions of `synthetic` and `import-images` at several points, in real
  subprocesses sent SIGTERM, SIGINT or SIGKILL: the folder holds the old data or
  the new, never a mix; `check` passes; the same command reruns.
- Failures injected at each step in-process (a full disk at each file, a failed
  commit): the message names the file that failed, the folder is unchanged.
- The fingerprint sees a same-size change in place; old records resume.
- Unreadable inputs: duplicated Kaggle ids, entries `import-images` skips, a
  144-megapixel image, FIFOs, a newline in a name, a broken `dataset.json`.
"""

import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from pcam.app.cli import main
from pcam.core import fileio
from pcam.core.errors import PCamError
from pcam.core.paths import PROJ_ROOT
from pcam.data import staging
from pcam.data.check import check_data_dir
from pcam.data.describe import check_same_data, data_section, fingerprint
from pcam.data.h5read import available_splits, open_split, read_dataset_info
from pcam.data.import_images import import_images
from pcam.data.spec import SPEC, SPLITS
from pcam.data.synthetic import write_synthetic

SIZES = {"train": 64, "valid": 32, "test": 32}
SYN = ["--train", "64", "--valid", "32", "--test", "32"]
X, Y, META = (SPEC["train"].x.name, SPEC["train"].y.name, SPEC["valid"].meta.name)


def _visible(folder: Path) -> dict:
    """The folder's files as a reader sees them (hidden ones left out), with their bytes."""
    return {p.name: p.read_bytes() for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".")}


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(staging.PREFIX)]


def _images(root: Path, n: int = 3) -> None:
    """root/{train,valid}/{0,1}/*.png: distinct 96x96 RGB patches."""
    for split in ("train", "valid"):
        for label in (0, 1):
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                value = 10 * i + label + (100 if split == "valid" else 0)
                Image.fromarray(np.full((96, 96, 3), value, np.uint8)).save(
                    root / split / str(label) / f"p{i}.png")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[int, Path]:
    """{seed: a synthetic folder of SIZES}, for seeds 0 and 1, written once."""
    root = tmp_path_factory.mktemp("made")
    for seed in (0, 1):
        write_synthetic(root / str(seed), SIZES, seed=seed)
    return {seed: root / str(seed) for seed in (0, 1)}


def _copy(made: dict, seed: int, to: Path) -> Path:
    shutil.copytree(made[seed], to)
    return to


@pytest.fixture
def alarm():
    """Fail instead of hanging forever (an open() on a FIFO blocks)."""
    def expire(signum, frame):
        raise TimeoutError("blocked: something opened a FIFO")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# --- interruptions in real processes ----------------------------------------------------------

CHILD = r"""
import signal
# Ctrl-C raises KeyboardInterrupt, as in a terminal, also when the tests themselves
# run in the background (a shell starts background jobs with SIGINT ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)
import os, sys, time
from pathlib import Path

point, marker, argv = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
import pcam.data.import_images as imported
import pcam.data.synthetic as synthetic


def pause(seconds=120):
    marker.write_text(point)
    time.sleep(seconds)


def in_split(module, split, where):
    real = module.write_split_files
    def patched(folder, name, images, labels, **kwargs):
        if name == split and where == "before":
            pause()
        def blocks():
            for i, block in enumerate([images] if hasattr(images, "shape") else images):
                yield block
                if name == split and where == "mid" and i == 0:
                    pause()  # the file is open, half written
        return real(folder, name, blocks(), labels, **kwargs)
    module.write_split_files = patched


def before(module, attr, when=lambda *args: True):
    real = getattr(module, attr)
    def patched(*args, **kwargs):
        if when(*args):
            pause()
        return real(*args, **kwargs)
    setattr(module, attr, patched)


if point == "train x":
    in_split(synthetic, "train", "mid")
elif point == "valid x":
    in_split(synthetic, "valid", "mid")
elif point == "valid meta":
    before(synthetic, "write_meta", lambda folder, split, *rest: split == "valid")
elif point == "dataset.json":
    before(synthetic, "write_dataset_info")
elif point == "import valid":
    in_split(imported, "valid", "before")
elif point == "import dataset.json":
    before(imported, "write_dataset_info")
elif point == "commit":  # after the first file moved in: signals wait for the rest
    real_replace = os.replace
    def replace(src, dst):
        real_replace(src, dst)
        if ".pcam-write-" in str(src) and ".pcam-write-" not in str(dst):
            os.replace = real_replace
            pause(3)
    os.replace = replace

from pcam.app.cli import main
sys.exit(main(argv))
"""


def _interrupt(tmp: Path, point: str, sig: int, argv: list[str]) -> tuple[int, str]:
    """Run `python -m pcam ARGV` until it reaches `point`, send `sig`; (exit status, stderr)."""
    marker = tmp / "marker"
    marker.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PCAM_DATA_DIR"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, point, str(marker), *argv],
                            cwd=PROJ_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the command ended before {point}: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the command did not reach {point} in 120 s")
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


# (point, signal, what the folder must hold right after: "old" or "new")
POINTS = [
    ("train x", signal.SIGTERM, "old"), ("train x", signal.SIGKILL, "old"),
    ("valid x", signal.SIGTERM, "old"), ("valid x", signal.SIGKILL, "old"),
    ("valid x", signal.SIGINT, "old"),
    ("valid meta", signal.SIGTERM, "old"), ("valid meta", signal.SIGKILL, "old"),
    ("dataset.json", signal.SIGTERM, "old"), ("dataset.json", signal.SIGKILL, "old"),
    ("commit", signal.SIGTERM, "new"), ("commit", signal.SIGINT, "new"),
    ("commit", signal.SIGKILL, "mix until read"),
]
EXIT = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGKILL: -signal.SIGKILL}


def _finish_and_compare(tmp, d, sig, expect, old, new, capsys):
    if sig == signal.SIGKILL:  # no clean-up ran: the leftover is there until the next reader
        assert _leftovers(d)
        if expect == "mix until read":
            assert _visible(d) not in (old, new)  # the kill did land mid-commit
            expect = "new"
    else:
        assert not _leftovers(d)
    capsys.readouterr()
    assert main(["check", "--data-dir", str(d)]) == 0  # a reader finishes or drops it
    out = capsys.readouterr().out
    if sig == signal.SIGKILL:
        assert ("finished an interrupted write" if expect == "new" else
                "left by an interrupted write") in out
    assert not _leftovers(d)
    assert _visible(d) == (old if expect == "old" else new)


@pytest.mark.parametrize(("point", "sig", "expect"), POINTS,
                         ids=[f"{p}-{signal.Signals(s).name}" for p, s, _ in POINTS])
@pytest.mark.slow
def test_interrupted_synthetic_leaves_old_or_new(tmp_path, capsys, made, point, sig, expect):
    d = _copy(made, 0, tmp_path / "d")
    old, new = _visible(d), _visible(made[1])
    argv = ["synthetic", "--data-dir", str(d), *SYN, "--seed", "1", "--overwrite"]
    code, err = _interrupt(tmp_path, point, sig, argv)
    assert code == EXIT[sig], err
    assert "Traceback" not in err
    _finish_and_compare(tmp_path, d, sig, expect, old, new, capsys)
    assert main(argv) == 0  # the same command reruns
    assert _visible(d) == new and not _leftovers(d)


def test_reader_leaves_a_live_writers_staging_folder_alone(tmp_path, capsys, made):
    d = _copy(made, 0, tmp_path / "d")
    old, marker = _visible(d), tmp_path / "marker"
    argv = ["synthetic", "--data-dir", str(d), *SYN, "--seed", "1", "--overwrite"]
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "valid x", str(marker), *argv],
                            cwd=PROJ_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        [stage] = _leftovers(d)
        assert main(["check", "--data-dir", str(d), "--quick"]) == 0  # reads the old data
        assert stage.exists() and _visible(d) == old  # the writer's lock kept it
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert proc.returncode == 143 and not _leftovers(d) and _visible(d) == old


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_first_write_reruns_without_overwrite(tmp_path, capsys, made, sig):
    """`make demo` Ctrl-C'd while writing its data: the rerun it asks for works."""
    d = tmp_path / "d"
    argv = ["synthetic", "--data-dir", str(d), *SYN]
    code, _ = _interrupt(tmp_path, "valid x", sig, argv)
    assert code == EXIT[sig]
    assert not list(d.glob("*.h5")) and not (d / "dataset.json").exists()  # what demo checks
    assert main(argv) == 0
    assert _visible(d) == _visible(made[0]) and not _leftovers(d)


@pytest.mark.parametrize(("point", "sig"), [
    ("import valid", signal.SIGTERM), ("import valid", signal.SIGKILL),
    ("import dataset.json", signal.SIGTERM), ("import dataset.json", signal.SIGKILL),
], ids=["valid-SIGTERM", "valid-SIGKILL", "dataset.json-SIGTERM", "dataset.json-SIGKILL"])
@pytest.mark.slow
def test_interrupted_import_leaves_old_or_new(tmp_path, capsys, made, point, sig):
    d, ref, src = _copy(made, 0, tmp_path / "d"), tmp_path / "ref", tmp_path / "src"
    _images(src)
    import_images(src, ref)
    capsys.readouterr()
    old, new = _visible(d), _visible(ref)
    argv = ["import-images", str(src), "--data-dir", str(d), "--overwrite"]
    code, err = _interrupt(tmp_path, point, sig, argv)
    assert code == EXIT[sig], err
    _finish_and_compare(tmp_path, d, sig, "old", old, new, capsys)
    assert main(argv) == 0
    assert _visible(d) == new


def test_stale_temps_of_an_older_pcam_are_removed(tmp_path, made):
    tmp_path = _copy(made, 0, tmp_path / "d")
    stale = [tmp_path / f".{name}.abc123.tmp{Path(name).suffix}"
             for name in (X, META, "dataset.json")]
    for path in stale:
        path.write_bytes(b"half a file")
    write_synthetic(tmp_path, SIZES, seed=1, overwrite=True)
    assert not any(path.exists() for path in stale)


# --- failures injected at each step -------------------------------------------------------------

def _full_disk_at(monkeypatch, name: str) -> None:
    """A full disk when the staged file `name` is synced (every file goes through that)."""
    real = fileio._fsync

    def fsync(path):
        if path.name.startswith(f".{name}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path)
    monkeypatch.setattr(fileio, "_fsync", fsync)


@pytest.mark.parametrize("name", [X, Y, SPEC["test"].x.name, META, "dataset.json"])
def test_full_disk_names_the_file_and_changes_nothing(tmp_path, monkeypatch, made, name):
    tmp_path = _copy(made, 0, tmp_path / "d")
    before = _visible(tmp_path)
    _full_disk_at(monkeypatch, name)
    with pytest.raises(PCamError) as error:
        write_synthetic(tmp_path, SIZES, seed=1, overwrite=True)
    message = str(error.value)
    assert message.startswith(f"could not write {tmp_path / name} (No space left on device)")
    others = {X, Y, SPEC["test"].x.name, META, "dataset.json"} - {name}
    assert not any(other in message for other in others)
    assert staging.PREFIX not in message
    assert _visible(tmp_path) == before and not _leftovers(tmp_path)


def test_full_disk_while_writing_patches_names_x(tmp_path, monkeypatch, made):
    tmp_path = _copy(made, 0, tmp_path / "d")
    before = _visible(tmp_path)

    def full(self, key, value):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    with pytest.raises(PCamError, match=rf"^could not write {tmp_path / X} \(No space") as error:
        write_synthetic(tmp_path, SIZES, seed=1, overwrite=True)
    assert "_y.h5" not in str(error.value)
    assert _visible(tmp_path) == before and not _leftovers(tmp_path)


def test_failed_commit_is_finished_by_the_next_reader(tmp_path, monkeypatch, capsys, made):
    d = _copy(made, 0, tmp_path / "d")
    real, moved = os.replace, []

    def replace(src, dst):
        if staging.PREFIX in str(src) and staging.PREFIX not in str(dst):
            if moved:
                raise OSError(errno.EIO, "Input/output error")
            moved.append(dst)
        return real(src, dst)
    monkeypatch.setattr(staging.os, "replace", replace)
    with pytest.raises(PCamError, match=r"could not finish writing .* moved in by the next "
                                        r"pcam command that reads the folder"):
        write_synthetic(d, SIZES, seed=1, overwrite=True)
    monkeypatch.setattr(staging.os, "replace", real)
    assert available_splits(d) == list(SPLITS)  # a reader
    assert "finished an interrupted write" in capsys.readouterr().out
    assert _visible(d) == _visible(made[1]) and not _leftovers(d)


def test_write_split_is_all_or_nothing(tmp_path, made):
    from pcam.data.h5write import write_split

    tmp_path = _copy(made, 0, tmp_path / "d")
    before = _visible(tmp_path)
    with pytest.raises(ValueError, match="31 images but 32 labels"):
        write_split(tmp_path, "valid", np.zeros((31, 96, 96, 3), np.uint8), np.arange(32) % 2)
    assert _visible(tmp_path) == before and not _leftovers(tmp_path)


# --- check sees a mix; check and training agree on dataset.json --------------------------------

def test_check_fails_a_folder_that_mixes_two_writes(tmp_path, capsys, made):
    _copy(made, 0, tmp_path / "a")
    for name in (X, Y):  # the same sizes: only the write id tells them apart
        shutil.copy(made[1] / name, tmp_path / "a" / name)
    assert main(["check", "--data-dir", str(tmp_path / "a"), "--quick"]) == 1
    assert (f"train: {tmp_path / 'a' / X} is not the file dataset.json describes (another "
            "write made it)") in capsys.readouterr().out
    rows = check_data_dir(tmp_path / "a")
    assert [row["ok"] for row in rows] == [False, True, True]


def test_check_fails_counts_that_dataset_json_does_not_list(tmp_path, capsys, made):
    tmp_path = _copy(made, 0, tmp_path / "d")
    info = json.loads((tmp_path / "dataset.json").read_text())
    info["splits"]["valid"] = 64
    del info["splits"]["test"]
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    assert main(["check", "--data-dir", str(tmp_path), "--quick"]) == 1
    out = capsys.readouterr().out
    assert "dataset.json lists 64 patches for valid, its files hold 32" in out
    assert "dataset.json does not list split 'test'" in out


BROKEN_INFO = {
    "not JSON": lambda p: p.write_text("{broken"),
    "a list": lambda p: p.write_text("[1, 2]"),
    "seed of the wrong type": lambda p: p.write_text('{"source": "synthetic", "seed": "x"}'),
    "splits not an object": lambda p: p.write_text('{"splits": [1]}'),
    "not UTF-8": lambda p: p.write_bytes(b'{"source": "\xff"}'),
    "a folder": lambda p: p.mkdir(),
    "a FIFO": lambda p: os.mkfifo(p),
}


@pytest.mark.parametrize("make", BROKEN_INFO.values(), ids=BROKEN_INFO.keys())
def test_broken_dataset_json_refused_alike_by_check_and_training(tmp_path, capsys, alarm, made,
                                                                make):
    from pcam.run.config import TrainConfig

    tmp_path = _copy(made, 0, tmp_path / "d")
    (tmp_path / "dataset.json").unlink()
    make(tmp_path / "dataset.json")
    capsys.readouterr()
    assert main(["check", "--data-dir", str(tmp_path)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and str(tmp_path / "dataset.json") in line
    splits = {name: open_split(tmp_path, name) for name in SPLITS}
    config = TrainConfig(model="mobilenet", run="r", data_dir=str(tmp_path), precision="float32")
    with pytest.raises(PCamError) as error:  # what training builds its record from
        data_section(config, tmp_path, splits)
    assert f"error: {error.value}" == line


# --- the fingerprint ------------------------------------------------------------------------

def _flip_middle(path: Path) -> None:
    """Change bytes in the middle of `path` in place: same size, same mtime."""
    stat = path.stat()
    with open(path, "r+b") as f:
        f.seek(stat.st_size // 2 + 12345)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _record(folder: Path) -> dict:
    splits = {name: open_split(folder, name) for name in SPLITS}
    return {"run": "r", "data": {"fingerprint": fingerprint(splits)}}


def test_resume_refused_after_a_same_size_change_in_place(tmp_path, monkeypatch, made):
    from pcam.data import describe

    monkeypatch.setattr(describe, "_BLOCK", 4096)  # a sparse sample, as on the 7 GB file
    tmp_path = _copy(made, 0, tmp_path / "d")
    record = _record(tmp_path)
    _flip_middle(tmp_path / X)
    now = _record(tmp_path)
    assert now["data"]["fingerprint"]["train"]["x"]["sampled_sha256"] == \
        record["data"]["fingerprint"]["train"]["x"]["sampled_sha256"]  # the sample misses it
    with pytest.raises(PCamError, match=rf"run r started on other data .*train x file {X}: "
                                        r"other sha256\)"):
        check_same_data(record, now["data"], tmp_path)


def test_resume_check_for_the_terminal(tmp_path, made):
    from pcam.data.describe import check_resume_data

    tmp_path = _copy(made, 0, tmp_path / "d")
    record = _record(tmp_path)
    assert check_resume_data(record, tmp_path) is None
    _flip_middle(tmp_path / SPEC["valid"].x.name)
    with pytest.raises(PCamError, match=r"valid x file .*: other sha256"):
        check_resume_data(record, tmp_path)


def test_old_records_with_sampled_digests_still_resume(tmp_path, made):
    tmp_path = _copy(made, 0, tmp_path / "d")
    record = _record(tmp_path)
    for files in record["data"]["fingerprint"].values():
        del files["x"]["sha256"]  # as an older pcam wrote it
    note = check_same_data(record, _record(tmp_path)["data"], tmp_path)
    assert note.startswith("run r's record holds only sampled digests of the x files of test, "
                           "train, valid (written by an older pcam)")
    assert note.endswith("; resuming")
    _flip_middle(tmp_path / X)  # under 8 MiB the sample is the whole file
    with pytest.raises(PCamError, match="other sampled_sha256"):
        check_same_data(record, _record(tmp_path)["data"], tmp_path)


# --- import-images: inputs it cannot use are named ---------------------------------------------

def _kaggle(src: Path, rows: str) -> None:
    src.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((96, 96, 3), i, np.uint8)).save(src / f"id{i}.tif")
    (src / "train_labels.csv").write_text(rows)


def test_kaggle_duplicated_id_refused_with_the_id(tmp_path):
    _kaggle(tmp_path / "src", "id,label\nid0,0\nid0,1\nid1,1\n")
    with pytest.raises(PCamError, match=r"train_labels\.csv: id 'id0' has two rows \(lines 2 "
                                        r"and 3, labels 0 and 1\); keep one row per image"):
        import_images(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_kaggle_csv_saved_by_excel(tmp_path):
    _kaggle(tmp_path / "src", "\ufeffid,label\nid0,0\nid1,1\n")  # starts with a BOM
    assert import_images(tmp_path / "src", tmp_path / "out")["splits"] == {"train": 2}


def test_import_says_what_it_skipped_and_reads_bmp_and_webp(tmp_path, capsys, alarm):
    src = tmp_path / "src"
    _images(src)
    folder = src / "train" / "0"
    Image.fromarray(np.full((96, 96, 3), 7, np.uint8)).save(folder / "b.bmp")
    Image.fromarray(np.full((96, 96, 3), 8, np.uint8)).save(folder / "w.webp", lossless=True)
    (folder / "nested").mkdir()
    Image.fromarray(np.full((96, 96, 3), 9, np.uint8)).save(folder / "nested" / "n.png")
    (folder / "notes.txt").write_text("x")
    (folder / ".DS_Store").write_bytes(b"x")
    os.mkfifo(folder / "pipe.png")
    info = import_images(src, tmp_path / "out", split="train")
    assert info["splits"] == {"train": 8}  # 3 + 3 png, the bmp and the webp
    [line] = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("skipped")]
    assert line.startswith("skipped 4 entries of src/train/0 that are not image files")
    for what in (".DS_Store (hidden)", "nested (a folder)", "notes.txt",
                 "pipe.png (a FIFO (named pipe))"):
        assert what in line


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header says width x height RGB (no pixel data: decoding would fail)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_huge_image_refused_from_its_header(tmp_path, recwarn):
    src = tmp_path / "src"
    _images(src)
    _png_header(src / "train" / "1" / "huge.png", 12000, 12000)  # 144 megapixels
    with pytest.raises(PCamError, match=r"train/1/huge\.png is 12000x12000 pixels, not 96x96"):
        import_images(src, tmp_path / "out", split="train")
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


def test_newline_in_a_file_name_keeps_the_error_on_one_line(tmp_path, capsys):
    src = tmp_path / "src"
    _images(src)
    Image.fromarray(np.zeros((96, 96), np.uint8)).save(src / "train" / "1" / "a\nb.png")
    assert main(["import-images", str(src), "--data-dir", str(tmp_path / "out"),
                 "--split", "train"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "'train/1/a\\nb.png' is greyscale" in line


# --- things that are not files under PCam's names ---------------------------------------------

def test_fifo_is_named_a_fifo_not_a_folder(tmp_path, capsys, alarm, made):
    tmp_path = _copy(made, 0, tmp_path / "d")
    (tmp_path / SPEC["test"].x.name).unlink()
    os.mkfifo(tmp_path / SPEC["test"].x.name)
    assert main(["check", "--data-dir", str(tmp_path)]) == 1
    assert (f"test: split 'test': {tmp_path / SPEC['test'].x.name} is a FIFO (named pipe), "
            "not an HDF5 file") in capsys.readouterr().out
    assert main(["synthetic", "--data-dir", str(tmp_path), *SYN, "--overwrite"]) == 2
    assert "is a FIFO (named pipe), not a file; move it out" in capsys.readouterr().err


def test_fifo_meta_csv_is_a_bad_row(tmp_path, capsys, alarm, made):
    tmp_path = _copy(made, 0, tmp_path / "d")
    (tmp_path / META).unlink()
    os.mkfifo(tmp_path / META)
    rows = {row["split"]: row for row in check_data_dir(tmp_path)}
    assert not rows["valid"]["ok"] and "is a FIFO (named pipe), not a CSV file" in \
        rows["valid"]["error"]


def test_readers_see_the_dataset_json_they_validate(made):
    info = read_dataset_info(made[0])
    assert info["write_ids"] == dict.fromkeys(SPLITS, info["write_ids"]["train"])
