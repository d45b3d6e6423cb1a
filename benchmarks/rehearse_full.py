"""A full-size rehearsal of `--preset full` on a CPU: every stage end to end, timed.

Real PCam cannot be downloaded here, so the data is synthetic at the official sizes
(262,144 / 32,768 / 32,768 patches) in the official file layout (contiguous,
uncompressed: 7.2 GB for train). Each stage is its own process (a process group,
so a kill reaches the notebook's kernel too):

  data       pcam synthetic --layout official (skipped when the folder holds it)
  check      pcam check: opens every split and reads every patch
  train      pcam train --model mobilenet --preset full, capped at --steps-per-epoch
             batches an epoch, killed (SIGKILL, as an out-of-memory kill or a power
             cut) once the record holds --kill-after epochs
  resume     the same command again: resumes from the last checkpoint, trains to the
             end, then scores all of valid and test (test with 8-fold TTA)
  report     pcam report into a copy of the README (figures beside it), the table
             rebuilt with the one model rehearsed

The full preset's width (alpha 1.0) needs Keras' ImageNet download; offline the
shipped alpha-0.5 file stands in (`--alpha`, `--weights`). Printed per stage: wall
seconds and the peak RSS of its largest process (wait4's ru_maxrss: for the killed
stage, the command's own process, since the kill leaves its kernel unwaited); then
what the record says: epochs, the resume, patches scored, TTA.

Usage (about 30 minutes on 2 cores plus 10 to write the data, 9 GB of disk):
    python benchmarks/rehearse_full.py --data-dir /tmp/pcam-official --out /tmp/rehearsal
Mechanics only (a minute): add --train 2048 --valid 512 --test 512 --steps-per-epoch 4
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, machine, table  # also puts pcam on sys.path

RUN = "rehearsal-mobilenet"


def main(argv=None) -> int:
    args = _parse(argv)
    results = args.out / "results"
    record_path = results / RUN / "record.json"
    if record_path.parent.exists():
        shutil.rmtree(record_path.parent)  # a rehearsal starts from nothing
    print(f"machine: {machine()}", flush=True)
    pcam = [sys.executable, "-m", "pcam"]
    train = [*pcam, "train", "--model", "mobilenet", "--preset", "full", "--run", RUN,
             "--data-dir", str(args.data_dir), "--results", str(results),
             "--steps-per-epoch", str(args.steps_per_epoch), "--alpha", str(args.alpha),
             "--weights", args.weights]
    stages = []
    sizes = {"train": args.train, "valid": args.valid, "test": args.test}
    if _holds(args.data_dir, sizes):
        print(f"data: {args.data_dir} already holds {sizes}; not written again")
    else:
        stages.append(_stage("data", [*pcam, "synthetic", "--data-dir", str(args.data_dir),
                                      "--layout", "official", "--overwrite",
                                      *[f"--{k}={v}" for k, v in sizes.items()]]))
    stages.append(_stage("check", [*pcam, "check", "--data-dir", str(args.data_dir)]))

    def trained_enough() -> bool:
        try:
            return len(json.loads(record_path.read_text())["history"]) >= args.kill_after
        except (OSError, ValueError, KeyError):
            return False

    stages.append(_stage("train (killed)", train, kill_when=trained_enough))
    stages.append(_stage("resume", train))
    readme = args.out / "README.md"
    shutil.copyfile(ROOT / "README.md", readme)
    stages.append(_stage("report", [*pcam, "report", "--results", str(results), "--readme",
                                    str(readme), "--images", str(args.out / "images"),
                                    "--allow-dirty", "--drop-missing"],
                          # the record keeps no path outside the project: say where the
                          # data is, as a user would, so Grad-CAM and samples are drawn
                          env={**os.environ, "PCAM_DATA_DIR": str(args.data_dir)}))
    print()
    print(table(stages, [("stage", "stage", "s"), ("seconds", "seconds", ",.0f"),
                         ("peak_rss_mb", "peak RSS MB", ",.0f"), ("rc", "exit", "d")]))
    record = json.loads(record_path.read_text())
    test = record["metrics"].get("test", {})
    print(f"\nrecord: status {record['status']}, {len(record['history'])} epochs, resumed "
          f"{[r['from_epoch'] for r in record['resumed']]}; valid n "
          f"{record['metrics'].get('valid', {}).get('single', {}).get('n')}, test n "
          f"{test.get('single', {}).get('n')}, TTA {'tta' in test}")
    if args.json:
        args.json.write_text(json.dumps({"stages": stages, "record_status": record["status"]},
                                        indent=1) + "\n")
    ok = record["status"] == "complete" and record["resumed"] and stages[-1]["rc"] == 0
    return 0 if ok else 1


def _stage(name: str, command: list[str], kill_when=None, env=None) -> dict:
    """Run `command` as its own process group; SIGKILL the group once `kill_when()`."""
    print(f"{name}: {' '.join(command[2:])}", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, env=env,
                               stdout=subprocess.DEVNULL if kill_when else None)
    killed = False
    while kill_when is not None and process.poll() is None:
        if kill_when():
            os.killpg(process.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(2)
    _, status, usage = os.wait4(process.pid, 0)
    if killed:
        with_kernel = subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True)
        assert not with_kernel.stdout, "the kill left a process of the group running"
    seconds = time.perf_counter() - start
    rc = os.waitstatus_to_exitcode(status)
    print(f"{name}: {seconds:,.0f} s, exit {rc}{' (killed on purpose)' if killed else ''}",
          flush=True)
    return {"stage": name, "seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "rc": rc}


def _holds(data_dir: Path, sizes: dict) -> bool:
    try:
        info = json.loads((data_dir / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("synthetic") and info.get("splits") == sizes


def _parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="folder for the full-size synthetic data (kept between runs)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for the run, the README copy and the figures")
    parser.add_argument("--train", type=int, default=262_144)
    parser.add_argument("--valid", type=int, default=32_768)
    parser.add_argument("--test", type=int, default=32_768)
    parser.add_argument("--steps-per-epoch", type=int, default=200,
                        help="batches of 64 an epoch (the cap that keeps it to ~30 minutes)")
    parser.add_argument("--kill-after", type=int, default=3, help="epochs before the kill")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--weights", default=str(ROOT / "pcam" / "assets" /
                                                 "mobilenet_v1_0.5_imagenet_no_top.h5"))
    parser.add_argument("--json", type=Path, help="also write the stages here")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


if __name__ == "__main__":
    sys.exit(main())
