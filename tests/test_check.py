"""check_data_dir rows, MD5 status and the printed table."""

import dataclasses

import pytest
from h5_files import write_pcam

import pcam.data.check
from pcam.core.errors import PCamError
from pcam.core.fileio import file_digest
from pcam.data.check import check_data_dir, format_check_table
from pcam.data.spec import SPEC


def _official(monkeypatch, split, n, x_md5="0" * 32, y_md5="0" * 32):
    """Pretend the official `split` has `n` patches and the given .h5 MD5s."""
    spec = SPEC[split]
    fake = dataclasses.replace(
        spec,
        length=n,
        x=dataclasses.replace(spec.x, h5_md5=x_md5),
        y=dataclasses.replace(spec.y, h5_md5=y_md5),
    )
    monkeypatch.setitem(pcam.data.check.SPEC, split, fake)


def test_rows_for_present_splits(tmp_path):
    x_path, y_path = write_pcam(tmp_path, "valid", 30)
    write_pcam(tmp_path, "test", 9)
    (tmp_path / "dataset.json").write_text('{"source": "synthetic", "synthetic": true}')
    rows = check_data_dir(tmp_path, read=True)
    assert [r["split"] for r in rows] == ["valid", "test"]
    assert rows[0] == {
        "split": "valid",
        "n": 30,
        "positives": 10,
        "slides": 0,  # no meta CSV
        "bytes": x_path.stat().st_size + y_path.stat().st_size,
        "read": "all",
        "layout": "chunks of 8 patches, gzip level 4",
        "md5": "not checked",
        "ok": True,
        "error": None,
    }
    assert check_data_dir(tmp_path, verify_md5=True)[1]["md5"] == "n/a (synthetic/imported)"
    assert check_data_dir(tmp_path)[0]["read"] == "skipped"


def test_md5_verified_and_mismatch(tmp_path, monkeypatch):
    x_path, y_path = write_pcam(tmp_path, "valid", 20)
    _official(monkeypatch, "valid", 20, file_digest(x_path, "md5"), file_digest(y_path, "md5"))
    [row] = check_data_dir(tmp_path, verify_md5=True, read=True)
    assert row["md5"] == "verified" and row["ok"] and row["error"] is None
    assert row["read"] == "skipped"  # known-good bytes need no second read

    _official(monkeypatch, "valid", 20, file_digest(x_path, "md5"), "f" * 32)
    [row] = check_data_dir(tmp_path, verify_md5=True)
    assert row["md5"] == "mismatch" and not row["ok"]
    assert str(y_path) in row["error"] and "f" * 32 in row["error"]
    assert "python -m pcam download" in row["error"]
    assert check_data_dir(tmp_path)[0]["md5"] == "not checked"


def test_official_length_checked(tmp_path, monkeypatch):
    write_pcam(tmp_path, "valid", 20)
    _official(monkeypatch, "valid", 32_768)
    [row] = check_data_dir(tmp_path)
    assert not row["ok"] and "20 patches, the official valid split has 32768" in row["error"]


def test_bad_split_is_a_bad_row(tmp_path):
    write_pcam(tmp_path, "valid", 10)
    _, y_path = write_pcam(tmp_path, "test", 10)
    (tmp_path / "dataset.json").write_text("{}")
    y_path.write_bytes(b"\0" * 100)
    rows = check_data_dir(tmp_path)
    assert [r["ok"] for r in rows] == [True, False]
    assert rows[1]["n"] is None and "not a readable HDF5 file" in rows[1]["error"]
    table = format_check_table(rows)
    lines = table.splitlines()
    assert lines[0].split() == ["split", "N", "positives", "slides", "bytes", "read", "md5",
                                "status", "layout"]
    assert lines[1].split()[:3] == ["valid", "10", "4"]
    assert lines[1].endswith("  ok      chunks of 8 patches, gzip level 4")
    assert lines[2].split()[:3] == ["test", "-", "-"]
    assert lines[2].split()[-2:] == ["BAD", "-"]  # no layout: the split did not open
    assert lines[3].startswith("test: ") and str(y_path) in lines[3]


def test_empty_folder(tmp_path):
    with pytest.raises(PCamError, match="no PCam files in .*python -m pcam synthetic"):
        check_data_dir(tmp_path)


def test_cli_exit_status(tmp_path, capsys):
    from pcam.app.cli import main

    write_pcam(tmp_path, "valid", 10)
    (tmp_path / "dataset.json").write_text("{}")
    assert main(["check", "--data-dir", str(tmp_path)]) == 0
    assert "valid" in capsys.readouterr().out
    write_pcam(tmp_path, "test", 10, labels=[3] * 10)
    assert main(["check", "--data-dir", str(tmp_path)]) == 1
    assert "labels are not 0 or 1" in capsys.readouterr().out
    assert main(["check", "--data-dir", str(tmp_path / "none")]) == 2
