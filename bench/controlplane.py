#!/usr/bin/env python3
"""Control-plane benchmark: volume and snapshot calls through the management service (gRPC)
against the same StorPool API calls made directly, in the same run, on the same emulator.

Starts `spcs emulator` and `spcs management` as processes on loopback (free ports) under
--workdir, adds one pool through the service, then:

1. calls: checks from the emulator's request log that both paths make the same StorPool API
   calls for each operation (the direct path is StorPoolApi, the client the service uses);
2. latency: --iterations rounds of create volume, take snapshot, delete snapshot, delete volume
   by one caller, the two paths alternating each round (after --warmup rounds); p50/p99 per
   operation, the time the service's handler took and the part of it spent in StorPool API
   calls (from its log, matched by request id), hence where the service path's time goes
   (gRPC and loopback, spcs's own code, the StorPool calls), a
   no-op RPC (Identity/GetInfo) for the cost of gRPC alone, and the CPU time each process
   (bench client, management, emulator) spent per call on each path;
3. throughput: --concurrency callers creating, then deleting, --per-caller volumes each, on
   each path (in two rounds, the order swapped); operations per second, and CPU time per
   operation of every process;
4. burst: --burst CreateVolume calls in flight at once through the service; errors counted by
   status code, then every volume deleted and StorPool checked for leftovers.

Targets (issue 7): service p50 overhead under 2 ms per call above the direct call; 500
concurrent creates with no error. --check exits 1 when one is missed.

The emulator is a Python process: with many concurrent callers it, not spcs, limits the
throughput of both paths (see its CPU time per operation).

Usage: python bench/controlplane.py [--iterations 500] [--concurrency 32] [--burst 500]
                                    [--quick] [--workdir DIR] [--keep] [--check]
                                    [--management-arg=--max-concurrent-rpcs=1024 ...]
"""

from __future__ import annotations

import abc
import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from spcs import __version__
from spcs.common.settings import SERVER_OPTIONS
from spcs.storpool import names
from spcs.storpool.api import StorPoolApi
from spcs.v1 import (
    driver_pb2,
    driver_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    strategies_pb2,
    strategies_pb2_grpc,
    types_pb2,
)

TEMPLATE = "spcs-bench"
TOKEN = "7235711131719232931"
POOL = "pool-bench"
VOLUME_SIZE = 1 << 30  # thin: nothing is written
START_TIMEOUT = 30.0
OPERATIONS = ("create volume", "take snapshot", "delete snapshot", "delete volume")
RPC_OF = {
    "create volume": "/spcs.v1.PrimaryDataStoreDriver/CreateVolume",
    "take snapshot": "/spcs.v1.PrimaryDataStoreDriver/TakeSnapshot",
    "delete snapshot": "/spcs.v1.SnapshotStrategy/DeleteSnapshot",
    "delete volume": "/spcs.v1.PrimaryDataStoreDriver/DeleteData",
    "no-op (GetInfo)": "/spcs.v1.Identity/GetInfo",
}
NOOP = "no-op (GetInfo)"
OVERHEAD_TARGET_MS = 2.0
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# ---------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (from /proc)."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(name: str, args: list[str], workdir: Path, ready: Callable[[], bool]) -> Proc:
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            [sys.executable, "-m", "spcs.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            cwd=workdir,
            start_new_session=True,
        )
    proc = Proc(name, popen, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if popen.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"{name} did not start; see {log_path}:\n{log_path.read_text()}")
        time.sleep(0.05)
    return proc


@dataclass
class Installation:
    workdir: Path
    emulator: Proc
    management: Proc
    api_port: int
    channel: grpc.Channel

    @property
    def api(self) -> StorPoolApi:
        return StorPoolApi("127.0.0.1", self.api_port, TOKEN)


@contextmanager
def installation(workdir: Path, management_args: Sequence[str] = ()) -> Iterator[Installation]:
    conf = workdir / "storpool.conf"
    emulator = spawn(
        "emulator",
        [
            "emulator",
            "--data",
            str(workdir / "emulator"),
            "--listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--template",
            f"{TEMPLATE}:4T",
            "--write-conf",
            str(conf),
        ],
        workdir,
        conf.exists,
    )
    port_file = workdir / "management.port"
    management = None
    try:
        port = re.search(r"^SP_API_HTTP_PORT=(\d+)$", conf.read_text(), re.M)
        if port is None:
            raise RuntimeError(f"no SP_API_HTTP_PORT in {conf}")
        api_port = int(port[1])
        management = spawn(
            "management",
            [
                "management",
                "--listen",
                "127.0.0.1:0",
                "--port-file",
                str(port_file),
                "--db",
                str(workdir / "management.db"),
                "--log-file",
                str(workdir / "management.log"),
                *management_args,
            ],
            workdir,
            port_file.exists,
        )
        channel = grpc.insecure_channel(f"127.0.0.1:{port_file.read_text().strip()}")
        grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
        lifecycle = lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(channel)
        lifecycle.InitializePool(
            lifecycle_pb2.InitializePoolRequest(
                pool_uuid=POOL,
                name=POOL,
                url=f"SP_API_HTTP=127.0.0.1:{api_port};SP_AUTH_TOKEN={TOKEN};SP_TEMPLATE={TEMPLATE}",
                zone_id="zone-bench",
                capacity_bytes=4 << 40,
            )
        )
        lifecycle.AttachZone(lifecycle_pb2.AttachZoneRequest(pool_uuid=POOL, zone_id="zone-bench"))
        try:
            yield Installation(workdir, emulator, management, api_port, channel)
        finally:
            channel.close()
    finally:
        if management is not None:
            management.stop()
        emulator.stop()


# ---------------------------------------------------------------------------- the two paths


class Route(abc.ABC):
    """One way of doing the four operations; each returns what the next one needs."""

    name = ""

    @abc.abstractmethod
    def create(self, uuid: str, rid: str = "") -> str: ...

    @abc.abstractmethod
    def snapshot(self, uuid: str, volume_path: str, rid: str = "") -> str: ...

    @abc.abstractmethod
    def delete_snapshot(self, path: str, rid: str = "") -> None: ...

    @abc.abstractmethod
    def delete_volume(self, path: str, rid: str = "") -> None: ...


class Direct(Route):
    """StorPool API calls made directly, exactly those the service makes for each operation
    (checked against the emulator's request log by `check_same_calls`)."""

    name = "direct"

    def __init__(self, api: StorPoolApi) -> None:
        self.api = api

    def create(self, uuid: str, rid: str = "") -> str:
        gid = self.api.volume_create(
            name=names.volume_name(uuid),
            size=VOLUME_SIZE,
            template=TEMPLATE,
            tags=names.volume_tags(uuid),
        )
        return names.byid_path(gid)

    def snapshot(self, uuid: str, volume_path: str, rid: str = "") -> str:
        volume = self.api.volume_or_none(names.api_ref(volume_path))
        assert volume is not None
        gid = self.api.snapshot_create(
            volume.ref,
            name=names.snapshot_name(uuid),
            tags={"uuid": uuid, "cs": names.CS_SNAPSHOT},
        )
        return names.byid_path(gid)

    def delete_snapshot(self, path: str, rid: str = "") -> None:
        snap = self.api.snapshot_or_none(names.api_ref(path))
        assert snap is not None
        assert self.api.snapshot_delete(snap.ref)

    def delete_volume(self, path: str, rid: str = "") -> None:
        volume = self.api.volume_or_none(names.api_ref(path))
        assert volume is not None
        assert self.api.volume_delete(volume.ref)


class Service(Route):
    """The same operations as CloudStack's shim makes them: gRPC calls to management."""

    name = "service"
    TIMEOUT = 120.0

    def __init__(self, channel: grpc.Channel) -> None:
        self.driver = driver_pb2_grpc.PrimaryDataStoreDriverStub(channel)
        self.strategy = strategies_pb2_grpc.SnapshotStrategyStub(channel)
        self.identity = identity_pb2_grpc.IdentityStub(channel)
        self.pool = types_pb2.PrimaryStore(pool_uuid=POOL)

    @staticmethod
    def _md(rid: str) -> tuple[tuple[str, str], ...] | None:
        return (("x-request-id", rid),) if rid else None

    def noop(self, rid: str = "") -> str:
        """An RPC that does no StorPool call: what gRPC and the interceptor cost alone."""
        request = identity_pb2.GetInfoRequest()
        return self.identity.GetInfo(request, timeout=self.TIMEOUT, metadata=self._md(rid)).name

    def create_request(self, uuid: str) -> driver_pb2.CreateVolumeRequest:
        return driver_pb2.CreateVolumeRequest(
            pool=self.pool, volume=types_pb2.Volume(uuid=uuid, size_bytes=VOLUME_SIZE)
        )

    def create(self, uuid: str, rid: str = "") -> str:
        request = self.create_request(uuid)
        return self.driver.CreateVolume(request, timeout=self.TIMEOUT, metadata=self._md(rid)).path

    def snapshot(self, uuid: str, volume_path: str, rid: str = "") -> str:
        request = driver_pb2.TakeSnapshotRequest(
            pool=self.pool, snapshot=types_pb2.Snapshot(uuid=uuid, volume_path=volume_path)
        )
        return self.driver.TakeSnapshot(request, timeout=self.TIMEOUT, metadata=self._md(rid)).path

    def delete_snapshot(self, path: str, rid: str = "") -> None:
        request = strategies_pb2.DeleteSnapshotRequest(
            snapshot=types_pb2.Snapshot(path=path), pool=self.pool
        )
        reply = self.strategy.DeleteSnapshot(request, timeout=self.TIMEOUT, metadata=self._md(rid))
        assert reply.deleted

    def delete_volume(self, path: str, rid: str = "") -> None:
        request = driver_pb2.DeleteDataRequest(
            object=types_pb2.DataObject(volume=types_pb2.Volume(path=path)), pool=self.pool
        )
        reply = self.driver.DeleteData(request, timeout=self.TIMEOUT, metadata=self._md(rid))
        assert reply.deleted


# ---------------------------------------------------------------------------- 1. same calls

API_LINE = re.compile(r"spcs\.emulator\.transport: (GET|POST) /ctrl/1\.0/(\S+) -> (\d+)")


def api_calls(log_path: Path, since: int) -> list[str]:
    """The emulator's requests logged after byte `since`, with names and ids generalized."""
    time.sleep(0.2)  # the emulator logs a request after it has answered it
    with log_path.open("rb") as handle:
        handle.seek(since)
        text = handle.read().decode(errors="replace")
    calls = []
    for method, target, status in API_LINE.findall(text):
        target = re.sub(r"~[0-9a-z.]+", "~ID", target)
        target = re.sub(r"cs-(vol|snap)-[\w.:-]+", r"cs-\1-NAME", target)
        calls.append(f"{method} {target} {status}")
    return calls


def check_same_calls(inst: Installation, direct: Direct, service: Service) -> dict[str, list[str]]:
    """Each operation once on each route; the StorPool calls must be the same."""
    seen: dict[str, dict[str, list[str]]] = {operation: {} for operation in OPERATIONS}
    for route in (direct, service):
        uuid = f"calls-{route.name}"

        def traced(operation: str, call: Callable[[], str | None], route: Route = route) -> str:
            since = inst.emulator.log_path.stat().st_size
            result = call()
            seen[operation][route.name] = api_calls(inst.emulator.log_path, since)
            return result or ""

        volume = traced("create volume", lambda r=route, u=uuid: r.create(u))
        snap = traced("take snapshot", lambda r=route, u=uuid, v=volume: r.snapshot(u, v))
        traced("delete snapshot", lambda r=route, s=snap: r.delete_snapshot(s))
        traced("delete volume", lambda r=route, v=volume: r.delete_volume(v))
    calls = {}
    for operation, by_route in seen.items():
        if by_route["direct"] != by_route["service"]:
            raise SystemExit(
                f"the routes make different StorPool calls for {operation}:\n"
                f"  direct:  {by_route['direct']}\n  service: {by_route['service']}"
            )
        calls[operation] = by_route["direct"]
    return calls


# ---------------------------------------------------------------------------- 2. latency


@dataclass
class Latency:
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (path, op) → ms
    handler: dict[str, list[float]] = field(default_factory=dict)  # op → service handler ms
    storpool: dict[str, list[float]] = field(default_factory=dict)  # op → of which StorPool ms
    # route → process → CPU seconds over the measured rounds (the no-op calls not included)
    cpu: dict[str, Counter[str]] = field(default_factory=dict)
    rounds: int = 0

    def add(self, path: str, operation: str, ms: float) -> None:
        self.samples.setdefault((path, operation), []).append(ms)


def one_round(path: Route, tag: str, latency: Latency | None) -> None:
    def timed(operation: str, call: Callable[[], str | None]) -> str | None:
        started = time.perf_counter()
        result = call()
        if latency is not None:
            latency.add(path.name, operation, (time.perf_counter() - started) * 1000)
        return result

    rid = f"bench-{tag}-{path.name}"
    volume = timed("create volume", lambda: path.create(f"lat-{tag}-{path.name}", f"{rid}-cv"))
    assert volume
    snap = timed(
        "take snapshot", lambda: path.snapshot(f"lat-{tag}-{path.name}", volume, f"{rid}-ts")
    )
    assert snap
    timed("delete snapshot", lambda: path.delete_snapshot(snap, f"{rid}-ds"))
    timed("delete volume", lambda: path.delete_volume(volume, f"{rid}-dv"))


RPC_LINE = re.compile(
    r"\[(bench-r\d+-service-(cv|ts|ds|dv|gi))\] rpc=(\S+) key=\S+ status=OK "
    r"ms=([\d.]+) storpool_ms=([\d.]+)"
)
SHORT = {
    "cv": "create volume",
    "ts": "take snapshot",
    "ds": "delete snapshot",
    "dv": "delete volume",
    "gi": NOOP,
}


def handler_times(log_path: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time the service's handler took for each measured call, and the part of it spent in
    StorPool API calls, from its one log line per RPC."""
    handler: dict[str, list[float]] = {}
    storpool: dict[str, list[float]] = {}
    for _, short, rpc, ms, sp_ms in RPC_LINE.findall(log_path.read_text(errors="replace")):
        operation = SHORT[short]
        assert rpc == RPC_OF[operation], (rpc, operation)
        handler.setdefault(operation, []).append(float(ms))
        storpool.setdefault(operation, []).append(float(sp_ms))
    return handler, storpool


def measure_latency(
    inst: Installation, paths: Sequence[Route], warmup: int, rounds: int
) -> Latency:
    latency = Latency()
    for n in range(warmup):
        for path in paths:
            one_round(path, f"w{n}", None)
    for n in range(rounds):
        order = paths if n % 2 == 0 else list(reversed(paths))
        for path in order:
            before = cpu_now(inst)
            one_round(path, f"r{n}", latency)
            after = cpu_now(inst)
            used = latency.cpu.setdefault(path.name, Counter())
            for process, seconds in after.items():
                used[process] += seconds - before[process]
            if isinstance(path, Service):
                before = cpu_now(inst)
                started = time.perf_counter()
                path.noop(f"bench-r{n}-service-gi")
                latency.add(path.name, NOOP, (time.perf_counter() - started) * 1000)
                after = cpu_now(inst)
                used = latency.cpu.setdefault(NOOP, Counter())
                for process, seconds in after.items():
                    used[process] += seconds - before[process]
    latency.rounds = rounds
    time.sleep(0.2)
    latency.handler, latency.storpool = handler_times(inst.management.log_path)
    return latency


# ---------------------------------------------------------------------------- 3. throughput


@dataclass
class Phase:
    operation: str
    path: str
    ops: int
    seconds: float
    errors: Counter[str]
    latencies: list[float]
    cpu: dict[str, float]  # process → CPU seconds during the phase

    @property
    def rate(self) -> float:
        return self.ops / self.seconds


def cpu_now(inst: Installation) -> dict[str, float]:
    own = os.times()
    return {
        "bench client": own.user + own.system,
        "management": inst.management.cpu_seconds(),
        "emulator": inst.emulator.cpu_seconds(),
    }


def run_callers(
    inst: Installation, operation: str, path: str, jobs: list[list[Callable[[], object]]]
) -> Phase:
    """Each list of jobs is one caller's, run in order on its own thread, all started at once."""
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(jobs) + 1)

    def caller(mine: list[Callable[[], object]]) -> None:
        barrier.wait()
        for job in mine:
            started = time.perf_counter()
            try:
                job()
            except grpc.RpcError as error:
                with lock:
                    errors[error.code().name] += 1
                continue
            except Exception as error:
                with lock:
                    errors[type(error).__name__] += 1
                continue
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=caller, args=(mine,)) for mine in jobs]
    for thread in threads:
        thread.start()
    before = cpu_now(inst)
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    after = cpu_now(inst)
    cpu = {name: after[name] - before[name] for name in before}
    ops = sum(len(mine) for mine in jobs)
    return Phase(operation, path, ops, seconds, errors, latencies, cpu)


def measure_throughput(
    inst: Installation, paths: Sequence[Route], callers: int, per_caller: int
) -> list[Phase]:
    """Two rounds, the paths in turn and the order swapped in the second round (the load of a
    shared machine drifts); each round creates per_caller/2 volumes per caller, then deletes
    them. The rounds of one (operation, path) are added up."""
    totals: dict[tuple[str, str], Phase] = {}
    for round_ in range(2):
        count = per_caller // 2 + (per_caller % 2 if round_ == 0 else 0)
        for path in paths if round_ == 0 else list(reversed(paths)):
            created: list[list[str]] = [[] for _ in range(callers)]

            def creator(route: Route, into: list[str], uuid: str) -> Callable[[], object]:
                return lambda: into.append(route.create(uuid))

            jobs = [
                [creator(path, created[c], f"tp{round_}-{path.name}-{c}-{i}") for i in range(count)]
                for c in range(callers)
            ]
            made = run_callers(inst, "create volume", path.name, jobs)
            deletes = [
                [lambda p=path, v=volume: p.delete_volume(v) for volume in mine] for mine in created
            ]
            gone = run_callers(inst, "delete volume", path.name, deletes)
            for phase in (made, gone):
                key = (phase.operation, phase.path)
                if key not in totals:
                    totals[key] = phase
                    continue
                total = totals[key]
                total.ops += phase.ops
                total.seconds += phase.seconds
                total.errors.update(phase.errors)
                total.latencies.extend(phase.latencies)
                for name, seconds in phase.cpu.items():
                    total.cpu[name] += seconds
    order = [(op, path.name) for path in paths for op in ("create volume", "delete volume")]
    return [totals[key] for key in order]


# ---------------------------------------------------------------------------- 4. burst


@dataclass
class Burst:
    count: int
    ok: int
    errors: Counter[str]
    seconds: float
    deleted: int
    delete_errors: Counter[str]
    leftovers: int


def measure_burst(inst: Installation, service: Service, count: int, callers: int) -> Burst:
    """`count` CreateVolume calls in flight at once (futures on one channel, as a client with
    that many concurrent requests sends them), then every created volume deleted."""
    requests = [service.create_request(f"burst-{i}") for i in range(count)]
    started = time.perf_counter()
    futures = [service.driver.CreateVolume.future(r, timeout=Service.TIMEOUT) for r in requests]
    errors: Counter[str] = Counter()
    paths = []
    for future in futures:
        try:
            paths.append(future.result().path)
        except grpc.RpcError as error:
            errors[f"{error.code().name}: {error.details()}"] += 1
    seconds = time.perf_counter() - started
    shares: list[list[Callable[[], object]]] = [[] for _ in range(callers)]
    for i, path in enumerate(paths):
        shares[i % callers].append(lambda v=path: service.delete_volume(v))
    deleted = run_callers(inst, "delete volume", "service", shares)
    leftovers = [v.name for v in inst.api.volumes() if v.name.startswith("cs-vol-burst-")]
    return Burst(
        count,
        len(paths),
        errors,
        seconds,
        len(deleted.latencies),
        deleted.errors,
        len(leftovers),
    )


# ---------------------------------------------------------------------------- report


def _latency_rows(latency: Latency) -> float:
    """One row per operation; returns the largest p50 overhead (ms) of the service path."""
    worst = 0.0
    for operation in OPERATIONS:
        d = latency.samples[("direct", operation)]
        s = latency.samples[("service", operation)]
        d50, d99, s50, s99 = (
            percentile(d, 50),
            percentile(d, 99),
            percentile(s, 50),
            percentile(s, 99),
        )
        h50 = percentile(latency.handler.get(operation, []), 50)
        worst = max(worst, s50 - d50)
        print(
            f"{operation:16s} {d50:10.2f} {d99:7.2f} {s50:11.2f} {s99:7.2f} {s50 - d50:12.2f} "
            f"{s50 / d50:8.2f}x {s99 / d99:8.2f}x {h50:11.2f}"
        )
    return worst


def report(
    args: argparse.Namespace,
    calls: dict[str, list[str]],
    latency: Latency,
    phases: list[Phase],
    burst: Burst,
) -> list[str]:
    """Print the tables; returns the targets missed."""
    missed = []
    print()
    print("StorPool API calls per operation (the same on both paths, from the emulator's log):")
    for operation, seq in calls.items():
        print(f"  {operation:16s} {', '.join(call.rsplit(' ', 1)[0] for call in seq)}")
    print()
    print(
        f"Latency, one caller, {args.iterations} rounds (after {args.warmup} warm-up), "
        "the paths alternating; ms"
    )
    header = (
        f"{'operation':16s} {'direct p50':>10s} {'p99':>7s} {'service p50':>11s} {'p99':>7s} "
        f"{'overhead p50':>12s} {'ratio p50':>9s} {'ratio p99':>9s} {'handler p50':>11s}"
    )
    print(header)
    print("-" * len(header))
    worst = _latency_rows(latency)
    noop = latency.samples[("service", NOOP)]
    print(
        f"{NOOP:16s} {'-':>10s} {'-':>7s} {percentile(noop, 50):11.2f} {percentile(noop, 99):7.2f} "
        f"{'':12s} {'':9s} {'':9s} {percentile(latency.handler.get(NOOP, []), 50):11.2f}"
    )
    print(
        "handler: time inside the service's RPC handler (its log line per call); service minus "
        "handler is gRPC, protobuf,\nthread hand-off and loopback; the no-op row is that cost "
        "for an RPC that makes no StorPool call"
    )
    print()
    print("Where the service path's time goes (p50 of each part, ms):")
    header = (
        f"{'operation':16s} {'gRPC+loopback':>13s} {'spcs code':>9s} {'StorPool calls':>14s} "
        f"{'same calls direct':>17s}"
    )
    print(header)
    print("-" * len(header))
    for operation in OPERATIONS:
        handler = latency.handler.get(operation, [])
        in_storpool = latency.storpool.get(operation, [])
        service = latency.samples[("service", operation)]
        own = [h - sp for h, sp in zip(handler, in_storpool, strict=True)]
        transport = percentile(service, 50) - percentile(handler, 50)
        print(
            f"{operation:16s} {transport:13.2f} {percentile(own, 50):9.2f} "
            f"{percentile(in_storpool, 50):14.2f} "
            f"{percentile(latency.samples[('direct', operation)], 50):17.2f}"
        )
    print(
        "spcs code: handler time minus the time its StorPool API calls took (validation, locks, "
        "names, replies, log);\nStorPool calls: the same API calls as the direct path, made "
        "from the service"
    )
    print()
    print("CPU time per call, one caller (the four operations above on average), ms:")
    print(f"{'route':16s} {'client':>7s} {'mgmt':>7s} {'emulator':>8s} {'total':>7s}")
    totals = {}
    for route in ("direct", "service", NOOP):
        calls = latency.rounds * (1 if route == NOOP else len(OPERATIONS))
        per_op = {k: v * 1000 / calls for k, v in latency.cpu[route].items()}
        totals[route] = sum(per_op.values())
        print(
            f"{route:16s} {per_op['bench client']:7.2f} {per_op['management']:7.2f} "
            f"{per_op['emulator']:8.2f} {totals[route]:7.2f}"
        )
    print(
        f"the service path uses {totals['service'] - totals['direct']:.2f} ms more CPU per call "
        f"than the direct one; an RPC that does nothing costs {totals[NOOP]:.2f} ms (CPU time "
        "varies less with the machine's load than latency does)"
    )
    if worst >= OVERHEAD_TARGET_MS:
        missed.append(f"p50 overhead {worst:.2f} ms >= {OVERHEAD_TARGET_MS} ms")
    print()
    print(
        f"Throughput, {args.concurrency} concurrent callers, {args.per_caller} volumes each "
        "(created, then deleted)"
    )
    header = (
        f"{'operation':16s} {'path':8s} {'ops':>5s} {'ops/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
        f"{'errors':>6s}  CPU ms/op: {'client':>7s} {'mgmt':>7s} {'emulator':>8s}"
    )
    print(header)
    print("-" * len(header))
    for phase in phases:
        per_op = {k: v * 1000 / phase.ops for k, v in phase.cpu.items()}
        print(
            f"{phase.operation:16s} {phase.path:8s} {phase.ops:5d} {phase.rate:8.1f} "
            f"{percentile(phase.latencies, 50):8.2f} {percentile(phase.latencies, 99):8.2f} "
            f"{sum(phase.errors.values()):6d}             {per_op['bench client']:7.2f} "
            f"{per_op['management']:7.2f} {per_op['emulator']:8.2f}"
        )
        if phase.errors:
            print(f"{'':26s}errors: {dict(phase.errors)}")
    by = {(p.operation, p.path): p for p in phases}
    for operation in ("create volume", "delete volume"):
        direct, service = by[(operation, "direct")], by[(operation, "service")]
        print(f"  {operation}: service/direct throughput {service.rate / direct.rate:.2f}x")
    print()
    rate = burst.ok / burst.seconds if burst.seconds else 0.0
    print(
        f"Burst: {burst.count} CreateVolume calls in flight at once through the service: "
        f"{burst.ok} ok, {sum(burst.errors.values())} errors, in {burst.seconds:.2f} s "
        f"({rate:.0f}/s); then {burst.deleted} deleted ({sum(burst.delete_errors.values())} "
        f"errors), {burst.leftovers} left in StorPool"
    )
    for error, n in burst.errors.most_common():
        print(f"  {n} x {error}")
    if burst.errors or burst.delete_errors or burst.leftovers:
        missed.append(f"{burst.count} concurrent creates: {sum(burst.errors.values())} errors")
    print()
    print(
        f"Targets: p50 overhead < {OVERHEAD_TARGET_MS} ms per call: worst {worst:.2f} ms; ", end=""
    )
    print(f"{burst.count} concurrent creates without error: {'yes' if not burst.errors else 'no'}")
    print("MISSED: " + "; ".join(missed) if missed else "All targets met.", flush=True)
    return missed


def environment(management_args: Sequence[str]) -> str:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    defaults = {opt.name: opt.default for opt in SERVER_OPTIONS}
    settings = " ".join(management_args) or (
        f"its default settings ({defaults['workers']} workers, "
        f"{defaults['max_concurrent_rpcs']} concurrent RPCs)"
    )
    return (
        f"spcs {__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {load}; management with {settings}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=500, help="latency rounds (500)")
    parser.add_argument("--warmup", type=int, default=20, help="latency rounds not counted (20)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent callers (32)")
    parser.add_argument("--per-caller", type=int, default=10, help="volumes per caller (10)")
    parser.add_argument("--burst", type=int, default=500, help="creates in flight at once (500)")
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    parser.add_argument("--workdir", type=Path, help="where the emulator and management live")
    parser.add_argument("--keep", action="store_true", help="keep --workdir afterwards")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--management-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `spcs management`, e.g. --management-arg=--workers=32 "
        "(repeatable; default: its default settings)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.warmup, args.per_caller = 40, 5, 3
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="spcs-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"bench/controlplane.py: {environment(args.management_arg)}")
    print(f"command: {' '.join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}", flush=True)
    try:
        with installation(workdir, args.management_arg) as inst:
            direct, service = Direct(inst.api), Service(inst.channel)
            log("checking that both paths make the same StorPool calls ...")
            calls = check_same_calls(inst, direct, service)
            log(f"latency: {args.warmup} + {args.iterations} rounds ...")
            latency = measure_latency(inst, [direct, service], args.warmup, args.iterations)
            log(f"throughput: {args.concurrency} callers x {args.per_caller} volumes ...")
            phases = measure_throughput(inst, [direct, service], args.concurrency, args.per_caller)
            log(f"burst: {args.burst} creates at once ...")
            burst = measure_burst(inst, service, args.burst, args.concurrency)
            missed = report(args, calls, latency, phases, burst)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
