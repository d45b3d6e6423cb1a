"""Download, verify and unpack PatchCamelyon from Zenodo.

`python -m pcam download` calls `download()`. For each file of a split it
fetches `<name>.gz` into `<name>.gz.part`, checks the MD5 from `pcam.data.spec`,
gunzips into a temporary file (`pcam.core.fileio.atomic_path`), checks the unpacked
MD5 and only then renames it to `<name>`. A verified `.h5` is skipped on a
rerun; a `.part` file is never taken for a good one. The split's meta CSV
(slide ids; plain CSV with no published MD5) is fetched into `<name>.part`
and renamed once its columns and row count check out (`pcam.data.meta`).

Why the fetching is written by hand (`pcam.data.fetch`): `keras.utils.get_file`
(urllib's `urlretrieve`) and pooch both delete the partial file when a
transfer fails, so a drop at 90% of the 6.4 GB train file starts over from
zero. An HTTP `Range` request resumes it instead, in about 100 lines.

The `.gz` is removed once its `.h5` is verified: keeping it would double the
disk use (about 8 GB more) for a file that the verified `.h5` makes useless,
and a damaged `.h5` is simply downloaded again.

Reference:
    Veeling et al., "Rotation Equivariant CNNs for Digital Pathology", 2018;
    Zenodo record 2546921.
"""

import errno
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterable
from pathlib import Path

import requests
from tqdm import tqdm

from pcam.core import paths
from pcam.core.errors import PCamError
from pcam.core.fileio import atomic_path, file_digest, write_text
from pcam.data import fetch as _http
from pcam.data import spec as pcam_spec
from pcam.data.meta import meta_problem, read_slides
from pcam.data.names import not_a_file, shown
from pcam.data.staging import finish_interrupted_writes

_CHUNK = 1 << 22  # 4 MiB reads: hashing runs at disk speed


def download(
    data_dir: str | os.PathLike | None = None,
    splits: Iterable[str] = pcam_spec.SPLITS,
    *,
    base_url: str | None = None,
) -> list[Path]:
    """Download, verify and unpack PCam splits into `data_dir`.

    Idempotent: files already present and verified are skipped without a
    request. After an interruption (a drop, Ctrl-C, a kill) rerunning resumes
    the partial download.

    Args:
        data_dir: the data folder; default `$PCAM_DATA_DIR` or `data/`.
        splits: any of "train", "valid", "test" (default: all three,
            about 8 GB to download and 9 GB unpacked).
        base_url: fetch `base_url + "/" + <name>.h5.gz` instead of Zenodo
            (a mirror, or a local server in tests); default `$PCAM_BASE_URL`,
            else the Zenodo URLs of `pcam.data.spec`.

    Returns:
        The paths of the verified files: x, y, then the meta CSV for each split
        (left out, with a note, where the server has no meta file).

    Raises:
        PCamError: the server cannot be reached, a checksum does not match,
            a file is truncated, or the folder holds other data under PCam's
            names. The message says what to do.
    """
    if isinstance(splits, str):
        splits = (splits,)
    splits = [pcam_spec.check_split_name(split) for split in splits]
    folder = paths.data_dir(data_dir)
    base_url = base_url or os.environ.get("PCAM_BASE_URL") or None
    finish_interrupted_writes(folder)  # a synthetic write may have been cut short
    info = folder / pcam_spec.DATASET_INFO
    if os.path.lexists(info):
        raise PCamError(
            f"{info} says {folder} holds synthetic or imported data; download into another "
            f"folder (--data-dir DIR) or delete that folder's PCam files and "
            f"{pcam_spec.DATASET_INFO} first, so the two never mix"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:  # hashing or resuming into a FIFO would block
        spec = pcam_spec.SPEC[split]
        for name in (spec.x.name, spec.x.gz_name, spec.y.name, spec.y.gz_name, spec.meta.name):
            for path in (folder / name, folder / (name + ".part")):
                if what := not_a_file(path):
                    raise PCamError(f"{shown(path)} is {what}, not a file; move it out of "
                                    f"{shown(folder)} and rerun `python -m pcam download`")
    session = requests.Session()
    done = []
    for split in splits:
        split_spec = pcam_spec.SPEC[split]
        for pfile in (split_spec.x, split_spec.y):
            url = f"{base_url.rstrip('/')}/{pfile.gz_name}" if base_url else pfile.url
            done.append(_get_file(pfile, folder, url, session))
        meta = split_spec.meta
        url = f"{base_url.rstrip('/')}/{meta.name}" if base_url else meta.url
        done += _get_meta(meta, folder / meta.name, split_spec.length, url, session)
    return done


def _get_meta(meta: pcam_spec.MetaFile, path: Path, length: int, url: str,
              session: requests.Session) -> list[Path]:
    """Fetch and check one meta CSV; [] with a note when the server has none."""
    if path.exists():
        read_slides(path, length)  # a bad one raises, naming the file
        print(f"{meta.name}: present and checked, skipped")
        return [path]
    part = path.with_name(path.name + ".part")
    try:
        _disk_guard(part, lambda: _http.fetch(url, part, session=session))
    except PCamError as error:
        if "HTTP 404" not in str(error):
            raise
        print(f"note: {meta.name} is not at {_http.host(url)} (HTTP 404): without slide ids, "
              "intervals and paired tests resample patches, not slides")
        return []
    problem = meta_problem(part, length)
    if problem:
        part.unlink()
        raise PCamError(f"{meta.name} downloaded from {_http.host(url)} does not check out: "
                        f"{problem}; removed it. Rerun `python -m pcam download` to fetch it "
                        "again")
    os.replace(part, path)
    print(f"{meta.name}: downloaded and checked ({length:,} rows, columns as expected)")
    return [path]


def _get_file(pfile: pcam_spec.PCamFile, folder: Path, url: str,
              session: requests.Session) -> Path:
    h5, gz = folder / pfile.name, folder / pfile.gz_name
    if h5.exists():
        actual = _checked_md5(h5, pfile.h5_md5)
        if actual == pfile.h5_md5:
            print(f"{pfile.name}: present and verified, skipped")
            return h5
        raise PCamError(
            f"{h5} exists but its MD5 is {actual}, not the official "
            f"{pfile.h5_md5}: it is not the PCam download (synthetic or imported data?) "
            "or it is damaged. Move or delete it, then rerun `python -m pcam download`"
        )
    if gz.exists() and _checked_md5(gz, pfile.gz_md5) != pfile.gz_md5:
        _bad_gz(gz, pfile, url, where="was already")
    if not gz.exists():
        part = folder / (pfile.gz_name + ".part")
        _disk_guard(part, lambda: _http.fetch(url, part, expected_size=pfile.gz_bytes,
                                               session=session))
        # Hashing after the transfer (not during) also covers resumed files.
        if file_digest(part, "md5") != pfile.gz_md5:
            _bad_gz(part, pfile, url, where="downloaded")
        os.replace(part, gz)
        _write_stamp(gz, pfile.gz_md5)
    _disk_guard(h5, lambda: _gunzip(gz, h5, pfile))
    gz.unlink()
    gz.with_name(gz.name + ".md5").unlink(missing_ok=True)
    print(f"{pfile.name}: downloaded and verified")
    return h5


def _bad_gz(gz: Path, pfile: pcam_spec.PCamFile, url: str, where: str) -> None:
    actual, size = file_digest(gz, "md5"), gz.stat().st_size
    expected_size = f" of {pfile.gz_bytes:,}" if pfile.gz_bytes else ""
    short = " (truncated)" if pfile.gz_bytes and size < pfile.gz_bytes else ""
    gz.unlink()
    gz.with_name(gz.name + ".md5").unlink(missing_ok=True)
    raise PCamError(
        f"{pfile.gz_name} {where} in {gz.parent} has MD5 {actual}, expected {pfile.gz_md5} "
        f"({size:,}{expected_size} bytes{short}); removed it. Rerun `python -m pcam download` "
        f"to fetch it again from {_http.host(url)}; if this repeats, a proxy or the server "
        "is altering the file"
    )


def _gunzip(gz: Path, h5: Path, pfile: pcam_spec.PCamFile) -> None:
    """Unpack `gz` to `h5` through a temporary file, hashing on the way."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with atomic_path(h5) as part:
            with open(gz, "rb") as raw, gzip.GzipFile(fileobj=raw) as src, \
                    open(part, "wb") as out, tqdm(
                        total=gz.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=f"unpacking {gz.name}", leave=False) as bar:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(raw.tell() - bar.n)
            if digest.hexdigest() != pfile.h5_md5:
                raise _BadUnpack(digest.hexdigest())
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        gz.unlink()
        gz.with_name(gz.name + ".md5").unlink(missing_ok=True)
        raise PCamError(
            f"{gz} is truncated or corrupt ({error}); removed it. Rerun "
            "`python -m pcam download` to fetch it again"
        ) from None
    except _BadUnpack as bad:
        raise PCamError(
            f"{pfile.name} unpacked from a verified {gz.name} has MD5 {bad}, "
            f"expected {pfile.h5_md5}; the disk may be faulty. The .gz is kept: rerun "
            "`python -m pcam download` to unpack it again"
        ) from None
    _write_stamp(h5, pfile.h5_md5)


class _BadUnpack(Exception):
    """An unpacked file whose MD5 is wrong (the temporary file is dropped)."""


def _disk_guard(path: Path, work) -> None:
    """Run `work()`, turning a full disk into a PCamError naming the folder."""
    try:
        work()
    except OSError as error:
        if isinstance(error, requests.RequestException) or error.errno != errno.ENOSPC:
            raise
        raise PCamError(
            f"no space left in {path.parent} while writing {path.name}: free some space "
            "(all of PCam needs about 8 GB for the download plus 9 GB unpacked) and rerun "
            "`python -m pcam download`; finished files are kept"
        ) from None


# The verification cache: `<file>.md5` holds the MD5 with the file's size and
# mtime when it was verified, so a rerun does not re-hash 7 GB of train_x; a
# file changed since (other size or mtime) is hashed again.


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".md5")


def _write_stamp(path: Path, md5: str) -> None:
    stat = path.stat()
    write_text(_stamp_path(path),
               json.dumps({"md5": md5, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))


def _checked_md5(path: Path, expected_md5: str) -> str:
    """The MD5 of `path`: from its stamp when still valid, else hashed (and
    stamped when it matches `expected_md5`)."""
    stat = path.stat()
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        if stamp["size"] == stat.st_size and stamp["mtime_ns"] == stat.st_mtime_ns:
            return stamp["md5"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    actual = file_digest(path, "md5")
    if actual == expected_md5:
        _write_stamp(path, actual)
    return actual
