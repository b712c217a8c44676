#!/usr/bin/env python3
"""Benchmark the emulator's copy-on-write: snapshots, clones and template caching of a volume.

In one run, two emulators on data directories under --workdir: one with copy-on-write (its
default: extents shared by the filesystem, or by an XFS image of its own where the filesystem
has no reflink) and one with `copy_on_write="off"` (full copies where the filesystem has no
reflink: what the emulator did before). Each gets a volume of --size-gib with half of it random
data, then: --snapshots snapshots of it (each call timed, as spcs makes them: VolumeSnapshot),
ROOT clones from the last one (VolumeCreate with parent), and template caching as spcs does it
(a volume filled from the snapshot's data, VolumeSnapshot of it, the volume deleted). Prints
median/p99 times, the space the data directory's filesystem lost, and the ratios. `sync` runs
before each space reading.

Usage: python bench/emulator_cow.py [--size-gib 1] [--snapshots 100] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spcs.emulator import Emulator

MiB = 1 << 20
GiB = 1 << 30
CLONES = 10


@dataclass
class Result:
    mode: str
    how: str = ""
    snapshot_ms: list[float] = field(default_factory=list)
    clone_ms: list[float] = field(default_factory=list)
    cache_ms: list[float] = field(default_factory=list)
    snapshots_space: int = 0  # bytes the data filesystem lost to the snapshots


def used(path: Path) -> int:
    os.sync()
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def timed_ms(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def fill(path: Path, size: int) -> None:
    """Every other 4 MiB of the volume random, the rest left zero."""
    with path.open("r+b") as f:
        for offset in range(0, size, 8 * MiB):
            f.seek(offset)
            f.write(os.urandom(4 * MiB))


def run_mode(workdir: Path, mode: str, size: int, snapshots: int) -> Result:
    data = workdir / f"emulator-{mode}"
    shutil.rmtree(data, ignore_errors=True)
    emu = Emulator(data, templates=["bench"], copy_on_write=mode).start()
    result = Result(mode, emu.copy_on_write)
    try:
        api = emu.api(transientRetries=0)
        api.volumeCreate({"name": "vol", "size": size, "template": "bench"})
        assert emu.cluster is not None
        gid = api.volumeList("vol")[0].globalId
        fill(Path(emu.cluster.data_path(gid)), size)
        before = used(data)
        for n in range(snapshots):
            result.snapshot_ms.append(
                timed_ms(lambda n=n: api.snapshotCreate("vol", {"name": f"snap-{n}"}))
            )
        result.snapshots_space = used(data) - before
        last = f"snap-{snapshots - 1}"
        for n in range(CLONES):
            body = {"name": f"root-{n}", "parent": last, "template": "bench"}
            result.clone_ms.append(timed_ms(lambda body=body: api.volumeCreate(body)))
        for n in range(CLONES):
            result.cache_ms.append(timed_ms(lambda n=n: cache_template(api, last, n)))
    finally:
        emu.stop(release_devices=True)
        shutil.rmtree(data, ignore_errors=True)
    return result


def cache_template(api: Any, source: str, n: int) -> None:
    """Template caching as spcs does it for a template it has as a snapshot: a volume made
    from it, a snapshot of that, the volume deleted."""
    api.volumeCreate({"name": f"tmpl-{n}", "parent": source, "template": "bench"})
    api.snapshotCreate(f"tmpl-{n}", {"name": f"tmpl-cache-{n}"})
    api.volumeDelete(f"tmpl-{n}")


def p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def report(results: list[Result], args: argparse.Namespace, workdir: Path) -> None:
    fs = subprocess.run(
        ["df", "--output=fstype", str(workdir)], capture_output=True, text=True
    ).stdout.split()[-1]
    print(
        f"machine: {os.cpu_count()} cores, {platform.release()}, workdir {workdir} ({fs}); "
        f"command: {' '.join(sys.argv)}"
    )
    print(
        f"volume {args.size_gib} GiB (half random data), {args.snapshots} snapshots, "
        f"{CLONES} ROOT clones, {CLONES} template cachings; times in ms (median / p99)"
    )
    print(f"{'emulator':<26}{'snapshot':>18}{'ROOT clone':>18}{'template cache':>18}{'space':>14}")
    for r in results:
        cells = [
            f"{statistics.median(v):8.1f} / {p99(v):7.1f}"
            for v in (r.snapshot_ms, r.clone_ms, r.cache_ms)
        ]
        space = f"{r.snapshots_space / MiB:9.1f} MiB"
        label = f"{r.mode} ({r.how})"
        print(f"{label:<26}{cells[0]:>18}{cells[1]:>18}{cells[2]:>18}{space:>14}")
    if len(results) == 2:
        cow, off = results
        ratios = [
            statistics.median(b) / max(statistics.median(a), 1e-6)
            for a, b in (
                (cow.snapshot_ms, off.snapshot_ms),
                (cow.clone_ms, off.clone_ms),
                (cow.cache_ms, off.cache_ms),
            )
        ]
        print(
            "off / auto (higher = copy-on-write faster): "
            + ", ".join(
                f"{name} {ratio:.1f}x"
                for name, ratio in zip(
                    ("snapshot", "ROOT clone", "template cache"), ratios, strict=True
                )
            )
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=int, default=1)
    parser.add_argument("--snapshots", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/spcs-bench-cow"))
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir.resolve()
    size = args.size_gib * GiB
    results = [run_mode(workdir, mode, size, args.snapshots) for mode in ("auto", "off")]
    report(results, args, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
