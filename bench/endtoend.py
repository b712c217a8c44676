#!/usr/bin/env python3
"""End-to-end copy benchmark: copies through the running management and node services
against the same bytes copied by `spcs convert` and by `qemu-img convert`, in one run.

Starts one `Stack` (the StorPool emulator in this process, the management service and two
node services as processes on loopback) whose hosts' StorPool devices are loop devices, adds a
pool, connects the hosts, and generates the data once: a RAW image of --size-gib (alternating
1 MiB of hex text, about 2:1 compressible, and 1 MiB of written zeros) and its QCOW2 copies
made by qemu-img (plain and zlib, `-c`). Then, for every case and page-cache mode, --runs
rounds of four tools, the order rotated every round:

  e2e           the copy through gRPC to the management service, followed to done;
  spcs          `spcs convert` (the data mover's CLI) of the same bytes;
  qemu-default  `qemu-img convert` as CloudStack's KVM agent runs it;
  qemu-best     `qemu-img convert` with its fastest flags: -t none -T none -m 8 -W (without
                -T none from a warm file: O_DIRECT reads would skip the warm cache), and
                -n --target-is-zero into a new, zero device.

The peers read or write a loop device made here over a file of the volume's size (a new
sparse file for writes: a new StorPool volume reads as zeros), on the filesystem of the
emulator's volume files, as the node reads or writes a StorPool device. Cases:

  template-qcow2, template-qcow2zlib  CopyData template (secondary) -> template (primary):
                                      a new template uuid every run, so it downloads;
  backup-qcow2, backup-zlib,          SnapshotStrategy/BackupSnapshot of a snapshot of a
  backup-zstd                         volume holding the RAW data, to a QCOW2 file;
  export                              CopyData volume (primary) -> volume (secondary), QCOW2;
  import                              CopyData volume (secondary QCOW2) -> a new volume.

Every clock includes a `sync` after the copy ends. cold: `sync; echo 3 >
/proc/sys/vm/drop_caches` before each run; warm: the source read once before each run (a
device source through a device that is then detached, as the node attaches its own). The
first round of each case checks every tool's output against the RAW data (qemu-img compare,
outside the clock). Prints median seconds, GiB/s of virtual size, the ratios of e2e to each
peer, where the e2e time went (the operation's stages, timestamped by polling GetOperation on
management and on the node every 20 ms; the final sync) and the StorPool API calls each e2e
copy made (the emulator's request counts).

Needs root (loop devices, drop_caches) and qemu-img; leaves nothing behind (loop devices,
processes, --workdir) also on Ctrl-C or an error.

Usage: python bench/endtoend.py [--size-gib 1] [--runs 3] [--cases a,b] [--cache cold,warm]
                                [--quick] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2

from spcs import __version__
from spcs.demo.stack import TEMPLATE, Stack
from spcs.v1 import (
    driver_pb2,
    driver_pb2_grpc,
    hosts_pb2,
    hosts_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    strategies_pb2,
    strategies_pb2_grpc,
    types_pb2,
)

MiB = 1 << 20
GiB = 1 << 30
REPO = Path(__file__).resolve().parent.parent
SPCS = [sys.executable, "-m", "spcs.cli"]
TOOLS = ("e2e", "spcs", "qemu-default", "qemu-best")
CACHES = ("cold", "warm")
# how often the e2e stages are sampled (every 20 ms took ~20 % of a 2-core host from the copy)
POLL_SECONDS = 0.1
# targets of the issue (report only): tool median / e2e median
TARGETS = {"spcs": 0.9, "qemu-default": 1.3, "qemu-best": 1.0}
# qemu-img's fastest flags here; `-T none` (O_DIRECT reads) only where it does not throw away
# a warm page cache: on a device source (the loop device reads its file through the cache
# anyway) or a cold one (measured on 1 GiB from a warm QCOW2 file: 0.70 s with it, 0.46 without)
QEMU_BEST = ["-t", "none", "-m", "8", "-W"]


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # template | backup | export | import
    source: str  # the image the copy reads: raw | qcow2 | zlib
    compression: str | None = None
    what: str = ""

    @property
    def to_device(self) -> bool:
        """True when the copy writes a StorPool device (downloads), else it reads one."""
        return self.kind in ("template", "import")


CASES: tuple[Case, ...] = (
    Case("template-qcow2", "template", "qcow2", what="CopyData template secondary->primary"),
    Case("template-qcow2zlib", "template", "zlib", what="CopyData template secondary->primary"),
    Case("backup-qcow2", "backup", "raw", what="BackupSnapshot to QCOW2"),
    Case("backup-zlib", "backup", "raw", "zlib", what="BackupSnapshot to QCOW2 zlib"),
    Case("backup-zstd", "backup", "raw", "zstd", what="BackupSnapshot to QCOW2 zstd"),
    Case("export", "export", "raw", what="CopyData volume primary->secondary QCOW2"),
    Case("import", "import", "qcow2", what="CopyData volume secondary QCOW2->primary"),
)


class BenchError(Exception):
    """A copy failed or produced the wrong bytes."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cmd: Sequence[str]) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"{shlex.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def read_all(path: Path) -> None:
    with path.open("rb", buffering=0) as f:
        buf = bytearray(8 * MiB)
        while f.readinto(buf):
            pass


# ---------------------------------------------------------------- data


def write_stripe(path: Path, size: int) -> None:
    """Alternating 1 MiB of hex text (about 2:1 compressible) and 1 MiB of written zeros."""
    zeros = bytes(MiB)
    with path.open("wb") as f:
        for i in range(size // MiB):
            f.write(os.urandom(MiB // 2).hex().encode() if i % 2 == 0 else zeros)


@dataclass
class Images:
    raw: Path
    qcow2: Path  # in a template directory on secondary
    zlib: Path  # in another template directory
    imported: Path  # a hard link of `qcow2` where CloudStack keeps volume files
    size: int

    def of(self, key: str) -> Path:
        return {"raw": self.raw, "qcow2": self.qcow2, "zlib": self.zlib}[key]


def generate(workdir: Path, secondary: Path, size: int) -> Images:
    (workdir / "src").mkdir(parents=True, exist_ok=True)
    images = Images(
        raw=workdir / "src" / "stripe.raw",
        qcow2=secondary / "template" / "tmpl" / "2" / "201" / "stripe.qcow2",
        zlib=secondary / "template" / "tmpl" / "2" / "202" / "stripe.zlib.qcow2",
        imported=secondary / "volumes" / "2" / "import" / "stripe.qcow2",
        size=size,
    )
    for p in (images.qcow2, images.zlib, images.imported):
        p.parent.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    write_stripe(images.raw, size)
    log(f"generated {images.raw.name} ({size / GiB:.2f} GiB) in {time.monotonic() - t:.1f}s")
    qi = ["qemu-img", "convert", "-m", "16", "-W", "-f", "raw", "-O", "qcow2"]
    for extra, out in (([], images.qcow2), (["-c"], images.zlib)):
        t = time.monotonic()
        run([*qi, *extra, str(images.raw), str(out)])
        took = time.monotonic() - t
        log(f"generated {out.name} ({out.stat().st_size / MiB:.0f} MiB) in {took:.1f}s")
    os.link(images.qcow2, images.imported)
    os.sync()
    return images


# ---------------------------------------------------------------- loop devices


class Loops:
    """Loop devices made by the benchmark (for the peers), all detached by close()."""

    def __init__(self) -> None:
        self.devices: list[str] = []

    def attach(self, path: Path, *, read_only: bool) -> Path:
        args = ["losetup", "--find", "--show", "--direct-io=on"]
        args += [*(["--read-only"] if read_only else []), str(path)]
        dev = run(args).strip()
        self.devices.append(dev)
        return Path(dev)

    def detach(self, dev: Path) -> None:
        subprocess.run(["losetup", "--detach", str(dev)], capture_output=True, check=False)
        if str(dev) in self.devices:
            self.devices.remove(str(dev))

    def close(self) -> None:
        for dev in list(self.devices):
            self.detach(Path(dev))


def backing_file(device: Path) -> Path:
    """The file behind a loop device (a StorPool device link of the emulator resolves to one)."""
    name = device.resolve().name
    text = Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
    return Path(text)


def mount_of(path: Path) -> tuple[str, str, str]:
    """(mount point, filesystem type, source) of the filesystem holding `path`."""
    fields = run(["findmnt", "-n", "-o", "TARGET,FSTYPE,SOURCE", "-T", str(path)]).split()
    return fields[0], fields[1], " ".join(fields[2:])


def remove_leftovers(workdir: Path) -> None:
    """Unmount what is still mounted under `workdir` and detach the loop devices over files in
    it: the safety net after the stack stopped (it removes its own)."""
    root = str(workdir.resolve())
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted(points, key=len, reverse=True):
        if point == root or point.startswith(root + "/"):
            log(f"unmounting {point}, left mounted")
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    for entry in Path("/sys/block").glob("loop*/loop/backing_file"):
        backing = entry.read_text().strip().removesuffix(" (deleted)")
        if backing == root or backing.startswith(root + "/"):
            dev = f"/dev/{entry.parent.parent.name}"
            log(f"detaching {dev} ({backing}), left attached")
            subprocess.run(["losetup", "--detach", dev], capture_output=True, check=False)


# ---------------------------------------------------------------- peers


def peer_commands(case: Case, cache: str, src: Path, dst: Path) -> dict[str, list[str]]:
    """The peers' command lines for `case` (src and dst are a file and a device)."""
    best = QEMU_BEST if case.to_device and cache == "warm" else [*QEMU_BEST, "-T", "none"]
    if case.to_device:
        # CloudStack's StorPoolDownloadTemplateCommand / DownloadVolume: qcow2 -> the device
        return {
            "spcs": [*SPCS, "convert", "-O", "raw", "--target-is-zero", str(src), str(dst)],
            "qemu-default": ["qemu-img", "convert", "-O", "raw", str(src), str(dst)],
            "qemu-best": [
                "qemu-img",
                "convert",
                *best,
                "-n",
                "--target-is-zero",
                "-O",
                "raw",
                str(src),
                str(dst),
            ],
        }
    # StorPoolBackupSnapshotCommand / CopyVolumeToSecondary: the device -> qcow2 [-c]
    spcs = [*SPCS, "convert", "-f", "raw", "-O", "qcow2"]
    qemu = ["-f", "raw", "-O", "qcow2"]
    if case.compression:
        spcs += ["--compression", case.compression]
        qemu += ["-c"] + (["-o", "compression_type=zstd"] if case.compression == "zstd" else [])
    return {
        "spcs": [*spcs, str(src), str(dst)],
        "qemu-default": ["qemu-img", "convert", *qemu, str(src), str(dst)],
        "qemu-best": ["qemu-img", "convert", *best, *qemu, str(src), str(dst)],
    }


# ---------------------------------------------------------------- results


@dataclass
class Run:
    seconds: float
    output: int = 0  # bytes of the output file (file outputs)
    stages: list[tuple[str, float]] = field(default_factory=list)  # e2e only
    calls: dict[str, int] = field(default_factory=dict)  # e2e only
    sync: float = 0.0


@dataclass
class Results:
    runs: dict[tuple[str, str, str], list[Run]] = field(default_factory=dict)

    def add(self, cache: str, case: str, tool: str, result: Run) -> None:
        self.runs.setdefault((cache, case, tool), []).append(result)

    def get(self, cache: str, case: str, tool: str) -> list[Run]:
        return self.runs.get((cache, case, tool), [])


# ---------------------------------------------------------------- following an operation


class StagePoller(threading.Thread):
    """Samples a management operation (and the node job it follows) every POLL_SECONDS and
    records when the stage changes: management stages as `mgmt: ...`, the node job's own
    stages as `node: ...` (sampled on the node itself: management mirrors them every 0.2 s)."""

    def __init__(self, bench: Bench, name: str) -> None:
        super().__init__(daemon=True, name="stage-poller")
        self.bench = bench
        self.name_ = name
        self.changes: list[tuple[float, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        ops = operations_pb2_grpc.OperationsStub(self.bench.channel)
        node_job: str | None = None
        while not self.stopping.is_set():
            try:
                op = ops.GetOperation(operations_pb2.GetOperationRequest(name=self.name_))
            except grpc.RpcError:  # a lost sample is not a failure of the copy
                self.stopping.wait(POLL_SECONDS)
                continue
            meta = types_pb2.OperationMetadata()
            op.metadata.Unpack(meta)
            stage = meta.stage
            label = f"mgmt: {stage}"
            if " on host-" in stage and meta.host_id:
                prefix, _, mirrored = stage.partition(" on host-")
                mirrored = mirrored.partition(": ")[2]
                node_ops = self.bench.node_operations(meta.host_id)
                if node_job is None:
                    node_job = self._find_node_job(node_ops)
                if node_job is not None:
                    try:
                        nop = node_ops.GetOperation(
                            operations_pb2.GetOperationRequest(name=node_job)
                        )
                    except grpc.RpcError:
                        nop = None
                    if nop is not None:
                        nmeta = types_pb2.OperationMetadata()
                        nop.metadata.Unpack(nmeta)
                        mirrored = "(job ended; management follows)" if nop.done else nmeta.stage
                label = f"node: {mirrored}" if mirrored else f"mgmt: {prefix} (starting node job)"
            now = time.monotonic()
            if not self.changes or self.changes[-1][1] != label:
                self.changes.append((now, label))
            if op.done:
                return
            self.stopping.wait(POLL_SECONDS)

    def _find_node_job(self, node_ops: operations_pb2_grpc.OperationsStub) -> str | None:
        try:
            reply = node_ops.ListOperations(
                operations_pb2.ListOperationsRequest(filter="done=false")
            )
        except grpc.RpcError:
            return None
        for nop in reply.operations:
            if nop.name.startswith(self.name_ + "."):
                return str(nop.name)
        return None

    def durations(self, start: float, end: float) -> list[tuple[str, float]]:
        """Seconds per stage label between `start` and `end`, in the order first seen."""
        totals: dict[str, float] = {}
        points = self.changes
        if not points or points[0][0] > start:
            points = [(start, "mgmt: (before the first sample)"), *points]
        for (t, label), nxt in zip(points, [*points[1:], (end, "")], strict=True):
            totals[label] = totals.get(label, 0.0) + max(0.0, min(nxt[0], end) - max(t, start))
        return list(totals.items())


# ---------------------------------------------------------------- the bench


@dataclass
class E2e:
    """One e2e copy: how to start it, what to check and what to remove afterwards."""

    start: Callable[[str], operations_pb2.Operation]  # operation id -> its operation
    output: Callable[[driver_pb2.CopyDataResult], Path | None]  # the output file, if any
    verify: Callable[[driver_pb2.CopyDataResult], None]
    cleanup: Callable[[driver_pb2.CopyDataResult], None]


class Bench:
    def __init__(self, workdir: Path, size: int) -> None:
        self.workdir = workdir
        self.size = size
        self.stack = Stack(workdir / "stack", hosts=2, loop=True)
        self.loops = Loops()
        self._channel: grpc.Channel | None = None
        self.pool = "pool-bench"
        self._node_channels: dict[str, grpc.Channel] = {}
        self.images: Images | None = None
        self.peer_dir = workdir / "peer"  # where the peers' device files live (see locate())
        self.peer_source: Path | None = None  # the RAW data there, for the peers' reads
        self.volumes_on = ""  # the filesystem of the emulator's volume files, for the header
        self.volume_path = ""
        self.volume_uuid = ""
        self.snapshot_path = ""
        self.snapshot_uuid = ""

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        log(f"starting emulator, management and 2 nodes (loop devices) in {self.stack.workdir}")
        self.stack.start()
        assert self.stack.management is not None
        self._channel = grpc.insecure_channel(self.stack.management.address)
        self._add_pool()
        self.locate()

    def close(self) -> None:
        for ch in [self._channel, *self._node_channels.values()]:
            if ch is not None:
                ch.close()
        self._channel = None
        self._node_channels.clear()
        self.loops.close()
        if self.peer_dir.parent != self.workdir:
            shutil.rmtree(self.peer_dir, ignore_errors=True)
        self.stack.stop()
        remove_leftovers(self.workdir)

    def locate(self) -> None:
        """Find the filesystem of the emulator's volume files (behind the loop devices of its
        attachments) and keep the peers' device files on that same filesystem."""
        probe = self.driver.CreateVolume(
            driver_pb2.CreateVolumeRequest(
                pool=types_pb2.PrimaryStore(pool_uuid=self.pool),
                volume=types_pb2.Volume(uuid=f"probe-{uuid.uuid4().hex[:12]}", size_bytes=MiB),
            )
        )
        try:
            with self.attached(probe.path, snapshot=False) as device:
                point, fstype, source = mount_of(backing_file(device))
        finally:
            self._delete(types_pb2.DataObject(volume=types_pb2.Volume(path=probe.path)))
        copies = getattr(self.stack.emulator, "copy_on_write", "")  # newer emulators say how
        self.volumes_on = f"{fstype} ({source}, mounted on {point})" + (
            f", snapshots and clones: {copies}" if copies else ""
        )
        if point != mount_of(self.workdir)[0]:
            # e.g. the emulator's own XFS image: the peers' files go onto it too
            self.peer_dir = Path(point) / ".spcs-bench-peer"
        self.peer_dir.mkdir(parents=True, exist_ok=True)
        log(f"emulator volumes on {self.volumes_on}; peer devices in {self.peer_dir}")

    def copy_peer_source(self) -> None:
        """The RAW data as a file beside the peers' other device files (every byte allocated,
        as in the volume written through its device): what the peers read as a device."""
        assert self.images is not None
        self.peer_source = self.peer_dir / "source.raw"
        with self.images.raw.open("rb") as src, self.peer_source.open("wb") as dst:
            while chunk := src.read(4 * MiB):
                dst.write(chunk)
            os.fsync(dst.fileno())

    @property
    def secondary(self) -> Path:
        return self.stack.secondary

    @property
    def url(self) -> str:
        return f"file://{self.secondary}"

    @property
    def channel(self) -> grpc.Channel:
        assert self._channel is not None, "the bench is not started"
        return self._channel

    def node_channel(self, host_id: str) -> grpc.Channel:
        if host_id not in self._node_channels:
            n = int(host_id.rsplit("-", 1)[1])
            self._node_channels[host_id] = grpc.insecure_channel(self.stack.nodes[n - 1].address)
        return self._node_channels[host_id]

    def node_operations(self, host_id: str) -> operations_pb2_grpc.OperationsStub:
        return operations_pb2_grpc.OperationsStub(self.node_channel(host_id))

    # ---- stubs and messages --------------------------------------------------------------

    @property
    def driver(self) -> driver_pb2_grpc.PrimaryDataStoreDriverStub:
        return driver_pb2_grpc.PrimaryDataStoreDriverStub(self.channel)

    def primary(self) -> types_pb2.DataStore:
        return types_pb2.DataStore(primary=types_pb2.PrimaryStore(pool_uuid=self.pool))

    def secondary_store(self) -> types_pb2.DataStore:
        return types_pb2.DataStore(secondary=types_pb2.SecondaryStore(url=self.url))

    def _add_pool(self) -> None:
        emu = self.stack.emulator
        assert emu is not None
        lifecycle = lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(self.channel)
        lifecycle.InitializePool(
            lifecycle_pb2.InitializePoolRequest(
                pool_uuid=self.pool,
                name=self.pool,
                url=f"SP_API_HTTP={emu.host}:{emu.port};SP_AUTH_TOKEN={emu.token};"
                f"SP_TEMPLATE={TEMPLATE}",
                zone_id="zone-1",
                capacity_bytes=1 << 40,
            )
        )
        lifecycle.AttachZone(lifecycle_pb2.AttachZoneRequest(pool_uuid=self.pool, zone_id="zone-1"))
        hosts = hosts_pb2_grpc.HostListenerStub(self.channel)
        for host in (f"host-{n}" for n in range(1, self.stack.hosts + 1)):
            reply = hosts.HostConnect(
                hosts_pb2.HostConnectRequest(host_id=host, pool_uuid=self.pool)
            )
            if not reply.connected:
                raise BenchError(f"{host} did not connect to the pool: {reply.reason}")

    # ---- devices through a node (as a VM or CloudStack's agent would) --------------------

    @contextmanager
    def attached(self, path: str, *, snapshot: bool, host: int = 1) -> Iterator[Path]:
        adaptor = node_pb2_grpc.StorageAdaptorStub(self.node_channel(f"host-{host}"))
        kind = node_pb2.DISK_KIND_SNAPSHOT if snapshot else node_pb2.DISK_KIND_VOLUME
        adaptor.ConnectPhysicalDisk(
            node_pb2.ConnectPhysicalDiskRequest(disk=node_pb2.DiskRef(path=path, kind=kind))
        )
        try:
            yield self.stack.device_root(host) / "storpool-byid" / path.rsplit("/", 1)[1]
        finally:
            adaptor.DisconnectPhysicalDisk(
                node_pb2.DisconnectPhysicalDiskRequest(
                    disk=node_pb2.DiskRef(path=path, kind=kind), force_allowed=True
                )
            )

    def make_data_volume(self) -> None:
        """A volume holding the RAW data (written through a node attach, every byte, as a VM
        would), and a snapshot of it: the source of the backup and export cases."""
        assert self.images is not None
        t = time.monotonic()
        self.volume_uuid = f"vol-{uuid.uuid4().hex[:12]}"
        volume = self.driver.CreateVolume(
            driver_pb2.CreateVolumeRequest(
                pool=types_pb2.PrimaryStore(pool_uuid=self.pool),
                volume=types_pb2.Volume(uuid=self.volume_uuid, name="DATA", size_bytes=self.size),
            )
        )
        self.volume_path = volume.path
        with (
            self.attached(volume.path, snapshot=False) as device,
            self.images.raw.open("rb") as src,
            device.open("r+b") as dst,
        ):
            shutil.copyfileobj(src, dst, 4 * MiB)
            dst.flush()
            os.fsync(dst.fileno())
        self.snapshot_uuid = f"snap-{uuid.uuid4().hex[:12]}"
        snap = self.driver.TakeSnapshot(
            driver_pb2.TakeSnapshotRequest(
                pool=types_pb2.PrimaryStore(pool_uuid=self.pool),
                snapshot=types_pb2.Snapshot(uuid=self.snapshot_uuid, volume_path=volume.path),
            )
        )
        self.snapshot_path = snap.path
        os.sync()
        log(f"data volume {volume.path} and snapshot {snap.path} in {time.monotonic() - t:.1f}s")

    # ---- e2e copies ----------------------------------------------------------------------

    def _copy(
        self,
        op_id: str,
        source: types_pb2.DataObject,
        destination: types_pb2.DataObject,
        options: driver_pb2.CopyOptions | None = None,
    ) -> operations_pb2.Operation:
        return self.driver.CopyData(
            driver_pb2.CopyDataRequest(
                operation_id=op_id,
                source=source,
                destination=destination,
                options=options or driver_pb2.CopyOptions(),
            )
        )

    def _compare(self, image: Path, fmt: str) -> None:
        assert self.images is not None
        proc = subprocess.run(
            ["qemu-img", "compare", "-q", "-f", "raw", "-F", fmt, str(self.images.raw), str(image)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BenchError(f"{image} differs from the RAW data: {proc.stdout}{proc.stderr}")

    def _compare_object(self, path: str, *, snapshot: bool) -> None:
        with self.attached(path, snapshot=snapshot) as device:
            self._compare(device, "raw")

    def _delete(self, obj: types_pb2.DataObject) -> None:
        pool = types_pb2.PrimaryStore(pool_uuid=self.pool)
        self.driver.DeleteData(driver_pb2.DeleteDataRequest(pool=pool, object=obj))

    def e2e(self, case: Case) -> E2e:
        builders = {
            "template": self._e2e_template,
            "import": self._e2e_import,
            "backup": self._e2e_backup,
            "export": self._e2e_export,
        }
        return builders[case.kind](case)

    def _e2e_template(self, case: Case) -> E2e:
        """CopyData template (secondary) -> template (primary), a new template each run."""
        assert self.images is not None
        image, size = self.images.of(case.source), self.images.size
        state: dict[str, str] = {}

        def start(op_id: str) -> operations_pb2.Operation:
            state["uuid"] = f"tmpl-{uuid.uuid4().hex[:12]}"  # a new template: a download
            directory = image.parent.relative_to(self.secondary)
            template = types_pb2.Template(
                uuid=state["uuid"],
                name=f"{directory.name}-2-bench",
                id=int(directory.name),
                path=str(directory),
                store=self.secondary_store(),
                format=types_pb2.IMAGE_FORMAT_QCOW2,
                size_bytes=size,
            )
            cached = types_pb2.Template(uuid=state["uuid"], store=self.primary())
            return self._copy(
                op_id,
                types_pb2.DataObject(template=template),
                types_pb2.DataObject(template=cached),
            )

        def cleanup(_result: driver_pb2.CopyDataResult) -> None:
            template = types_pb2.Template(uuid=state["uuid"])
            self._delete(types_pb2.DataObject(template=template))

        return E2e(
            start,
            lambda _r: None,
            lambda r: self._compare_object(r.result.template.path, snapshot=True),
            cleanup,
        )

    def _e2e_import(self, case: Case) -> E2e:
        """CopyData volume (a QCOW2 file on secondary) -> a new volume on primary."""
        assert self.images is not None
        source = types_pb2.Volume(
            path=str(self.images.imported.relative_to(self.secondary)),
            store=self.secondary_store(),
            format=types_pb2.IMAGE_FORMAT_QCOW2,
            size_bytes=self.images.size,
        )

        def start(op_id: str) -> operations_pb2.Operation:
            volume = types_pb2.Volume(
                uuid=f"vol-{uuid.uuid4().hex[:12]}",
                size_bytes=source.size_bytes,
                store=self.primary(),
            )
            return self._copy(
                op_id, types_pb2.DataObject(volume=source), types_pb2.DataObject(volume=volume)
            )

        def cleanup(result: driver_pb2.CopyDataResult) -> None:
            volume = types_pb2.Volume(path=result.result.volume.path)
            self._delete(types_pb2.DataObject(volume=volume))

        return E2e(
            start,
            lambda _r: None,
            lambda r: self._compare_object(r.result.volume.path, snapshot=False),
            cleanup,
        )

    def _file_output(
        self,
        start: Callable[[str], operations_pb2.Operation],
        relative: Callable[[driver_pb2.CopyDataResult], str],
    ) -> E2e:
        """A copy that writes a file on secondary (`relative`: its path in the result)."""

        def output(result: driver_pb2.CopyDataResult) -> Path:
            return self.secondary / relative(result)

        def cleanup(result: driver_pb2.CopyDataResult) -> None:
            path = output(result)
            path.unlink(missing_ok=True)
            if path.parent != self.secondary:
                shutil.rmtree(path.parent, ignore_errors=True)

        return E2e(start, output, lambda r: self._compare(output(r), "qcow2"), cleanup)

    def _e2e_backup(self, case: Case) -> E2e:
        """SnapshotStrategy/BackupSnapshot of the data volume's snapshot to a QCOW2 file."""
        compression = {
            None: types_pb2.COMPRESSION_NONE,
            "zlib": types_pb2.COMPRESSION_ZLIB,
            "zstd": types_pb2.COMPRESSION_ZSTD,
        }[case.compression]

        def start(op_id: str) -> operations_pb2.Operation:
            strategy = strategies_pb2_grpc.SnapshotStrategyStub(self.channel)
            return strategy.BackupSnapshot(
                strategies_pb2.BackupSnapshotRequest(
                    operation_id=op_id,
                    snapshot=types_pb2.Snapshot(uuid=self.snapshot_uuid, path=self.snapshot_path),
                    pool=types_pb2.PrimaryStore(pool_uuid=self.pool),
                    destination=types_pb2.SecondaryStore(url=self.url),
                    destination_path=f"snapshots/2/1/{op_id}/{self.snapshot_uuid}",
                    format=types_pb2.IMAGE_FORMAT_QCOW2,
                    compression=compression,
                )
            )

        return self._file_output(start, lambda r: r.result.snapshot.path)

    def _e2e_export(self, case: Case) -> E2e:
        """CopyData volume (primary) -> volume (secondary), QCOW2."""

        def start(op_id: str) -> operations_pb2.Operation:
            source = types_pb2.Volume(
                uuid=self.volume_uuid, path=self.volume_path, store=self.primary()
            )
            destination = types_pb2.Volume(
                uuid=f"exp-{op_id}", path=f"volumes/2/{op_id}", store=self.secondary_store()
            )
            return self._copy(
                op_id,
                types_pb2.DataObject(volume=source),
                types_pb2.DataObject(volume=destination),
                driver_pb2.CopyOptions(format=types_pb2.IMAGE_FORMAT_QCOW2),
            )

        return self._file_output(start, lambda r: r.result.volume.path)

    def warm_e2e(self, case: Case) -> None:
        """Read what the e2e copy will read, the way it reaches it."""
        assert self.images is not None
        if case.to_device:
            read_all(self.images.of(case.source))
        elif case.kind == "backup":
            with self.attached(self.snapshot_path, snapshot=True) as device:
                read_all(device)
        else:
            with self.attached(self.volume_path, snapshot=False) as device:
                read_all(device)

    def run_e2e(self, case: Case, e2e: E2e, *, verify: bool) -> Run:

        emulator = self.stack.emulator
        assert emulator is not None
        ops = operations_pb2_grpc.OperationsStub(self.channel)
        op_id = f"bench-{case.name}-{uuid.uuid4().hex[:8]}"
        emulator.reset_request_counts()
        t0 = time.monotonic()
        op = e2e.start(op_id)
        t_rpc = time.monotonic()
        poller = StagePoller(self, op.name)
        poller.start()
        try:
            while not op.done:
                op = ops.WaitOperation(
                    operations_pb2.WaitOperationRequest(
                        name=op.name, timeout=duration_pb2.Duration(seconds=30)
                    )
                )
            t_done = time.monotonic()
        finally:
            poller.stopping.set()
            poller.join(5)
        os.sync()
        t_end = time.monotonic()
        calls = emulator.request_counts()
        if op.HasField("error"):
            raise BenchError(f"{case.name}: {op_id} failed: {op.error.message}")
        result = driver_pb2.CopyDataResult()
        op.response.Unpack(result)
        stages = [
            ("rpc: the call that starts the operation", t_rpc - t0),
            *poller.durations(t_rpc, t_done),
            ("flush: sync after the operation ended", t_end - t_done),
        ]
        out = e2e.output(result)
        size = out.stat().st_size if out is not None else 0
        try:
            if verify:
                e2e.verify(result)
        finally:
            e2e.cleanup(result)
        return Run(t_end - t0, size, stages, calls, t_end - t_done)

    # ---- peers ---------------------------------------------------------------------------

    def run_peer(self, case: Case, tool: str, cache: str, *, verify: bool) -> Run:
        """One run of a peer: the device is a loop device made here over a file beside the
        emulator's volume files (a new sparse one when the copy writes the device)."""
        assert self.images is not None
        out = self.secondary / "peer" / "out.qcow2"
        out.parent.mkdir(exist_ok=True)
        if case.to_device:
            backing = self.peer_dir / "volume.raw"
            with backing.open("wb") as f:
                f.truncate(self.size)  # a new StorPool volume: reads as zeros
        else:
            assert self.peer_source is not None
            backing = self.peer_source
            out.unlink(missing_ok=True)
        device: Path | None = None
        try:
            os.sync()
            time.sleep(0.5)
            if cache == "cold":
                drop_caches()
            elif case.to_device:
                read_all(self.images.of(case.source))
            else:
                # as the e2e warm-up: read through a device that then goes away (the node
                # attaches its own for the copy)
                warming = self.loops.attach(backing, read_only=True)
                try:
                    read_all(warming)
                finally:
                    self.loops.detach(warming)
            device = self.loops.attach(backing, read_only=not case.to_device)
            if case.to_device:
                src, dst = self.images.of(case.source), device
            else:
                src, dst = device, out
            cmd = peer_commands(case, cache, src, dst)[tool]
            t = time.monotonic()
            run(cmd)
            os.sync()
            seconds = time.monotonic() - t
            size = 0 if case.to_device else out.stat().st_size
            if verify:
                self._compare(dst, "raw" if case.to_device else "qcow2")
        finally:
            if device is not None:
                self.loops.detach(device)
            if case.to_device:
                backing.unlink(missing_ok=True)
            out.unlink(missing_ok=True)
        return Run(seconds, size)


# ---------------------------------------------------------------- report

TIMES = "\N{MULTIPLICATION SIGN}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def ratio(peer: float, e2e: float) -> str:
    """How much faster e2e is than the peer: peer time / e2e time (higher = e2e faster)."""
    return f"{peer / e2e:.2f}{TIMES}" if e2e > 0 and peer > 0 else "-"


def _script() -> str:
    """This script's path as typed, relative to the repository when it is inside it."""
    path = Path(sys.argv[0]).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def machine_lines(workdir: Path, argv: Sequence[str]) -> list[str]:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    fs = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(workdir)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    qemu = run(["qemu-img", "--version"]).splitlines()[0]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        "bench/endtoend.py: end-to-end copies (management + node over gRPC) vs spcs convert and "
        "qemu-img convert",
        f"machine: {os.cpu_count()} CPUs (nproc), {mem / GiB:.1f} GiB RAM, kernel "
        f"{platform.release()}, workdir {workdir} on {' '.join(fs) or '?'}",
        f"tools: {qemu}; spcs {__version__}; Python {platform.python_version()}",
        f"command: {shlex.join([Path(sys.executable).name, _script(), *argv])}",
        f"started: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}, "
        f"load average {load}",
    ]


def method_lines(runs: int, images: Images, volumes_on: str, peer_dir: Path) -> list[str]:
    targets = ", ".join(f"{v:.2f}{TIMES} {k}" for k, v in TARGETS.items())
    return [
        "StorPool: the spcs emulator (in the benchmark's process); its volumes and snapshots are "
        f"sparse files behind loop devices (Stack loop=True), on {volumes_on}; the peers read or "
        f"write loop devices over files on the same filesystem ({peer_dir}); secondary "
        "storage (file://) is a directory of the workdir",
        f"data: {images.size / GiB:.2f} GiB RAW (1 MiB hex text, about 2:1 compressible, and 1 MiB "
        f"of written zeros, alternating); QCOW2 {images.qcow2.stat().st_size / MiB:.0f} MiB, "
        f"QCOW2 zlib {images.zlib.stat().st_size / MiB:.0f} MiB (qemu-img convert [-c])",
        f"runs per tool, case and cache: {runs}, the tools alternating (order rotated each "
        "round); every time includes a final sync; cold = `sync; echo 3 > "
        "/proc/sys/vm/drop_caches` before each run, warm = the source read once before each run "
        "(a device source through a device then detached: the copy attaches a new one)",
        f"ratios: peer median / e2e median (x.xx{TIMES}, higher = e2e faster; 1.00{TIMES} = as "
        f"fast as the peer); targets (to report against): e2e >= {targets}",
        "GiB/s: virtual size / median; out MiB: size of the output file (file outputs)",
        "",
    ]


def case_lines(case: Case, cache: str, size: int, results: Results) -> list[str]:
    e2e_runs = results.get(cache, case.name, "e2e")
    med = {t: median([r.seconds for r in results.get(cache, case.name, t)]) for t in TOOLS}
    out = [
        f"== {case.name} [{cache}]: {case.what}",
        f"  {'tool':13} {'median s':>9} {'min-max s':>13} {'GiB/s':>6} {'out MiB':>8}  e2e vs it",
    ]
    for tool in TOOLS:
        runs = results.get(cache, case.name, tool)
        secs = [r.seconds for r in runs]
        m = med[tool]
        outputs = [r.output for r in runs if r.output]
        size_text = f"{median(outputs) / MiB:8.1f}" if outputs else f"{'-':>8}"
        versus = ""
        if tool != "e2e" and med["e2e"] > 0:
            met = m / med["e2e"] >= TARGETS[tool]
            versus = (
                f"  {ratio(m, med['e2e']):>7} (target {TARGETS[tool]:.2f}{TIMES}: "
                f"{'met' if met else 'MISSED'})"
            )
        out.append(
            f"  {tool:13} {m:9.2f} {min(secs):6.2f}-{max(secs):<6.2f} "
            f"{size / m / GiB if m else 0:6.2f} {size_text}{versus}"
        )
    out.append("  where the e2e time went (median s over the runs, share of the e2e median):")
    for label in stage_order(e2e_runs):
        m = median([dict(r.stages).get(label, 0.0) for r in e2e_runs])
        share = m / med["e2e"] * 100 if med["e2e"] else 0.0
        out.append(f"    {m:7.3f} s {share:5.1f} %  {label}")
    per_command: Counter[str] = Counter()
    for r in e2e_runs:
        per_command.update(r.calls)
    calls = ", ".join(f"{k} {v / len(e2e_runs):g}" for k, v in sorted(per_command.items()))
    total = median([sum(r.calls.values()) for r in e2e_runs])
    out += [f"  StorPool API calls per e2e run (emulator request counts): {total:g}: {calls}", ""]
    return out


def stage_order(runs: Sequence[Run]) -> list[str]:
    """The stage labels of the runs in the order they happen (by their mean start), without
    the ones shorter than a millisecond in every run."""
    starts: dict[str, list[float]] = {}
    longest: dict[str, float] = {}
    for r in runs:
        offset = 0.0
        for label, seconds in r.stages:
            starts.setdefault(label, []).append(offset)
            longest[label] = max(longest.get(label, 0.0), seconds)
            offset += seconds
    labels = [label for label in starts if longest[label] >= 0.001]
    return sorted(labels, key=lambda label: statistics.mean(starts[label]))


def summary_lines(cases: Sequence[Case], caches: Sequence[str], results: Results) -> list[str]:
    peers = TOOLS[1:]
    out = [
        "summary: e2e median s, and e2e vs each peer (peer median / e2e median; * = target missed)",
        f"  {'case':20} {'cache':5} {'e2e s':>7} " + " ".join(f"{t:>13}" for t in peers),
    ]
    for cache in caches:
        for case in cases:
            med = {t: median([r.seconds for r in results.get(cache, case.name, t)]) for t in TOOLS}
            if not med["e2e"]:
                continue
            cells = [
                ratio(med[t], med["e2e"]) + ("*" if med[t] / med["e2e"] < TARGETS[t] else " ")
                for t in peers
            ]
            out.append(
                f"  {case.name:20} {cache:5} {med['e2e']:7.2f} "
                + " ".join(f"{c:>13}" for c in cells)
            )
    targets = " ".join(f"{'>= ' + format(TARGETS[t], '.2f') + TIMES:>12} " for t in peers)
    out += [f"  {'targets':34} {targets}", ""]
    return out


def command_lines(cases: Sequence[Case], caches: Sequence[str]) -> list[str]:
    out = ["peer commands (SRC and DST: a file and a loop device, or a loop device and a file):"]
    for case in cases:
        for cache in caches:
            for tool, cmd in peer_commands(case, cache, Path("SRC"), Path("DST")).items():
                shown = [Path(sys.executable).name if c == sys.executable else c for c in cmd]
                out.append(f"  {case.name:20} {cache:5} {tool:13} {shlex.join(shown)}")
    return out


def report(
    runs: int,
    cases: Sequence[Case],
    caches: Sequence[str],
    bench: Bench,
    results: Results,
) -> None:
    assert bench.images is not None
    images = bench.images
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    out = [f"finished: {now}, load average {load}"]
    out += method_lines(runs, images, bench.volumes_on, bench.peer_dir)
    for cache in caches:
        for case in cases:
            if results.get(cache, case.name, "e2e"):
                out += case_lines(case, cache, images.size, results)
    out += summary_lines(cases, caches, results) + command_lines(cases, caches)
    print("\n".join(out), flush=True)


# ---------------------------------------------------------------- main


def _chosen(
    p: argparse.ArgumentParser, chosen: str | None, known: Sequence[str], what: str
) -> list[str]:
    if not chosen:
        return list(known)
    wanted = [w for w in chosen.split(",") if w]
    unknown = set(wanted) - set(known)
    if unknown:
        p.error(f"unknown {what}: {', '.join(sorted(unknown))}")
    return [k for k in known if k in wanted]


def measure(
    bench: Bench, cases: Sequence[Case], caches: Sequence[str], runs: int, results: Results
) -> None:
    for cache in caches:
        for case in cases:
            e2e = bench.e2e(case)
            for r in range(runs):
                order = TOOLS[r % len(TOOLS) :] + TOOLS[: r % len(TOOLS)]
                verify = r == 0 and cache == caches[0]
                for tool in order:
                    if tool == "e2e":
                        os.sync()
                        time.sleep(0.5)
                        if cache == "cold":
                            drop_caches()
                        else:
                            bench.warm_e2e(case)
                        result = bench.run_e2e(case, e2e, verify=verify)
                    else:
                        result = bench.run_peer(case, tool, cache, verify=verify)
                    results.add(cache, case.name, tool, result)
                    log(f"  [{cache}] {case.name:20} {tool:13} {result.seconds:7.2f}s")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size-gib", type=float, default=1.0, help="virtual size of the data (GiB)")
    p.add_argument("--runs", type=int, default=3, help="runs per tool, case and cache")
    p.add_argument("--cases", help="comma-separated subset of: " + ",".join(c.name for c in CASES))
    p.add_argument("--cache", help="comma-separated subset of: cold,warm (default both)")
    p.add_argument("--quick", action="store_true", help="64 MiB of data, 1 run (smoke test)")
    p.add_argument(
        "--workdir", type=Path, help="an empty or new directory (default: a new one in /var/tmp)"
    )
    p.add_argument("--keep", action="store_true", help="keep --workdir afterwards")
    args = p.parse_args(argv)
    if args.quick:
        args.size_gib, args.runs = min(args.size_gib, 1 / 16), 1
    size = int(args.size_gib * GiB) // (64 * MiB) * 64 * MiB
    if size <= 0:
        p.error("--size-gib is too small (minimum 0.0625)")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    names = _chosen(p, args.cases, [c.name for c in CASES], "cases")
    cases = [c for c in CASES if c.name in names]
    caches = _chosen(p, args.cache, CACHES, "cache modes")
    for tool in ("qemu-img", "losetup", "findmnt"):
        if shutil.which(tool) is None:
            p.error(f"{tool} is not installed")
    if os.geteuid() != 0:
        print(
            "bench/endtoend.py needs root: the StorPool devices are loop devices (losetup) and "
            "cold runs drop the page cache; run it as root (e.g. sudo just bench-endtoend)",
            file=sys.stderr,
        )
        return 2
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        p.error(f"--workdir {args.workdir} is not empty")
    workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix="spcs-bench-e2e-", dir="/var/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = workdir.resolve()
    # SIGTERM as Ctrl-C: unwind, so that every process and loop device is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    print("\n".join(machine_lines(args.workdir, argv)), flush=True)
    bench = Bench(args.workdir, size)
    results = Results()
    try:
        bench.start()
        bench.images = generate(args.workdir, bench.secondary, size)
        if any(not c.to_device for c in cases):
            bench.make_data_volume()
            bench.copy_peer_source()
        measure(bench, cases, caches, args.runs, results)
        report(args.runs, cases, caches, bench, results)
    finally:
        bench.close()
        if args.keep:
            log(f"kept {args.workdir}")
        else:
            shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; every process and loop device started was removed")
        sys.exit(130)
