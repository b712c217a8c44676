#!/usr/bin/env python3
"""Concurrent copies on one host: is the aggregate throughput of 2 and 4 copies running at
once at least that of one copy (no thrashing)?

One host (a node with `--max-copies 4`, loop devices like a StorPool host), the emulator and
one management service, as `bench/endtoend.py` starts them. For each copy kind, batches of 1,
2 and 4 identical copies are started at once through the management service, the batch sizes
alternating round by round, the page cache dropped before each batch and `sync` inside the
clock. Prints, per kind and batch size, the median batch time, the aggregate throughput
(copies x virtual size / batch time) and its ratio to one copy's.

Kinds: template-qcow2zlib (inflate: CPU), backup-qcow2 (device read, file write: I/O),
backup-zstd (compression: CPU).

Usage: python bench/concurrency.py [--size-gib 1] [--runs 3] [--cases a,b] [--quick]
Needs root (loop devices, dropping the page cache), like bench/endtoend.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from endtoend import CASES, Bench, BenchError, Case, GiB, MiB, drop_caches, generate, log
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2

from spcs.v1 import driver_pb2

KINDS = ("template-qcow2zlib", "backup-qcow2", "backup-zstd")
BATCHES = (1, 2, 4)


def run_batch(bench: Bench, case: Case, copies: int, *, verify: bool) -> float:
    """Starts `copies` copies of `case` at once; seconds until all are done and synced."""
    e2es = [bench.e2e(case) for _ in range(copies)]
    ops = operations_pb2_grpc.OperationsStub(bench.channel)

    def one(i: int) -> driver_pb2.CopyDataResult:
        op = e2es[i].start(f"conc-{case.name}-{copies}-{i}-{uuid.uuid4().hex[:8]}")
        while not op.done:
            op = ops.WaitOperation(
                operations_pb2.WaitOperationRequest(
                    name=op.name, timeout=duration_pb2.Duration(seconds=30)
                )
            )
        if op.HasField("error"):
            raise BenchError(f"{case.name} copy {i} of {copies} failed: {op.error.message}")
        result = driver_pb2.CopyDataResult()
        op.response.Unpack(result)
        return result

    os.sync()
    time.sleep(0.5)
    drop_caches()
    t = time.monotonic()
    with ThreadPoolExecutor(copies) as pool:
        results = list(pool.map(one, range(copies)))
    os.sync()
    seconds = time.monotonic() - t
    for e2e, result in zip(e2es, results, strict=True):
        if verify:
            e2e.verify(result)
        e2e.cleanup(result)
    return seconds


def measure(cases: Sequence[Case], size: int, runs: int) -> dict[tuple[str, int], list[float]]:
    """Batch times per (case, copies at once), on one host with room for the largest batch."""
    workdir = Path(tempfile.mkdtemp(prefix="spcs-bench-conc-", dir="/var/tmp"))
    bench = Bench(workdir, size)
    bench.stack.hosts = 1
    bench.stack.node_args = ["--max-copies", str(max(BATCHES))]
    times: dict[tuple[str, int], list[float]] = {}
    try:
        bench.start()
        bench.images = generate(workdir, bench.secondary, size)
        if any(not c.to_device for c in cases):
            bench.make_data_volume()
        for case in cases:
            for r in range(runs):
                for copies in BATCHES[r % 3 :] + BATCHES[: r % 3]:
                    s = run_batch(bench, case, copies, verify=r == 0)
                    times.setdefault((case.name, copies), []).append(s)
                    log(f"  {case.name:20} {copies} at once {s:7.2f}s")
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return times


def report(
    cases: Sequence[Case], size: int, runs: int, times: dict[tuple[str, int], list[float]]
) -> None:
    gib = size / GiB
    print(f"\n{gib:.2f} GiB per copy, {runs} batches each, cold cache, sync in the clock")
    print(f"{'case':20} {'copies':>6} {'median s':>9} {'GiB/s':>7} {'vs one':>7}")
    for case in cases:
        one = gib / statistics.median(times[(case.name, 1)])
        for copies in BATCHES:
            t = statistics.median(times[(case.name, copies)])
            rate = copies * gib / t
            print(f"{case.name:20} {copies:>6} {t:>9.2f} {rate:>7.2f} {rate / one:>6.2f}x")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size-gib", type=float, default=1.0, help="virtual size of the data (GiB)")
    p.add_argument("--runs", type=int, default=3, help="batches per kind and batch size")
    p.add_argument("--cases", help="comma-separated subset of: " + ",".join(KINDS))
    p.add_argument("--quick", action="store_true", help="128 MiB of data, 1 run (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.size_gib, args.runs = min(args.size_gib, 1 / 8), 1
    size = int(args.size_gib * GiB) // (64 * MiB) * 64 * MiB
    if size <= 0 or args.runs < 1:
        p.error("--size-gib must be at least 0.0625 and --runs at least 1")
    names = args.cases.split(",") if args.cases else list(KINDS)
    unknown = sorted(set(names) - set(KINDS))
    if unknown:
        p.error(f"unknown cases: {', '.join(unknown)} (choose from {', '.join(KINDS)})")
    cases = [c for c in CASES if c.name in names]
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        print("bench/concurrency.py needs root and losetup (loop devices)", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} cores; {os.uname().release}; load {os.getloadavg()}")
    print(f"command: python bench/concurrency.py {' '.join(argv or sys.argv[1:])}", flush=True)
    report(cases, size, args.runs, measure(cases, size, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
