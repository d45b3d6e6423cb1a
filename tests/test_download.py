"""`pcam.data.download` against a real HTTP server on 127.0.0.1.

The server serves tiny gzipped PCam-layout files made here; `SPEC["valid"]`
is swapped for one with their MD5s. It supports Range requests and can drop
the connection half-way, throttle, or ignore Range, to test every recovery.
"""

import gzip
import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest

from pcam.app.cli import main
from pcam.core import paths
from pcam.core.errors import PCamError
from pcam.core.fileio import file_digest
from pcam.data import download
from pcam.data import fetch as _http
from pcam.data import spec as pcam_spec

N = 32  # patches in the tiny x file: about 0.9 MB, random so gzip cannot shrink it


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _h5_bytes(path: Path, key: str, array: np.ndarray) -> bytes:
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=array)
    return path.read_bytes()


@pytest.fixture
def tiny(tmp_path):
    """Tiny valid_x/valid_y: {name: (h5 bytes, gz bytes)} under the real names."""
    rng = np.random.default_rng(0)
    real = pcam_spec.SPEC["valid"]
    made = {}
    for pfile, array in (
        (real.x, rng.integers(0, 256, (N, 96, 96, 3), dtype=np.uint8)),
        (real.y, rng.integers(0, 2, (N, 1, 1, 1), dtype=np.uint8)),
    ):
        raw = _h5_bytes(tmp_path / ("src_" + pfile.name), pfile.key, array)
        made[pfile.name] = (raw, gzip.compress(raw, mtime=0))
    return made


def _meta_bytes(rows: int = N) -> bytes:
    """A meta CSV as PCam's (pandas index column first) with `rows` patches."""
    lines = [",coord_y,coord_x,tumor_patch,center_tumor_patch,wsi"]
    lines += [f"{i},{96 * i},0,False,False,camelyon16_train_normal_{i % 4:03d}"
              for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def _fake_files(tiny, **x_changes):
    real = pcam_spec.SPEC["valid"]
    files = []
    for pfile in (real.x, real.y):
        raw, gz = tiny[pfile.name]
        fields = dict(name=pfile.name, key=pfile.key, gz_md5=_md5(gz), h5_md5=_md5(raw),
                      gz_bytes=len(gz))
        if pfile is real.x:
            fields.update(x_changes)
        files.append(pcam_spec.PCamFile(**fields))
    return files


@pytest.fixture
def use_spec(monkeypatch, tiny):
    """`use_spec(**x_changes)` puts a SPEC["valid"] matching the tiny files in place."""

    def put(**x_changes):
        x, y = _fake_files(tiny, **x_changes)
        monkeypatch.setitem(pcam_spec.SPEC, "valid", pcam_spec.SplitSpec("valid", N, x, y))
        return x, y

    put()
    monkeypatch.setattr(_http, "RETRY_WAIT_S", 0.0)
    monkeypatch.delenv("PCAM_BASE_URL", raising=False)
    return put


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        server = self.server
        name = self.path.lstrip("/").split("?")[0]
        server.log.append((name, self.headers.get("Range")))
        if name not in server.files:
            self.send_error(404)
            return
        data = server.files[name]
        start, status = 0, 200
        asked = self.headers.get("Range")
        if asked and server.mode != "norange":
            start = int(asked.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        try:
            if server.mode == "drop":  # half of what was asked, then hang up
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            elif server.mode == "stall":  # a little, then silence
                self.wfile.write(body[:1000])
                self.wfile.flush()
                time.sleep(1.5)
            elif server.mode == "slow":
                for i in range(0, len(body), 16384):
                    self.wfile.write(body[i:i + 16384])
                    time.sleep(0.02)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (killed): fine


@pytest.fixture
def server(tiny):
    """A threaded HTTP server on 127.0.0.1 serving the tiny .gz files."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files = {name + ".gz": gz for name, (_, gz) in tiny.items()}
    httpd.files[pcam_spec.SPEC["valid"].meta.name] = _meta_bytes()
    httpd.mode = "ok"
    httpd.log = []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranges(server, name):
    return [r for n, r in server.log if n == name + ".gz" and r]


def test_file_digest_matches_hashlib_across_chunks(tmp_path):
    data = np.random.default_rng(1).bytes(5 * 2**20 + 123)  # more than one 4 MiB chunk
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_digest(path, "md5") == _md5(data)


def test_download_verifies_and_unpacks(tmp_path, tiny, use_spec, server):
    x, y = use_spec()
    data = tmp_path / "data"
    got = download.download(data, ["valid"], base_url=server.url)
    meta = pcam_spec.SPEC["valid"].meta.name
    assert got == [data / x.name, data / y.name, data / meta]
    assert (data / meta).read_bytes() == _meta_bytes()
    for pfile in (x, y):
        assert (data / pfile.name).read_bytes() == tiny[pfile.name][0]
        assert json.loads((data / (pfile.name + ".md5")).read_text())["md5"] == pfile.h5_md5
    with h5py.File(data / x.name) as f:
        assert f["x"].shape == (N, 96, 96, 3)
    # No .gz, .part or stamp of a .gz left behind.
    assert sorted(p.name for p in data.iterdir()) == sorted(
        [x.name, x.name + ".md5", y.name, y.name + ".md5", meta])


def test_rerun_makes_no_request_and_no_rehash(tmp_path, use_spec, server, monkeypatch,
                                              capsys):
    data = tmp_path / "data"
    download.download(data, "valid", base_url=server.url)
    server.log.clear()

    def no_hashing(path, algorithm="md5"):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(download, "file_digest", no_hashing)
    download.download(data, ["valid"], base_url=server.url)
    assert server.log == []
    assert "present and verified, skipped" in capsys.readouterr().out


def test_env_base_url_is_used(tmp_path, use_spec, server, monkeypatch):
    monkeypatch.setenv("PCAM_BASE_URL", server.url + "/")
    x, _ = use_spec()
    download.download(tmp_path, ["valid"])
    assert (tmp_path / x.name).exists()
    assert (x.gz_name, None) in server.log


def test_partial_download_is_resumed_with_range(tmp_path, tiny, use_spec, server):
    x, _ = use_spec()
    gz = tiny[x.name][1]
    (tmp_path / (x.gz_name + ".part")).write_bytes(gz[:300_000])
    download.download(tmp_path, ["valid"], base_url=server.url)
    assert _ranges(server, x.name) == ["bytes=300000-"]
    assert file_digest(tmp_path / x.name, "md5") == x.h5_md5


def test_verified_gz_is_unpacked_without_a_request(tmp_path, tiny, use_spec, server):
    # A run killed while unpacking, or a .gz fetched with a browser.
    x, _ = use_spec()
    (tmp_path / x.gz_name).write_bytes(tiny[x.name][1])
    (tmp_path / x.name).with_name(x.name + ".part").write_bytes(b"half-unpacked")
    download.download(tmp_path, ["valid"], base_url=server.url)
    valid = pcam_spec.SPEC["valid"]
    assert [n for n, _ in server.log] == [valid.y.gz_name, valid.meta.name]
    assert file_digest(tmp_path / x.name, "md5") == x.h5_md5
    assert not (tmp_path / x.gz_name).exists()


def test_server_ignoring_range_restarts_cleanly(tmp_path, tiny, use_spec, server):
    x, _ = use_spec()
    (tmp_path / (x.gz_name + ".part")).write_bytes(tiny[x.name][1][:300_000])
    server.mode = "norange"
    download.download(tmp_path, ["valid"], base_url=server.url)
    assert file_digest(tmp_path / x.name, "md5") == x.h5_md5


def test_corrupt_full_length_part_is_never_taken(tmp_path, tiny, use_spec, server):
    x, _ = use_spec()
    bad = bytearray(tiny[x.name][1])
    bad[1000] ^= 0xFF
    part = tmp_path / (x.gz_name + ".part")
    part.write_bytes(bytes(bad))
    with pytest.raises(PCamError, match="has MD5 .* expected " + x.gz_md5) as info:
        download.download(tmp_path, ["valid"], base_url=server.url)
    assert "removed it. Rerun `python -m pcam download`" in str(info.value)
    assert not part.exists() and not (tmp_path / x.name).exists()
    download.download(tmp_path, ["valid"], base_url=server.url)
    assert file_digest(tmp_path / x.name, "md5") == x.h5_md5


def test_server_dropping_mid_file_then_rerun_resumes(tmp_path, tiny, use_spec, server):
    x, _ = use_spec()
    server.mode = "drop"
    with pytest.raises(PCamError) as info:
        download.download(tmp_path, ["valid"], base_url=server.url)
    message = str(info.value)
    assert f"dropped {_http.ATTEMPTS} times while downloading {x.gz_name}.part" in message
    assert "rerun `python -m pcam download` to resume" in message
    part = tmp_path / (x.gz_name + ".part")
    assert "the server closed the connection mid-file" in message
    # Each retry resumed where the last stopped, so the partial file grew.
    size = len(tiny[x.name][1])
    offsets = [int(r.split("=")[1].rstrip("-")) for r in _ranges(server, x.name)]
    assert len(offsets) == _http.ATTEMPTS - 1 and offsets == sorted(set(offsets))
    assert offsets[-1] < part.stat().st_size < size
    assert not (tmp_path / x.name).exists()

    kept = part.stat().st_size
    server.mode, server.log = "ok", []
    download.download(tmp_path, ["valid"], base_url=server.url)
    assert _ranges(server, x.name) == [f"bytes={kept}-"]
    assert file_digest(tmp_path / x.name, "md5") == x.h5_md5
    assert not part.exists()


def test_stalled_server_times_out_and_keeps_part(tmp_path, use_spec, server, monkeypatch):
    x, _ = use_spec()
    monkeypatch.setattr(_http, "READ_TIMEOUT_S", 0.3)
    server.mode = "stall"
    with pytest.raises(PCamError, match=r"dropped 3 times .*\(no data for 0.3 s\).* to resume"):
        download.download(tmp_path, ["valid"], base_url=server.url)
    assert (tmp_path / (x.gz_name + ".part")).exists()
    assert not (tmp_path / x.name).exists()


def test_md5_mismatch_removes_file_and_writes_nothing(tmp_path, tiny, use_spec, server):
    x, _ = use_spec(gz_md5="0" * 32)
    actual = _md5(tiny[x.name][1])
    with pytest.raises(PCamError) as info:
        download.download(tmp_path, ["valid"], base_url=server.url)
    message = str(info.value)
    assert x.gz_name in message and "0" * 32 in message and actual in message
    assert "removed it. Rerun `python -m pcam download`" in message
    assert not any(p.name.startswith(x.name) for p in tmp_path.iterdir())


def test_truncated_gz_from_server_is_named_truncated(tmp_path, tiny, use_spec, server):
    x, _ = use_spec()
    gz = tiny[x.name][1]
    server.files[x.gz_name] = gz[: len(gz) // 2]  # a broken mirror: honest length, short file
    truncated = rf"\({len(gz) // 2:,} of {len(gz):,} bytes \(truncated\)\)"
    with pytest.raises(PCamError, match=truncated):
        download.download(tmp_path, ["valid"], base_url=server.url)
    assert not any(p.name.startswith(x.name) for p in tmp_path.iterdir())


def test_truncated_gz_that_passes_md5_fails_at_unpack(tmp_path, tiny, use_spec, server):
    # E.g. a wrong checksum in the spec: gunzip must still refuse the file.
    x, _ = use_spec()
    short = tiny[x.name][1][:200_000]
    x, _ = use_spec(gz_md5=_md5(short), gz_bytes=None)
    server.files[x.gz_name] = short
    with pytest.raises(PCamError, match=f"{x.gz_name} is truncated or corrupt .*removed it"):
        download.download(tmp_path, ["valid"], base_url=server.url)
    assert not any(p.name.startswith(x.name) for p in tmp_path.iterdir())


def test_connection_refused_fails_fast_with_advice(tmp_path, use_spec):
    start = time.monotonic()
    with pytest.raises(PCamError) as info:
        download.download(tmp_path, ["valid"], base_url=f"http://127.0.0.1:{_unused_port()}")
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert message.startswith("cannot reach 127.0.0.1 (Connection refused)")
    assert "proxy" in message and "`python -m pcam synthetic`" in message


def test_cli_prints_one_line_error(tmp_path, use_spec, monkeypatch, capsys):
    monkeypatch.setenv("PCAM_BASE_URL", f"http://127.0.0.1:{_unused_port()}")
    status = main(["download", "--data-dir", str(tmp_path), "--splits", "valid"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach 127.0.0.1") and "Traceback" not in err


def test_http_404_names_the_url(tmp_path, use_spec, server):
    del server.files[pcam_spec.SPEC["valid"].x.gz_name]
    with pytest.raises(PCamError, match="answered HTTP 404 .*check the URL"):
        download.download(tmp_path, ["valid"], base_url=server.url)


def test_meta_file_is_checked_by_rows_and_columns(tmp_path, use_spec, server, capsys):
    meta = pcam_spec.SPEC["valid"].meta.name
    server.files[meta] = _meta_bytes(N - 1)  # one row short
    with pytest.raises(PCamError, match=rf"{meta} downloaded from 127.0.0.1 does not check "
                       rf"out: meta file .*\.part has 31 rows but its split has 32 patches"):
        download.download(tmp_path, ["valid"], base_url=server.url)
    assert not list(tmp_path.glob("*meta*"))  # nothing kept under the real name or .part
    # A mirror without meta files: the images and labels are complete, said so.
    del server.files[meta]
    got = download.download(tmp_path, ["valid"], base_url=server.url)
    assert [p.suffix for p in got] == [".h5", ".h5"]
    assert (f"note: {meta} is not at 127.0.0.1 (HTTP 404): without slide ids, intervals and "
            "paired tests resample patches, not slides") in capsys.readouterr().out
    # A local meta file that does not fit is named, never replaced.
    (tmp_path / meta).write_text("wsi\nslide\n")
    with pytest.raises(PCamError, match=rf"meta file .*{meta} has the columns wsi"):
        download.download(tmp_path, ["valid"], base_url=server.url)


def test_foreign_h5_is_not_overwritten(tmp_path, use_spec, server):
    x, _ = use_spec()
    (tmp_path / x.name).write_bytes(b"not pcam")
    with pytest.raises(PCamError, match="exists but its MD5 is .*not the official"):
        download.download(tmp_path, ["valid"], base_url=server.url)
    assert (tmp_path / x.name).read_bytes() == b"not pcam"
    assert server.log == []


def test_synthetic_folder_is_refused(tmp_path, use_spec, server):
    (tmp_path / pcam_spec.DATASET_INFO).write_text('{"synthetic": true}')
    with pytest.raises(PCamError, match="holds synthetic or imported data"):
        download.download(tmp_path, ["valid"], base_url=server.url)


_LAUNCHER = """
import json, runpy, sys
from pcam.data import spec
fake = json.loads(open(sys.argv[1]).read())
spec.SPEC["valid"] = spec.SplitSpec(
    "valid", fake["length"], spec.PCamFile(**fake["x"]), spec.PCamFile(**fake["y"]))
sys.argv = ["pcam", *sys.argv[2:]]
runpy.run_module("pcam", run_name="__main__")
"""


def test_killed_download_resumes_in_a_new_process(tmp_path, tiny, use_spec, server):
    """`python -m pcam download` killed with SIGKILL mid-file, then rerun."""
    x, y = use_spec()
    fake = tmp_path / "spec.json"
    fake.write_text(json.dumps({"length": N, "x": asdict(x), "y": asdict(y)}))
    launcher = tmp_path / "launch.py"
    launcher.write_text(_LAUNCHER)
    data = tmp_path / "data"
    env = {**os.environ, "PCAM_BASE_URL": server.url,
           "PYTHONPATH": str(paths.PROJ_ROOT)}
    command = [sys.executable, str(launcher), str(fake), "download", "--data-dir", str(data),
               "--splits", "valid"]
    part = data / (x.gz_name + ".part")

    server.mode = "slow"
    proc = subprocess.Popen(command, env=env, cwd=paths.PROJ_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size > 0):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    kept = part.stat().st_size
    assert 0 < kept < len(tiny[x.name][1])
    assert not (data / x.name).exists()

    server.mode, server.log = "ok", []
    done = subprocess.run(command, env=env, cwd=paths.PROJ_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _ranges(server, x.name) == [f"bytes={kept}-"]
    assert file_digest(data / x.name, "md5") == x.h5_md5
    assert file_digest(data / y.name, "md5") == y.h5_md5
