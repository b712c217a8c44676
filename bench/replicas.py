#!/usr/bin/env python3
"""Replica benchmark (issue 13): the control plane on 1 management replica with SQLite, 1 with
MariaDB and 3 sharing one MariaDB database, in the same run, on the same emulator.

Starts one `spcs emulator`, a private `mariadbd` on loopback (its own datadir under --workdir,
no system config read) and five `spcs management` processes: one on SQLite, one on the MariaDB
database `spcs_one`, three on `spcs_three`. Each configuration gets its own pool (all on the
same emulator) and one gRPC channel with round robin over its replicas, so consecutive calls
of the 3-replica configuration go to different replicas. Then:

1. latency: one caller, --iterations rounds (after --warmup) of create volume, take snapshot,
   delete snapshot, delete volume (as bench/controlplane.py does), the configurations in turn
   each round (the order rotated, as the load of a shared machine drifts); p50/p99 per
   operation, and from the replicas' logs the handler time less its StorPool calls (spcs's own
   code and its database: where MariaDB's extra time goes);
2. throughput: --concurrency callers each creating, then deleting, --per-caller volumes, on one
   configuration at a time (two rounds, the order reversed in the second); operations per
   second, latency under load, CPU time per operation of each process, and MariaDB's
   statement counters per call.

Targets (issue 13): 3 replicas reach at least the throughput of one (MariaDB); the shared store
adds under 3 ms p50 per mutating call over SQLite. Errors are counted (with their status codes
and messages) and volumes left in StorPool listed. --check exits 1 when a target is missed or
any call failed.

MariaDB runs with its default durability (innodb_flush_log_at_trx_commit=1, a log flush per
commit, as SQLite in WAL mode with synchronous=FULL syncs per commit); change it with e.g.
--mariadb-arg=--innodb-flush-log-at-trx-commit=2.

Usage: python bench/replicas.py [--iterations 200] [--concurrency 32] [--per-caller 20]
                                [--quick] [--workdir DIR] [--keep] [--check]
                                [--management-arg=--workers=32 ...] [--mariadb-arg=... ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spcs.demo import mariadb as private_mariadb
from spcs.storpool.api import StorPoolApi
from spcs.v1 import lifecycle_pb2, lifecycle_pb2_grpc, types_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import controlplane as cp  # bench/ is not a package: its sibling, by path

OVERHEAD_TARGET_MS = 3.0
THROUGHPUT_TARGET = 1.0
MARIADB_USER = "spcs"
# key (in volume names, request ids and pool uuids) → label
CONFIGS = {"sqlite": "1 x SQLite", "mariadb": "1 x MariaDB", "mariadb3": "3 x MariaDB"}
LOG_LINE = re.compile(
    r"\[bench-r\d+-(\w+)-(cv|ts|ds|dv)\] rpc=\S+ key=\S+ status=OK "
    r"ms=([\d.]+) storpool_ms=([\d.]+) db_ms=([\d.]+)"
)
STATUS = ("Questions", "Com_select", "Com_insert", "Com_update", "Com_delete", "Com_commit")
SHORT = {
    "cv": "create volume",
    "ts": "take snapshot",
    "ds": "delete snapshot",
    "dv": "delete volume",
}
RPC_LINE = re.compile(r" rpc=/spcs\.v1\.\S+ key=\S+ status=")


# ---------------------------------------------------------------------------- processes


def stop_all(procs: Sequence[cp.Proc]) -> None:
    """SIGTERM to all at once, then wait for each (killed after 20 s)."""
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.popen.wait(20)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()


@dataclass
class Group:
    """Processes whose CPU time counts as one (the replicas of a configuration)."""

    procs: list[cp.Proc]

    def cpu_seconds(self) -> float:
        return sum(proc.cpu_seconds() for proc in self.procs)


@dataclass
class View:
    """What controlplane.run_callers reads CPU time from."""

    management: Group
    emulator: cp.Proc


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------- MariaDB


@dataclass
class MariaDB:
    proc: cp.Proc
    port: int
    socket: Path
    password_file: Path
    reading: Counter[str] = field(default_factory=Counter)

    def url(self, database: str) -> str:
        return f"mysql+pymysql://{MARIADB_USER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        import pymysql

        with (
            pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True) as conn,
            conn.cursor() as cursor,
        ):
            cursor.execute(sql, args or None)
            return list(cursor.fetchall())

    def counters(self) -> Counter[str]:
        """The server's statement counters (STATUS), less what reading them costs."""
        names = ", ".join(f"'{name}'" for name in STATUS)
        rows = self.execute(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})")
        counts = Counter({str(name): int(str(value)) for name, value in rows})
        counts.subtract(self.reading)
        return counts


def start_mariadb(workdir: Path, extra: Sequence[str], started: list[cp.Proc]) -> MariaDB:
    """A private mariadbd on 127.0.0.1 and a free port (datadir, socket, log in
    workdir/mariadb), the user `spcs` with a random password (in a file) on databases spcs*."""
    home, port = workdir / "mariadb", free_port()
    try:
        started_db = private_mariadb.start(
            home, port, ["--max-connections=500", *extra], own_session=True
        )
    except RuntimeError as error:
        raise SystemExit(str(error)) from None
    started.append(cp.Proc("mariadbd", started_db.popen, started_db.log))
    sock = started_db.socket
    password_file = workdir / "mariadb.password"
    password = secrets.token_hex(12)
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    server = MariaDB(started[-1], port, sock, password_file)
    first = server.counters()
    server.reading = server.counters() - first  # its own statements (and connection's)
    server.execute(f"CREATE USER '{MARIADB_USER}'@'127.0.0.1' IDENTIFIED BY %s", password)
    server.execute(f"GRANT ALL PRIVILEGES ON `spcs%`.* TO '{MARIADB_USER}'@'127.0.0.1'")
    return server


# ---------------------------------------------------------------------------- services


def start_emulator(workdir: Path) -> tuple[cp.Proc, int]:
    conf = workdir / "storpool.conf"
    args = ["emulator", "--data", str(workdir / "emulator"), "--listen", "127.0.0.1:0"]
    args += ["--token", cp.TOKEN, "--template", f"{cp.TEMPLATE}:16T", "--write-conf", str(conf)]
    emulator = cp.spawn("emulator", args, workdir, conf.exists)
    port = re.search(r"^SP_API_HTTP_PORT=(\d+)$", conf.read_text(), re.M)
    if port is None:
        emulator.stop()
        raise RuntimeError(f"no SP_API_HTTP_PORT in {conf}")
    return emulator, int(port[1])


def wait_serving(proc: cp.Proc, port: int) -> None:
    """Until the replica's gRPC health service says SERVING."""
    deadline = time.monotonic() + cp.START_TIMEOUT
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            with suppress(grpc.RpcError):
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{proc.name} is not SERVING; {proc.log_path}:\n{tail(proc.log_path)}"
                )
            time.sleep(0.05)


def start_replica(
    workdir: Path, name: str, database: list[str], extra: Sequence[str], started: list[cp.Proc]
) -> int:
    port_file = workdir / f"{name}.port"
    args = ["management", "--listen", "127.0.0.1:0", "--port-file", str(port_file)]
    args += [*database, "--log-file", str(workdir / f"{name}.log"), *extra]
    proc = cp.spawn(name, args, workdir, port_file.exists)
    started.append(proc)
    port = int(port_file.read_text().strip())
    wait_serving(proc, port)
    return port


class Counted(cp.Service):
    """controlplane's service route on a configuration's own pool, counting failed calls by
    phase, status code and message."""

    def __init__(self, key: str, channel: grpc.Channel) -> None:
        super().__init__(channel)
        self.name = key
        self.pool = types_pb2.PrimaryStore(pool_uuid=f"pool-{key}")
        self.phase = "latency"
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _counted(self, call: Callable[[], str | None]) -> str | None:
        try:
            return call()
        except grpc.RpcError as error:
            message = re.sub(r"\b(lat|tp\d)-[\w.:-]+", "<uuid>", error.details() or "")
            message = re.sub(r"\bbench-[\w-]+", "<request id>", message)
            with self._lock:
                self.errors[f"{self.phase}: {error.code().name}: {message}"] += 1
            raise

    def create(self, uuid: str, rid: str = "") -> str:
        return self._counted(lambda: cp.Service.create(self, uuid, rid)) or ""

    def snapshot(self, uuid: str, volume_path: str, rid: str = "") -> str:
        return self._counted(lambda: cp.Service.snapshot(self, uuid, volume_path, rid)) or ""

    def delete_snapshot(self, path: str, rid: str = "") -> None:
        self._counted(lambda: cp.Service.delete_snapshot(self, path, rid))

    def delete_volume(self, path: str, rid: str = "") -> None:
        self._counted(lambda: cp.Service.delete_volume(self, path, rid))


@dataclass
class Config:
    """One configuration: its replicas, one round-robin channel over them, its own pool."""

    key: str
    replicas: list[cp.Proc]
    channel: grpc.Channel
    service: Counted
    view: View
    mariadb: MariaDB | None
    statements: dict[str, Counter[str]] = field(default_factory=dict)  # operation → counts

    @property
    def label(self) -> str:
        return CONFIGS[self.key]

    def mariadb_cpu(self) -> float:
        return self.mariadb.proc.cpu_seconds() if self.mariadb is not None else 0.0


def round_robin(ports: Sequence[int]) -> grpc.Channel:
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
    channel = grpc.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")])
    grpc.channel_ready_future(channel).result(timeout=cp.START_TIMEOUT)
    return channel


def add_pool(channel: grpc.Channel, pool: str, api_port: int) -> None:
    lifecycle = lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(channel)
    url = f"SP_API_HTTP=127.0.0.1:{api_port};SP_AUTH_TOKEN={cp.TOKEN};SP_TEMPLATE={cp.TEMPLATE}"
    lifecycle.InitializePool(
        lifecycle_pb2.InitializePoolRequest(
            pool_uuid=pool, name=pool, url=url, zone_id="zone-bench", capacity_bytes=4 << 40
        ),
        timeout=60,
    )
    request = lifecycle_pb2.AttachZoneRequest(pool_uuid=pool, zone_id="zone-bench")
    lifecycle.AttachZone(request, timeout=60)


@dataclass
class Stack:
    emulator: cp.Proc
    api_port: int
    mariadb: MariaDB
    managements: list[cp.Proc]  # every replica started, in order
    configs: list[Config] = field(default_factory=list)

    @property
    def api(self) -> StorPoolApi:
        return StorPoolApi("127.0.0.1", self.api_port, cp.TOKEN)


def start_config(
    stack: Stack, key: str, count: int, database: list[str], args: argparse.Namespace
) -> None:
    """`count` replicas on `database`, one after the other (the first creates the schema), a
    round-robin channel over them and a pool added through it."""
    ports = []
    for n in range(count):
        name = f"management-{key}-{n + 1}" if count > 1 else f"management-{key}"
        cp.log(f"starting {name} ...")
        extra = args.management_arg
        ports.append(start_replica(args.workdir, name, database, extra, stack.managements))
    replicas = stack.managements[-count:]
    channel = round_robin(ports)
    mariadb = None if key == "sqlite" else stack.mariadb
    view = View(Group(replicas), stack.emulator)
    config = Config(key, replicas, channel, Counted(key, channel), view, mariadb)
    stack.configs.append(config)
    add_pool(channel, config.service.pool.pool_uuid, stack.api_port)


def start_stack(
    args: argparse.Namespace, backends: list[cp.Proc], managements: list[cp.Proc]
) -> Stack:
    """The emulator, mariadbd and the three configurations; every process is appended to
    `backends` or `managements` as soon as it runs, so that the caller stops them whatever
    fails."""
    workdir: Path = args.workdir
    cp.log("starting the emulator and mariadbd ...")
    emulator, api_port = start_emulator(workdir)
    backends.append(emulator)
    mariadb = start_mariadb(workdir, args.mariadb_arg, backends)
    for database in ("spcs_one", "spcs_three"):
        mariadb.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    stack = Stack(emulator, api_port, mariadb, managements)
    password = ["--database-password-file", str(mariadb.password_file)]
    plans = {
        "sqlite": (1, ["--db", str(workdir / "management-sqlite.db")]),
        "mariadb": (1, ["--database-url", mariadb.url("spcs_one"), *password]),
        "mariadb3": (3, ["--database-url", mariadb.url("spcs_three"), *password]),
    }
    for key, (count, database) in plans.items():
        start_config(stack, key, count, database, args)
    return stack


# ---------------------------------------------------------------------------- 1. latency


def measure_latency(
    configs: Sequence[Config], warmup: int, rounds: int
) -> tuple[cp.Latency, Counter[str]]:
    """One caller; each round the four operations on every configuration in turn, the order
    rotated round by round. Returns the samples and the rounds that failed per configuration."""
    latency = cp.Latency()
    failed: Counter[str] = Counter()
    configs = list(configs)
    for n in range(warmup + rounds):
        measured = n >= warmup
        tag = f"r{n - warmup}" if measured else f"w{n}"
        shift = n % len(configs)
        for config in configs[shift:] + configs[:shift]:
            try:
                cp.one_round(config.service, tag, latency if measured else None)
            except Exception as error:
                failed[config.key] += 1
                if not isinstance(error, grpc.RpcError):
                    config.service.errors[f"latency: {type(error).__name__}: {error}"] += 1
    latency.rounds = rounds
    return latency, failed


def own_times(configs: Sequence[Config]) -> dict[tuple[str, str, str], list[float]]:
    """(config, operation, "own" or "db") → of each measured call, the handler's time less its
    StorPool calls, and its state database's part of that (ms), from the replicas' one log
    line per RPC."""
    time.sleep(0.2)
    own: dict[tuple[str, str, str], list[float]] = {}
    for config in configs:
        for proc in config.replicas:
            text = proc.log_path.read_text(errors="replace")
            for key, short, ms, storpool_ms, db_ms in LOG_LINE.findall(text):
                own.setdefault((key, SHORT[short], "own"), []).append(
                    float(ms) - float(storpool_ms)
                )
                own.setdefault((key, SHORT[short], "db"), []).append(float(db_ms))
    return own


def served(config: Config) -> list[int]:
    """RPCs each replica logged (the pool's, the latency and throughput calls)."""
    return [len(RPC_LINE.findall(p.log_path.read_text(errors="replace"))) for p in config.replicas]


# ---------------------------------------------------------------------------- 2. throughput


def timed_phase(config: Config, operation: str, jobs: list[list[Callable[[], object]]]) -> cp.Phase:
    before = config.mariadb_cpu()
    counted = config.mariadb.counters() if config.mariadb is not None else Counter()
    phase = cp.run_callers(config.view, operation, config.key, jobs)
    phase.cpu["mariadb"] = config.mariadb_cpu() - before
    if config.mariadb is not None:
        config.statements.setdefault(operation, Counter()).update(
            config.mariadb.counters() - counted
        )
    return phase


def create_then_delete(config: Config, round_: int, callers: int, count: int) -> list[cp.Phase]:
    service = config.service
    created: list[list[str]] = [[] for _ in range(callers)]

    def creator(into: list[str], uuid: str) -> Callable[[], object]:
        return lambda: into.append(service.create(uuid))

    jobs = [
        [creator(created[c], f"tp{round_}-{config.key}-{c}-{i}") for i in range(count)]
        for c in range(callers)
    ]
    service.phase = "throughput create"
    made = timed_phase(config, "create volume", jobs)
    deletes: list[list[Callable[[], object]]] = [
        [lambda v=volume: service.delete_volume(v) for volume in mine] for mine in created
    ]
    service.phase = "throughput delete"
    gone = timed_phase(config, "delete volume", deletes)
    return [made, gone]


def merge(totals: dict[str, cp.Phase], phase: cp.Phase) -> None:
    if phase.operation not in totals:
        totals[phase.operation] = phase
        return
    total = totals[phase.operation]
    total.ops += phase.ops
    total.seconds += phase.seconds
    total.errors.update(phase.errors)
    total.latencies.extend(phase.latencies)
    for name, seconds in phase.cpu.items():
        total.cpu[name] += seconds


def measure_throughput(
    configs: Sequence[Config], callers: int, per_caller: int
) -> dict[str, dict[str, cp.Phase]]:
    """config → operation → phase. Two rounds, one configuration at a time, the order reversed
    in the second; each round creates per_caller/2 volumes per caller, then deletes them.
    Before them, a round of one volume per caller, not counted: a replica opens its database
    connections on first use, as many as calls run at once, and keeps them."""
    totals: dict[str, dict[str, cp.Phase]] = {config.key: {} for config in configs}
    for config in configs:
        create_then_delete(config, 9, callers, 1)
    for round_ in range(2):
        count = per_caller // 2 + (per_caller % 2 if round_ == 0 else 0)
        for config in configs if round_ == 0 else list(reversed(configs)):
            for phase in create_then_delete(config, round_, callers, count):
                merge(totals[config.key], phase)
    return totals


def combined_rate(phases: dict[str, cp.Phase]) -> float:
    """Operations per second over the create and the delete phases together."""
    seconds = sum(p.seconds for p in phases.values())
    return sum(p.ops for p in phases.values()) / seconds if seconds else 0.0


# ---------------------------------------------------------------------------- report


@dataclass
class Results:
    latency: cp.Latency
    failed_rounds: Counter[str]
    own: dict[tuple[str, str, str], list[float]]
    throughput: dict[str, dict[str, cp.Phase]]
    served: dict[str, list[int]]
    leftovers: list[str]


def p50(values: Sequence[float]) -> float:
    return cp.percentile(values, 50)


def report_latency(
    args: argparse.Namespace, configs: Sequence[Config], res: Results
) -> tuple[float, str]:
    """The latency tables; returns the largest MariaDB-over-SQLite p50 and its operation."""
    print(
        f"Latency, one caller, {args.iterations} rounds (after {args.warmup} warm-up), the "
        "configurations in turn each round; ms"
    )
    header = f"{'operation':16s}" + "".join(
        f" {c.label + ' p50':>16s} {'p99':>7s}" for c in configs
    )
    header += f" {'MariaDB-SQLite p50':>19s}"
    print(header)
    print("-" * len(header))
    worst = (float("-inf"), "")
    for operation in cp.OPERATIONS:
        row = f"{operation:16s}"
        for config in configs:
            samples = res.latency.samples.get((config.key, operation), [])
            row += f" {p50(samples):16.2f} {cp.percentile(samples, 99):7.2f}"
        overhead = p50(res.latency.samples.get(("mariadb", operation), [])) - p50(
            res.latency.samples.get(("sqlite", operation), [])
        )
        worst = max(worst, (overhead, operation))
        print(f"{row} {overhead:19.2f}")
    print()
    print(
        "spcs's own time per call: the handler's time less its StorPool API calls, and of that "
        "the state database's\n(its transactions, from taking a connection to the answer), "
        "p50 ms from the replicas' logs"
    )
    header = f"{'operation':16s}" + "".join(
        f" {c.label + ' ' + part:>16s}" for c in configs for part in ("own", "db")
    )
    header += f" {'MariaDB-SQLite own':>19s}"
    print(header)
    print("-" * len(header))
    for operation in cp.OPERATIONS:
        own = {
            (c.key, part): p50(res.own.get((c.key, operation, part), []))
            for c in configs
            for part in ("own", "db")
        }
        cells = "".join(f" {own[c.key, part]:16.2f}" for c in configs for part in ("own", "db"))
        difference = own["mariadb", "own"] - own["sqlite", "own"]
        print(f"{operation:16s}{cells} {difference:19.2f}")
    for config in configs:
        if len(config.replicas) > 1:
            counts = ", ".join(str(n) for n in res.served[config.key])
            print(f"RPCs served by each replica of {config.label} (from their logs): {counts}")
    return worst


def report_throughput(args: argparse.Namespace, configs: Sequence[Config], res: Results) -> None:
    print(
        f"Throughput, {args.concurrency} concurrent callers, {args.per_caller} volumes each "
        "(created, then deleted), one configuration at a time"
    )
    header = (
        f"{'configuration':13s} {'operation':14s} {'ops':>5s} {'ops/s':>7s} {'p50 ms':>7s} "
        f"{'p99 ms':>7s} {'errors':>6s}  CPU ms/op: {'client':>6s} {'mgmt':>6s} "
        f"{'mariadb':>7s} {'emulator':>8s}"
    )
    print(header)
    print("-" * len(header))
    for config in configs:
        phases = res.throughput[config.key]
        for phase in phases.values():
            cpu = {k: v * 1000 / phase.ops if phase.ops else 0.0 for k, v in phase.cpu.items()}
            print(
                f"{config.label:13s} {phase.operation:14s} {phase.ops:5d} {phase.rate:7.1f} "
                f"{p50(phase.latencies):7.2f} {cp.percentile(phase.latencies, 99):7.2f} "
                f"{sum(phase.errors.values()):6d}             {cpu['bench client']:6.2f} "
                f"{cpu['management']:6.2f} {cpu['mariadb']:7.2f} {cpu['emulator']:8.2f}"
            )
        ops = sum(p.ops for p in phases.values())
        print(f"{config.label:13s} {'both':14s} {ops:5d} {combined_rate(phases):7.1f}")
    print(
        f"(mgmt: all the configuration's replicas together; {os.cpu_count()} CPUs for the "
        "bench client, the replicas, mariadbd and the emulator)"
    )
    report_statements(configs, res)


def report_statements(configs: Sequence[Config], res: Results) -> None:
    """MariaDB statements per call during the throughput phases (server-wide counters, so the
    idle replicas' background work is in them too)."""
    print()
    print("MariaDB statements per call during the throughput phases (server counters):")
    header = f"{'configuration':13s} {'operation':14s}" + "".join(
        f" {name.removeprefix('Com_'):>9s}" for name in STATUS
    )
    print(header)
    print("-" * len(header))
    for config in configs:
        for operation, counts in config.statements.items():
            ops = res.throughput[config.key][operation].ops or 1
            cells = "".join(f" {counts[name] / ops:9.1f}" for name in STATUS)
            print(f"{config.label:13s} {operation:14s}{cells}")


def report_errors(configs: Sequence[Config], res: Results) -> int:
    """Failed calls (status code and message) and volumes left behind; returns how many."""
    total = 0
    for config in configs:
        phase_errors = sum(sum(p.errors.values()) for p in res.throughput[config.key].values())
        failed = res.failed_rounds[config.key] + phase_errors
        total += failed
        if not failed:
            continue
        print(
            f"{config.label}: {res.failed_rounds[config.key]} latency rounds failed, "
            f"{phase_errors} throughput calls failed:"
        )
        for message, n in config.service.errors.most_common(12):
            print(f"  {n} x {message}")
    if res.leftovers:
        shown = ", ".join(res.leftovers[:5]) + (" ..." if len(res.leftovers) > 5 else "")
        print(f"{len(res.leftovers)} volumes/snapshots left in StorPool: {shown}")
    if not total and not res.leftovers:
        print("Errors: none (every call succeeded, nothing left in StorPool)")
    return total + len(res.leftovers)


def report(args: argparse.Namespace, configs: Sequence[Config], res: Results) -> list[str]:
    """Print the tables; returns the targets missed."""
    print()
    overhead, operation = report_latency(args, configs, res)
    print()
    report_throughput(args, configs, res)
    print()
    errors = report_errors(configs, res)
    rate = {c.key: combined_rate(res.throughput[c.key]) for c in configs}
    vs_mariadb = rate["mariadb3"] / rate["mariadb"] if rate["mariadb"] else 0.0
    vs_sqlite = rate["mariadb3"] / rate["sqlite"] if rate["sqlite"] else 0.0
    missed = []
    if not overhead < OVERHEAD_TARGET_MS:
        missed.append(f"MariaDB p50 overhead {overhead:.2f} ms >= {OVERHEAD_TARGET_MS} ms")
    if not vs_mariadb >= THROUGHPUT_TARGET:
        missed.append(f"3 replicas reach {vs_mariadb:.2f}x the throughput of one")
    if errors:
        missed.append(f"{errors} errors")
    print()
    print("Targets:")
    print(
        f"  MariaDB p50 overhead over SQLite per mutating call (max of the four operations): "
        f"{overhead:.2f} ms ({operation}); target < {OVERHEAD_TARGET_MS:.0f} ms"
    )
    print(
        f"  3 replicas throughput / 1 replica (MariaDB) throughput: {vs_mariadb:.2f}x "
        f"({rate['mariadb3']:.1f} / {rate['mariadb']:.1f} ops/s); target >= {THROUGHPUT_TARGET}"
    )
    print(
        f"  3 replicas throughput / 1 replica (SQLite) throughput: {vs_sqlite:.2f}x "
        f"({rate['mariadb3']:.1f} / {rate['sqlite']:.1f} ops/s; for information)"
    )
    print("MISSED: " + "; ".join(missed) if missed else "All targets met.", flush=True)
    return missed


# ---------------------------------------------------------------------------- main


def machine(args: argparse.Namespace) -> list[str]:
    mariadbd = private_mariadb.binary("mariadbd")
    version = "not installed"
    if mariadbd is not None:
        run = subprocess.run([mariadbd, "--version"], capture_output=True, text=True, timeout=30)
        version = run.stdout.strip() or run.stderr.strip()
    durability = " ".join(args.mariadb_arg) or "its default settings (a log flush per commit)"
    return [
        f"bench/replicas.py: {cp.environment(args.management_arg)}",
        f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs",
        f"MariaDB: {version}; with {durability}",
        "one emulator for the three configurations (a pool each), one mariadbd (databases "
        "spcs_one, spcs_three); every process started once, all running throughout",
    ]


def measure(args: argparse.Namespace, stack: Stack) -> Results:
    configs = stack.configs
    cp.log(f"latency: {args.warmup} + {args.iterations} rounds x {len(configs)} configurations ...")
    latency, failed = measure_latency(configs, args.warmup, args.iterations)
    own = own_times(configs)
    cp.log(f"throughput: {args.concurrency} callers x {args.per_caller} volumes ...")
    throughput = measure_throughput(configs, args.concurrency, args.per_caller)
    keys = "|".join(CONFIGS)
    ours = re.compile(rf"^cs-(vol|snap)-(lat|tp\d)-.*\b({keys})\b")
    leftovers = [v.name for v in stack.api.volumes() if ours.match(v.name)]
    leftovers += [s.name for s in stack.api.snapshots() if ours.match(s.name)]
    return Results(latency, failed, own, throughput, {c.key: served(c) for c in configs}, leftovers)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200, help="latency rounds (200)")
    parser.add_argument("--warmup", type=int, default=10, help="latency rounds not counted (10)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent callers (32)")
    parser.add_argument("--per-caller", type=int, default=20, help="volumes per caller (20)")
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    parser.add_argument("--workdir", type=Path, help="where the processes live (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep --workdir afterwards")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--management-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every `spcs management`, e.g. --management-arg=--workers=32",
    )
    parser.add_argument(
        "--mariadb-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for mariadbd, e.g. --mariadb-arg=--innodb-flush-log-at-trx-commit=2",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.warmup, args.per_caller = 30, 3, 5
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        raise SystemExit(f"--workdir {args.workdir} is not empty")
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="spcs-bench-replicas-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    # SIGTERM as Ctrl-C: unwind, so that every process started is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    for line in machine(args):
        print(line)
    print(f"command: {' '.join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}", flush=True)
    backends: list[cp.Proc] = []
    managements: list[cp.Proc] = []
    stack = None
    try:
        stack = start_stack(args, backends, managements)
        missed = report(args, stack.configs, measure(args, stack))
    finally:
        for config in stack.configs if stack is not None else []:
            config.channel.close()
        stop_all(managements)
        stop_all(backends)
        if args.keep:
            cp.log(f"kept {args.workdir}")
        else:
            shutil.rmtree(args.workdir, ignore_errors=True)
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        cp.log("interrupted; every process started was stopped")
        sys.exit(130)
