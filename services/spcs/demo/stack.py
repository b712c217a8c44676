"""A whole spcs installation on this machine: the StorPool emulator with N emulated KVM hosts,
the management service and one node service per host, each a real process on loopback.

Used by `spcs up` (fixed ports, foreground), `spcs demo` and the end-to-end tests (free ports).
Every service writes its log under `<workdir>/logs/`.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spcs.emulator import Emulator
from spcs.v1 import hosts_pb2, hosts_pb2_grpc

log = logging.getLogger(__name__)

TEMPLATE = "spcs-demo"
CLUSTER_ID = "emu.a"
# the second zone's StorPool: another location (its cluster id's first part) on the bridge
ZONE2_CLUSTER_ID = "zone2.a"
START_TIMEOUT = 30.0


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Ports:
    """0 = pick a free port."""

    emulator: int = 0
    management: int = 0
    nodes: tuple[int, ...] = ()
    zone2: int = 0  # the second zone's emulator (Stack.second_zone)


@dataclass
class Stack:
    workdir: Path
    hosts: int = 2
    ports: Ports = field(default_factory=Ports)
    template_capacity: int = 256 << 30
    # more StorPool templates (for more pools), name → capacity
    extra_templates: dict[str, int] = field(default_factory=dict)
    management_args: list[str] = field(default_factory=list)
    node_args: list[str] = field(default_factory=list)
    # back the hosts' devices with loop devices (block devices, as on a StorPool host; root)
    loop: bool = False
    # management replicas; more than one needs a shared database (--database-url in
    # management_args), and the nodes register with every one
    replicas: int = 1
    # a second zone: another emulated StorPool location (no hosts) the first one can copy
    # snapshots to, on the same bridge
    second_zone: bool = False
    emulator: Emulator | None = None
    zone2: Emulator | None = None
    management: Process | None = None  # the first replica
    others: list[Process] = field(default_factory=list)  # the other replicas
    nodes: list[Process] = field(default_factory=list)
    # exit codes of the services stopped by the last stop()
    last_exit_codes: dict[str, int | None] = field(default_factory=dict)

    def host_dir(self, n: int) -> Path:
        return self.workdir / f"host{n}"

    def device_root(self, n: int) -> Path:
        return self.host_dir(n) / "dev"

    @property
    def zone2_conf(self) -> Path:
        """The second zone's `storpool.conf` (its API address and token)."""
        return self.workdir / "zone2" / "storpool.conf"

    @property
    def secondary(self) -> Path:
        return self.workdir / "secondary"

    @property
    def managements(self) -> list[Process]:
        """Every management replica running, the first one first."""
        return [*([self.management] if self.management else []), *self.others]

    def start(self) -> Stack:
        if self.replicas > 1 and "--database-url" not in self.management_args:
            raise ValueError("several management replicas need a shared --database-url")
        for directory in ("logs", "secondary"):
            (self.workdir / directory).mkdir(parents=True, exist_ok=True)
        for n in range(1, self.hosts + 1):
            self.device_root(n).mkdir(parents=True, exist_ok=True)
        try:
            self._start_emulator()
            self._start_management()
            for n in range(2, self.replicas + 1):
                self.others.append(self._spawn_management(n))
            for n in range(1, self.hosts + 1):
                self._start_node(n)
            self._wait_registered()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_emulator(self) -> None:
        self.emulator = Emulator(
            self.workdir / "emulator",
            clients={n: self.device_root(n) for n in range(1, self.hosts + 1)},
            cluster_id=CLUSTER_ID,
            templates={TEMPLATE: self.template_capacity, **self.extra_templates},
            loop=self.loop,
        )
        self.emulator.start(port=self.ports.emulator)
        self.emulator.write_conf(self.workdir / "storpool.conf")
        if self.second_zone:
            self.zone2 = Emulator(
                self.workdir / "emulator-zone2",
                cluster_id=ZONE2_CLUSTER_ID,
                templates={TEMPLATE: self.template_capacity},
                bridge=self.emulator.bridge,
            ).start(port=self.ports.zone2)
            self.zone2.write_conf(self.zone2_conf)

    def _spawn(self, name: str, args: list[str], port: int) -> Process:
        port_file = self.workdir / f"{name}.port"
        port_file.unlink(missing_ok=True)
        log_path = self.workdir / "logs" / f"{name}.log"
        argv = [
            sys.executable,
            "-m",
            "spcs.cli",
            *args,
            "--listen",
            f"127.0.0.1:{port}",
            "--port-file",
            str(port_file),
            "--log-file",
            str(log_path),
        ]
        stderr_path = self.workdir / "logs" / f"{name}.stderr"
        with stderr_path.open("wb") as stderr:
            popen = subprocess.Popen(
                argv,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists():
            if popen.poll() is not None:
                error = stderr_path.read_text(errors="replace").strip()
                raise RuntimeError(f"{name} exited at start ({popen.returncode}): {error}")
            if time.monotonic() > deadline:
                popen.kill()
                popen.wait()
                raise RuntimeError(
                    f"{name} did not start within {START_TIMEOUT:.0f}s; see {log_path}"
                )
            time.sleep(0.05)
        process = Process(name, popen, int(port_file.read_text()), log_path)
        _wait_serving(process)
        return process

    def _spawn_management(self, n: int = 1, port: int | None = None) -> Process:
        args = [
            "management",
            "--db",
            str(self.workdir / "management.db"),
            "--storpool-conf",
            str(self.workdir / "storpool.conf"),
            *self.management_args,
        ]
        name = "management" if n == 1 else f"management-{n}"
        return self._spawn(name, args, self.ports.management if port is None else port)

    def _start_management(self) -> None:
        self.management = self._spawn_management()

    def restart_management(self) -> None:
        """Start the management service again after it stopped (or was killed)."""
        self._start_management()

    def restart_replica(self, n: int, port: int = 0) -> Process:
        """Start management replica `n` (2 or more) again, on `port` (0: a free one)."""
        assert n >= 2
        self.others[n - 2] = self._spawn_management(n, port)
        return self.others[n - 2]

    def _start_node(self, n: int) -> None:
        assert self.management is not None
        port = self.ports.nodes[n - 1] if len(self.ports.nodes) >= n else 0
        host = self.host_dir(n)
        args = [
            "node",
            "--host-id",
            f"host-{n}",
            "--device-root",
            str(self.device_root(n)),
            "--management",
            ",".join(p.address for p in self.managements),
            "--storpool-conf",
            str(self.workdir / f"storpool.client-{n}.conf"),
            "--state-dir",
            str(host / "state"),
            "--mount-root",
            str(host / "mnt"),
            "--secondary-store",
            f"file://{self.secondary}",
            *self.node_args,
        ]
        process = self._spawn(f"node{n}", args, port)
        if len(self.nodes) >= n:
            self.nodes[n - 1] = process
        else:
            self.nodes.append(process)

    def restart_node(self, n: int) -> None:
        """Start node `n` (1-based) again after it stopped (or was killed)."""
        self._start_node(n)

    def _wait_registered(self) -> None:
        assert self.management is not None
        wanted = {f"host-{n}" for n in range(1, self.hosts + 1)}
        with grpc.insecure_channel(self.management.address) as channel:
            registry = hosts_pb2_grpc.NodeRegistryStub(channel)
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                nodes = registry.ListNodes(hosts_pb2.ListNodesRequest(), timeout=5).nodes
                if wanted <= {n.host_id for n in nodes if n.healthy}:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError("nodes did not register with management in time")
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM every service (they drain and exit 0), then stop the emulator."""
        processes = [*self.nodes, *self.managements]
        for process in processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.popen.wait(20)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", process.name)
                process.popen.kill()
                process.popen.wait()
        self.last_exit_codes = {p.name: p.popen.returncode for p in processes}
        self.nodes.clear()
        self.management = None
        self.others.clear()
        for emulator in (self.zone2, self.emulator):
            if emulator is not None:
                emulator.stop(release_devices=True)
        self.emulator = self.zone2 = None

    def exit_codes(self) -> dict[str, int | None]:
        return {p.name: p.popen.returncode for p in (*self.nodes, *self.managements)}

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _wait_serving(process: Process) -> None:
    with grpc.insecure_channel(process.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                # types-grpcio-health-checking's HealthStub declares no methods
                reply = health.Check(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(), timeout=2
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"{process.name} is not SERVING; see {process.log_path}")
            time.sleep(0.05)
