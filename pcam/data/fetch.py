"""Resumable HTTP download of one file, for `pcam.data.download`.

`fetch(url, part)` streams `url` into `part`, continuing an existing `part`
with a `Range` request when the server allows it (Zenodo does) and starting
over otherwise. It never renames `part`: the caller verifies the MD5 first.
"""

import re
import time
from pathlib import Path
from urllib.parse import urlparse

import requests
from tqdm import tqdm

from pcam.core.errors import PCamError

CONNECT_TIMEOUT_S = 10  # offline or blocked: fail within seconds, not minutes
READ_TIMEOUT_S = 60  # a stream silent this long counts as dropped
# A drop in the middle of a multi-GB transfer is usually transient (an idle
# proxy, a Wi-Fi hiccup) and resuming costs one request, so retry a few times;
# more would hide a real outage, and the partial file stays for a rerun anyway.
ATTEMPTS = 3
RETRY_WAIT_S = 2.0
_CHUNK = 1 << 17  # 128 KiB: a kill loses little, progress stays smooth
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class _Dropped(Exception):
    """The transfer stopped before the end of the file."""


def host(url: str) -> str:
    return urlparse(url).hostname or url


def unreachable_message(url: str, error: Exception) -> str:
    return (
        f"cannot reach {host(url)} ({_reason(error)}): check the internet connection "
        "or proxy settings (HTTPS_PROXY), or run `python -m pcam synthetic` to try "
        "the project without the download"
    )


def _reason(error: Exception) -> str:
    """The short cause inside a requests error, e.g. 'Connection refused'."""
    if isinstance(error, requests.ConnectTimeout):
        return f"no answer within {CONNECT_TIMEOUT_S} s"
    if isinstance(error, requests.Timeout) or "Read timed out" in str(error):
        return f"no data for {READ_TIMEOUT_S} s"
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return "the server closed the connection mid-file"
    if isinstance(error, _Dropped):
        return str(error)
    match = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", str(error))
    return match.group(1).strip() if match else type(error).__name__


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def fetch(url: str, part: Path, *, expected_size: int | None = None,
          session: requests.Session | None = None) -> None:
    """Download `url` into `part`, resuming what `part` already holds.

    Args:
        url: the file's URL.
        part: the partial file; created, appended to, or restarted.
        expected_size: the full size in bytes when known, to spot a short
            transfer from a server that sends no Content-Length.
        session: a `requests.Session` to reuse connections across files.

    Raises:
        PCamError: the server cannot be reached, answers with an HTTP error,
            or keeps dropping the connection; `part` is kept for a rerun.
    """
    session = session or requests.Session()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _fetch_once(url, part, expected_size, session)
            return
        except requests.HTTPError as error:
            status = error.response.status_code
            if status not in _RETRY_STATUS or attempt == ATTEMPTS:
                raise PCamError(
                    f"{url} answered HTTP {status} {error.response.reason}: "
                    + ("the server is busy; rerun `python -m pcam download` later to resume"
                       if status in _RETRY_STATUS
                       else "the file is not there; check the URL (PCAM_BASE_URL, base_url)")
                ) from None
        except (requests.ConnectionError, requests.Timeout) as error:
            stalled = isinstance(error, requests.ReadTimeout)  # connected, then silence
            if not (stalled or getattr(error, "_after_connect", False)):
                kept = _size(part)
                note = (f"; the partial file {part.name} ({kept:,} bytes) is kept: rerun "
                        "`python -m pcam download` to resume" if kept else "")
                raise PCamError(unreachable_message(url, error) + note) from None
            last = error
        except (requests.exceptions.ChunkedEncodingError, _Dropped) as error:
            last = error
        if attempt < ATTEMPTS:
            print(f"connection to {host(url)} lost ({_reason(last)}); "
                  f"resuming (attempt {attempt + 1} of {ATTEMPTS})")
            time.sleep(RETRY_WAIT_S)
    raise PCamError(
        f"the connection to {host(url)} dropped {ATTEMPTS} times while downloading "
        f"{part.name} ({_reason(last)}); the partial file ({_size(part):,} bytes) is kept: "
        "rerun `python -m pcam download` to resume"
    )


def _fetch_once(url: str, part: Path, expected_size: int | None,
                session: requests.Session) -> None:
    start = _size(part)
    if expected_size is not None and start > expected_size:
        start = 0  # longer than the file: not ours, start over
    if expected_size is not None and start == expected_size:
        return  # complete already; the caller's MD5 check decides
    # identity: a server that gzips its responses would hand requests a .gz to unpack
    headers = {"Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    response = session.get(url, headers=headers, stream=True,
                           timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    with response:
        if response.status_code == 416:  # our part is at or past the end: start over
            part.unlink()
            return _fetch_once(url, part, expected_size, session)
        response.raise_for_status()
        total = _total(response)
        if start and not (response.status_code == 206 and
                          response.headers.get("Content-Range", "").startswith(
                              f"bytes {start}-")):
            start = 0  # the server ignored the Range: restart cleanly
        total = total or expected_size
        try:
            with open(part, "ab" if start else "wb") as out, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name.removesuffix(".part"), leave=False,
            ) as bar:
                for chunk in response.iter_content(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (requests.ConnectionError, requests.Timeout) as error:
            error._after_connect = True  # a drop mid-file, not an unreachable host
            raise
    got = _size(part)
    if total is not None and got < total:
        raise _Dropped(f"got {got:,} of {total:,} bytes")


def _total(response: requests.Response) -> int | None:
    """The full file size from Content-Range or Content-Length, if given."""
    content_range = response.headers.get("Content-Range", "")
    if response.status_code == 206 and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else None
