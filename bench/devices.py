#!/usr/bin/env python3
"""The data mover on block devices: `spcs convert` against `qemu-img convert` with its best
flags (`-t none -m 8 -W`, `-T none` where the source is cold or a device), reading and writing
a loop device with direct I/O (what the emulator attaches, and like a StorPool device: no
second page cache over the data).

Cases, on the same bytes (1 MiB of about 2:1 compressible text, then 1 MiB of zeros, repeated):
  read         the device (every byte allocated) -> a new QCOW2 file (a snapshot backup)
  write-qcow2  a QCOW2 file -> a new device that reads as zeros (a template download)
  write-raw    a RAW file -> a new device that reads as zeros (a volume import)
Each in a cold page cache (dropped) and a warm one (the source read first), the tools
alternating, `sync` inside the clock. Prints medians and qemu-img / spcs ratios.

Usage: python bench/devices.py [--size-gib 1] [--runs 5] [--workdir DIR]
Needs root (loop devices, dropping the page cache).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from endtoend import GiB, Loops, MiB, drop_caches, read_all, write_stripe

CASES = ("read", "write-qcow2", "write-raw")
CACHES = ("cold", "warm")
SPCS = [sys.executable, "-m", "spcs.cli", "convert"]
QEMU_BEST = ["qemu-img", "convert", "-t", "none", "-m", "8", "-W"]


def commands(case: str, cache: str, src: Path, dst: Path) -> dict[str, list[str]]:
    if case == "read":
        return {
            "spcs": [*SPCS, "-f", "raw", "-O", "qcow2", str(src), str(dst)],
            "qemu": [*QEMU_BEST, "-T", "none", "-f", "raw", "-O", "qcow2", str(src), str(dst)],
        }
    cold = ["-T", "none"] if cache == "cold" else []
    return {
        "spcs": [*SPCS, "-O", "raw", "--target-is-zero", str(src), str(dst)],
        "qemu": [*QEMU_BEST, *cold, "-n", "--target-is-zero", "-O", "raw", str(src), str(dst)],
    }


def one_run(work: Path, size: int, case: str, cache: str, tool: str) -> float:
    out = work / "out.qcow2"
    out.unlink(missing_ok=True)
    loops = Loops()  # direct I/O, as the emulator attaches volumes
    if case == "read":
        device, source = loops.attach(work / "volume.raw", read_only=True), None
    else:
        target = work / "target.raw"
        target.unlink(missing_ok=True)
        with target.open("wb") as f:
            f.truncate(size)  # a new StorPool volume: reads as zeros
        device = loops.attach(target, read_only=False)
        source = work / ("stripe.qcow2" if case == "write-qcow2" else "stripe.raw")
    try:
        src, dst = (device, out) if source is None else (source, device)
        os.sync()
        time.sleep(0.3)
        if cache == "cold":
            drop_caches()
        else:
            read_all(src)
        t = time.monotonic()
        subprocess.run(commands(case, cache, src, dst)[tool], check=True, capture_output=True)
        os.sync()
        return time.monotonic() - t
    finally:
        loops.close()


def measure(work: Path, size: int, runs: int) -> dict[tuple[str, str, str], list[float]]:
    write_stripe(work / "stripe.raw", size)
    shutil.copyfile(work / "stripe.raw", work / "volume.raw")  # every byte allocated
    raw, qcow2 = work / "stripe.raw", work / "stripe.qcow2"
    subprocess.run([*QEMU_BEST, "-f", "raw", "-O", "qcow2", raw, qcow2], check=True)
    times: dict[tuple[str, str, str], list[float]] = {}
    for r in range(runs):
        for case in CASES:
            for cache in CACHES:
                for tool in ("spcs", "qemu") if r % 2 == 0 else ("qemu", "spcs"):
                    s = one_run(work, size, case, cache, tool)
                    times.setdefault((case, cache, tool), []).append(s)
    return times


def report(size: int, runs: int, times: dict[tuple[str, str, str], list[float]]) -> None:
    print(f"\n{size / GiB:.2f} GiB, {runs} runs each; ratio = qemu-img best / spcs")
    for case in CASES:
        for cache in CACHES:
            s = statistics.median(times[(case, cache, "spcs")])
            q = statistics.median(times[(case, cache, "qemu")])
            print(f"{case:12} {cache:5} spcs {s:6.3f}s  qemu-img best {q:6.3f}s  {q / s:5.2f}x")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size-gib", type=float, default=1.0, help="size of the data (GiB)")
    p.add_argument("--runs", type=int, default=5, help="runs per tool, case and cache")
    p.add_argument("--workdir", type=Path, help="where the files go (default: new, in /var/tmp)")
    p.add_argument("--quick", action="store_true", help="128 MiB, 1 run (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.size_gib, args.runs = min(args.size_gib, 1 / 8), 1
    size = int(args.size_gib * GiB) // (2 * MiB) * 2 * MiB
    if size <= 0 or args.runs < 1:
        p.error("--size-gib must be at least 2 MiB and --runs at least 1")
    if os.geteuid() != 0 or shutil.which("losetup") is None or shutil.which("qemu-img") is None:
        print("bench/devices.py needs root, losetup and qemu-img", file=sys.stderr)
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="spcs-bench-dev-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}, load {os.getloadavg()}")
    print(f"command: python bench/devices.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    try:
        report(size, args.runs, measure(work, size, args.runs))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
