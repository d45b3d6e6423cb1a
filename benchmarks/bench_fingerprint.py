"""What the data fingerprint costs (`pcam.data.describe.fingerprint`), and for PCam's train_x.

Times, on a generated file of random bytes (`--size-mib`, default 1024):
  whole     SHA-256 of the whole file (`pcam.core.fileio.file_digest`, 4 MiB reads),
            the digest a resume compares; warm = file in the page cache,
            cold = its pages dropped first (posix_fadvise DONTNEED, so no root
            needed; the disk's own cache may still help)
  sampled   the older sampled digest (8 x 1 MiB blocks), kept for old records

and prints MB/s and the seconds extrapolated to the 7.2 GB train_x file
(262,144 patches unpacked). Medians over `--repeats`. Run it pinned to the
core you want to measure, e.g. `taskset -c 1 python benchmarks/bench_fingerprint.py`.
"""

import argparse
import os
import platform
import tempfile
from pathlib import Path

from common import median, time_repeats  # also puts pcam on sys.path

TRAIN_X_BYTES = 7.2e9  # PCAM.md: "Unpacked, train_x is about 7.2 GB"
_CHUNK = 64 << 20


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="test file size (MiB)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method")
    parser.add_argument("--dir", default=None, help="folder for the test file (default: "
                        "the system temp folder; use the data folder's disk to measure it)")
    args = parser.parse_args()

    from pcam.core.fileio import file_digest
    from pcam.data.describe import _sampled_digest

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "x.bin"
        with open(path, "wb") as f:
            for _ in range(0, args.size_mib << 20, _CHUNK):
                f.write(os.urandom(_CHUNK))
        size = path.stat().st_size
        rows = []
        rows.append(("whole, warm", median(time_repeats(lambda: file_digest(path),
                                                        args.repeats))))
        cold = []
        for _ in range(args.repeats):
            _drop_cache(path)
            cold += time_repeats(lambda: file_digest(path), 1, warmup=0)
        rows.append(("whole, cold", median(cold)))
        rows.append(("sampled", median(time_repeats(lambda: _sampled_digest(path, size),
                                                    args.repeats))))
    print(f"{_cpu()}, {os.cpu_count()} cores visible, affinity "
          f"{sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}; "
          f"file {size / 1e6:,.0f} MB in {args.dir or tempfile.gettempdir()}")
    print(f"{'digest':<12} {'seconds':>8} {'MB/s':>8} {'7.2 GB train_x (s)':>19}")
    for name, seconds in rows:
        if name == "sampled":
            print(f"{name:<12} {seconds:8.4f} {'-':>8} {seconds:19.4f}")
            continue
        rate = size / seconds / 1e6
        print(f"{name:<12} {seconds:8.3f} {rate:8,.0f} {TRAIN_X_BYTES / 1e6 / rate:19.1f}")


if __name__ == "__main__":
    main()
