#!/usr/bin/env python3
"""An encrypted ROOT volume from a cached template, through management and a node (the node's
`EncryptVolume` job: the template snapshot's device written as a LUKS volume on a new
device), against `qemu-img convert -O luks` of the same bytes from a device to a device (what
the Java plugin's StorPoolSetVolumeEncryptionCommand runs) and `spcs convert -O luks`.

Same bytes as bench/endtoend.py (1 MiB of about 2:1 compressible text, then 1 MiB of zeros,
repeated), on loop devices with direct I/O; every tool derives its LUKS key slot in 2 s of
PBKDF2 (qemu's and cryptsetup's default, the node's `--luks-iter-time-ms`), page cache dropped
before each run, `sync` inside the clock, the tools alternating. Prints medians and ratios.

Usage: python bench/encryption.py [--size-gib 2] [--runs 3] [--quick]
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
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from endtoend import Bench, BenchError, GiB, MiB, drop_caches, generate, log
from google.longrunning import operations_pb2, operations_pb2_grpc

from spcs.v1 import driver_pb2, types_pb2

PASSPHRASE = b"bench passphrase"
HEADER = 2 * MiB
ITER_MS = "2000"
TOOLS = ("e2e", "spcs", "qemu-default", "qemu-best")


def peer_command(tool: str, src: Path, dst: Path, secret: Path) -> list[str]:
    if tool == "spcs":
        return [
            sys.executable, "-m", "spcs.cli", "convert", "-f", "raw", "-O", "luks",
            "--passphrase-file", str(secret), "-o", f"iter-time={ITER_MS}", str(src), str(dst),
        ]  # fmt: skip
    best = ["-t", "none", "-T", "none", "-m", "8", "-W"] if tool == "qemu-best" else []
    return [
        "qemu-img", "convert", *best, "--object", f"secret,id=sec0,file={secret}",
        "-f", "raw", "-O", "luks", "-o", f"key-secret=sec0,iter-time={ITER_MS}",
        str(src), str(dst),
    ]  # fmt: skip


def check(device: Path, raw: Path, secret: Path) -> None:
    """The device, decrypted by qemu's own LUKS driver, holds the template's bytes (its first
    template-size bytes: qemu's header may be shorter, leaving unwritten payload after them)."""
    window = (
        f"driver=raw,size={raw.stat().st_size},file.driver=luks,file.key-secret=sec0,"
        f"file.file.filename={device}"
    )
    proc = subprocess.run(
        ["qemu-img", "compare", "-q", "--object", f"secret,id=sec0,file={secret}",
         "--image-opts", window, f"driver=raw,file.filename={raw}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise BenchError(f"{device} does not decrypt to the template: {proc.stdout}{proc.stderr}")


class Runs:
    def __init__(self, bench: Bench, secret: Path) -> None:
        self.bench, self.secret = bench, secret
        self.template_path = ""
        self.template_uuid = f"tmpl-{uuid.uuid4().hex[:12]}"

    def cache_template(self) -> None:
        """The template (QCOW2 on secondary) cached on the pool once, as for a first deploy."""
        bench = self.bench
        assert bench.images is not None
        image = bench.images.qcow2
        directory = image.parent.relative_to(bench.secondary)
        source = types_pb2.Template(
            uuid=self.template_uuid, id=int(directory.name), path=str(directory),
            store=bench.secondary_store(), format=types_pb2.IMAGE_FORMAT_QCOW2,
        )  # fmt: skip
        cached = types_pb2.Template(uuid=self.template_uuid, store=bench.primary())
        done = self._wait(
            bench._copy(
                f"cache-{self.template_uuid}",
                types_pb2.DataObject(template=source),
                types_pb2.DataObject(template=cached),
            )
        )
        self.template_path = done.result.template.path

    def _wait(self, op: operations_pb2.Operation) -> driver_pb2.CopyDataResult:
        ops = operations_pb2_grpc.OperationsStub(self.bench.channel)
        while not op.done:
            op = ops.WaitOperation(operations_pb2.WaitOperationRequest(name=op.name))
        if op.HasField("error"):
            raise BenchError(f"{op.name} failed: {op.error.message}")
        result = driver_pb2.CopyDataResult()
        op.response.Unpack(result)
        return result

    def e2e(self, verify: bool) -> float:
        bench = self.bench
        assert bench.images is not None
        volume = types_pb2.Volume(
            uuid=f"root-{uuid.uuid4().hex[:12]}", size_bytes=bench.size, store=bench.primary(),
            encryption_format=types_pb2.ENCRYPTION_FORMAT_LUKS, passphrase=PASSPHRASE,
        )  # fmt: skip
        template = types_pb2.Template(
            uuid=self.template_uuid, path=self.template_path, store=bench.primary()
        )
        settle()
        t = time.monotonic()
        result = self._wait(
            bench._copy(
                f"luks-{volume.uuid}",
                types_pb2.DataObject(template=template),
                types_pb2.DataObject(volume=volume),
            )
        )
        os.sync()
        seconds = time.monotonic() - t
        made = result.result.volume
        try:
            if verify:
                with bench.attached(made.path, snapshot=False) as device:
                    check(device, bench.images.raw, self.secret)
        finally:
            bench._delete(types_pb2.DataObject(volume=types_pb2.Volume(path=made.path)))
        return seconds

    def peer(self, tool: str, verify: bool) -> float:
        bench = self.bench
        assert bench.images is not None and bench.peer_source is not None
        target = bench.peer_dir / "luks.raw"
        with target.open("wb") as f:
            f.truncate(bench.size + HEADER)  # a new volume, a header larger
        src = bench.loops.attach(bench.peer_source, read_only=True)
        dst = bench.loops.attach(target, read_only=False)
        try:
            settle()
            t = time.monotonic()
            command = peer_command(tool, src, dst, self.secret)
            subprocess.run(command, check=True, capture_output=True)
            os.sync()
            seconds = time.monotonic() - t
            if verify:
                check(dst, bench.images.raw, self.secret)
        finally:
            bench.loops.detach(dst)
            bench.loops.detach(src)
            target.unlink(missing_ok=True)
        return seconds


def settle() -> None:
    os.sync()
    time.sleep(0.5)
    drop_caches()


def measure(size: int, runs: int) -> dict[str, list[float]]:
    workdir = Path(tempfile.mkdtemp(prefix="spcs-bench-luks-", dir="/var/tmp"))
    bench = Bench(workdir, size)
    secret = workdir / "passphrase"
    secret.write_bytes(PASSPHRASE)
    times: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    try:
        bench.start()
        bench.images = generate(workdir, bench.secondary, size)
        bench.copy_peer_source()
        runner = Runs(bench, secret)
        runner.cache_template()
        one: dict[str, Callable[[bool], float]] = {"e2e": runner.e2e}
        for tool in TOOLS[1:]:
            one[tool] = lambda verify, tool=tool: runner.peer(tool, verify)
        for r in range(runs):
            for tool in TOOLS[r % len(TOOLS) :] + TOOLS[: r % len(TOOLS)]:
                seconds = one[tool](r == 0)
                times[tool].append(seconds)
                log(f"  run {r + 1} {tool:13} {seconds:7.2f}s")
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size-gib", type=float, default=2.0, help="virtual size of the template")
    p.add_argument("--runs", type=int, default=3, help="runs per tool")
    p.add_argument("--quick", action="store_true", help="128 MiB, 1 run (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.size_gib, args.runs = 1 / 8, 1
    size = int(args.size_gib * GiB) // (64 * MiB) * 64 * MiB
    if size <= 0 or args.runs < 1:
        p.error("--size-gib must be at least 0.0625 and --runs at least 1")
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        print("bench/encryption.py needs root and losetup (loop devices)", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} cores; {os.uname().release}; load {os.getloadavg()}")
    print(f"command: python bench/encryption.py {' '.join(argv or sys.argv[1:])}", flush=True)
    times = measure(size, args.runs)
    e2e = statistics.median(times["e2e"])
    print(f"\n{size / GiB:.2f} GiB template, {args.runs} runs each, cold cache, sync in the clock")
    print(f"{'tool':13} {'median s':>9} {'GiB/s':>7}  e2e vs it (target vs qemu: 1.50x)")
    for tool in TOOLS:
        m = statistics.median(times[tool])
        print(f"{tool:13} {m:9.2f} {size / GiB / m:7.2f}  {m / e2e:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
