"""The one way tests start spcs: every suite's fixtures are thin wrappers over this module.

- `stack()`: the whole installation (the StorPool emulator with emulated KVM hosts, management,
  one node per host), each service a real process on loopback. It is the demo's `Stack`
  (spcs.demo.stack, what `spcs up` and `spcs demo` run), with the suite's shorter retry windows.
- `node_stack()`: the emulator in this process and one `spcs node` process for host 1, started
  when the test asks (`NodeStack.start_node`), with no management service.
- `start_service()`, `start_management()`, `start_node()`: one spcs process, alone, with the
  arguments a test gives (`Service`).
- `server_settings()`, `serving()`: a spcs gRPC `Server` in this process, for the in-process tier.
- `mariadb_server()`: a private MariaDB server on loopback (the `mariadb` session fixture of
  tests/conftest.py), for the state store on a shared database.

The StorPool emulator alone is `spcs.emulator.Emulator` itself (a context manager that starts it
in a thread and stops it, releasing its devices).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc

from spcs.common.authz import Policy
from spcs.common.server import Binding, Server
from spcs.common.settings import ServerSettings
from spcs.demo import mariadb
from spcs.demo.stack import TEMPLATE, Stack
from spcs.emulator import Emulator, devices
from spcs.storpool.api import StorPoolApi
from spcs.v1 import node_pb2_grpc, types_pb2
from tests.support import SPCS, log_containing

__all__ = [
    "MANAGEMENT_ARGS",
    "NODE_ARGS",
    "TEMPLATE",
    "MariaDB",
    "NodeStack",
    "Service",
    "Stack",
    "mariadb_installed",
    "mariadb_server",
    "node_stack",
    "server_settings",
    "serving",
    "stack",
    "start_management",
    "start_node",
    "start_service",
    "storpool_api",
]


# ---- one spcs process ----------------------------------------------------------------------------


@dataclass
class Service:
    """A spcs server process started by a test."""

    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_with(self, text: str) -> str:
        return log_containing(self.log_path, text)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def terminate(self, timeout: float = 15) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


def start_service(
    args: list[str],
    workdir: Path,
    name: str,
    env: dict[str, str] | None = None,
    timeout: float = 20,
    listen: str = "127.0.0.1:0",
) -> Service:
    """Start `spcs <args> --listen <listen>` (a free loopback port unless told) and wait until
    it has bound its port."""
    port_file = workdir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    log_path = workdir / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            [*SPCS, *args, "--listen", listen, "--port-file", str(port_file)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=workdir,
        )
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if popen.poll() is not None:
            raise AssertionError(f"{name} exited with {popen.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            popen.kill()
            raise AssertionError(f"{name} did not start in {timeout}s:\n{log_path.read_text()}")
        time.sleep(0.05)
    return Service(popen, int(port_file.read_text()), log_path)


# StorPool's identity for a node with no StorPool behind it (nothing it serves reaches StorPool)
LONE_NODE_ENV = {"SP_OURID": "7", "SP_AUTH_TOKEN": "test-token", "SP_CLUSTER_ID": "emu.a"}


def start_management(
    workdir: Path, services: list[Service] | None = None, listen: str = "127.0.0.1:0"
) -> Service:
    """`spcs management` alone, its database in `workdir`; added to `services` (the fixture that
    stops them) when given. `listen`: to start one again on the port it had."""
    service = start_service(
        ["management", "--db", str(workdir / "m.db")], workdir, "mgmt", listen=listen
    )
    if services is not None:
        services.append(service)
    return service


def lone_node_args(workdir: Path, host_id: str = "host-1") -> list[str]:
    (workdir / "dev").mkdir(exist_ok=True)
    return [
        "node",
        "--host-id",
        host_id,
        "--device-root",
        str(workdir / "dev"),
        "--state-dir",
        str(workdir / "state"),
        "--mount-root",
        str(workdir / "mnt"),
    ]


def start_node(workdir: Path, services: list[Service] | None = None) -> Service:
    """`spcs node` alone (no management, no StorPool), its state in `workdir`."""
    service = start_service(lone_node_args(workdir), workdir, "node", env=LONE_NODE_ENV)
    if services is not None:
        services.append(service)
    return service


# ---- a gRPC server in this process ---------------------------------------------------------------


def server_settings(**overrides) -> ServerSettings:
    """Settings for a `Server` in this process: loopback, a free port, no log file, no TLS."""
    values = dict(
        listen=("127.0.0.1", 0),
        log_file=None,
        log_level="INFO",
        log_format="text",
        metrics_listen=None,
        tls_cert=None,
        tls_key=None,
        tls_ca=None,
        tls_client_auth=False,
        workers=4,
        max_concurrent_rpcs=16,
        grace_seconds=10.0,
    )
    values.update(overrides)
    return ServerSettings(**values)


@contextmanager
def serving(
    name: str,
    bindings: Sequence[Binding],
    policy: Policy | None = None,
    settings: ServerSettings | None = None,
) -> Iterator[str]:
    """A `Server` with `bindings` started in this process; yields its address, stops it after."""
    server = Server(name, settings or server_settings(), bindings, policy)
    port = server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


# ---- the whole installation ----------------------------------------------------------------------

# The suite's defaults, before a test's own arguments (so a test's arguments override them):
# retry windows short enough that a test of an outage finishes in seconds.
MANAGEMENT_ARGS = ("--storpool-retry-seconds", "5", "--node-retry-seconds", "3")
# (LUKS key slots at 10 ms: the tests write many headers; the default is 2 s)
NODE_ARGS = (
    "--storpool-retry-seconds",
    "5",
    "--detach-attempts",
    "2",
    "--luks-iter-time-ms",
    "10",
)


def storpool_api(emulator: Emulator) -> StorPoolApi:
    """spcs's StorPool client for the emulator (as the services reach it)."""
    return StorPoolApi(emulator.host, emulator.port, emulator.token)


@contextmanager
def stack(
    workdir: Path,
    *,
    hosts: int = 2,
    extra_templates: dict[str, int] | None = None,
    management_args: Sequence[str] = (),
    node_args: Sequence[str] = (),
    loop: bool = False,
    test_defaults: bool = True,
    replicas: int = 1,
) -> Iterator[Stack]:
    """The demo's `Stack` in `workdir`: the emulator with `hosts` KVM hosts, management and a
    node per host, all SERVING and the nodes registered; stopped (SIGTERM, then the emulator) at
    exit. `extra_templates` are StorPool templates beside `TEMPLATE` (name → capacity). With
    `test_defaults` MANAGEMENT_ARGS and NODE_ARGS come before the test's own arguments; without,
    the services run on the settings `spcs demo` uses. With `loop` the hosts' StorPool devices
    are loop devices (needs root; skips the test where they are not usable). `replicas`:
    management replicas (more than one needs --database-url in `management_args`)."""
    if loop and not devices.loop_supported()[0]:
        pytest.skip(f"loop devices are not usable here: {devices.loop_supported()[1]}")
    running = Stack(
        workdir,
        hosts=hosts,
        extra_templates=dict(extra_templates or {}),
        management_args=[*(MANAGEMENT_ARGS if test_defaults else ()), *management_args],
        node_args=[*(NODE_ARGS if test_defaults else ()), *node_args],
        loop=loop,
        replicas=replicas,
    )
    running.start()
    assert running.emulator is not None and running.management is not None
    try:
        yield running
    finally:
        running.stop()


# ---- the emulator and one node -------------------------------------------------------------------

NODE_TOKEN = "1234567890123456789"
NODE_TEMPLATE = "hybrid"


@dataclass
class NodeStack:
    """The emulator (in this process) with two client hosts; `start_node` starts `spcs node` for
    host 1 against it."""

    tmp: Path
    emu: Emulator
    api: StorPoolApi
    root: Path
    secondary: Path
    node: Service | None = None
    extra_args: list[str] = field(default_factory=list)
    channel: grpc.Channel | None = None

    @property
    def url(self) -> str:
        return f"file://{self.secondary}"

    def env(self) -> dict[str, str]:
        return {
            "SP_API_HTTP_HOST": self.emu.host,
            "SP_API_HTTP_PORT": str(self.emu.port),
            "SP_AUTH_TOKEN": NODE_TOKEN,
            "SP_OURID": "1",
            "SP_CLUSTER_ID": self.emu.cluster_id,
        }

    def start_node(self, *extra: str) -> Service:
        args = [
            "node",
            "--host-id",
            "host-1",
            "--device-root",
            str(self.root),
            "--state-dir",
            str(self.tmp / "state"),
            "--mount-root",
            str(self.tmp / "mnt"),
            "--secondary-store",
            self.url,
            "--device-wait-seconds",
            "5",
            "--detach-attempts",
            "3",
            "--storpool-retry-seconds",
            "5",
            *self.extra_args,
            *extra,
        ]
        self.node = start_service(args, self.tmp, "node", env=self.env())
        if self.channel is not None:
            self.channel.close()
        self.channel = self.node.channel()
        return self.node

    @property
    def adaptor(self) -> node_pb2_grpc.StorageAdaptorStub:
        return node_pb2_grpc.StorageAdaptorStub(self.channel)

    @property
    def commands(self) -> node_pb2_grpc.AgentCommandsStub:
        return node_pb2_grpc.AgentCommandsStub(self.channel)

    @property
    def operations(self) -> operations_pb2_grpc.OperationsStub:
        return operations_pb2_grpc.OperationsStub(self.channel)

    def wait(self, name: str, timeout: float = 120) -> operations_pb2.Operation:
        deadline = time.monotonic() + timeout
        while True:
            op = self.operations.WaitOperation(operations_pb2.WaitOperationRequest(name=name))
            if op.done:
                return op
            assert time.monotonic() < deadline, f"{name} did not finish in {timeout}s"

    def metadata(self, name: str) -> types_pb2.OperationMetadata:
        meta = types_pb2.OperationMetadata()
        self.operations.GetOperation(operations_pb2.GetOperationRequest(name=name)).metadata.Unpack(
            meta
        )
        return meta

    def volume(self, name: str, size: int) -> str:
        """A StorPool volume; returns its CloudStack path."""
        gid = self.api.volume_create(name=name, size=size, template=NODE_TEMPLATE)
        return f"/dev/storpool-byid/{gid}"

    def device(self, path: str) -> Path:
        return self.root / "storpool-byid" / path.rsplit("/", 1)[1]

    def attachments(self) -> list[tuple[str, int, str]]:
        return sorted((a.global_id, a.client, a.rights) for a in self.api.attachments())


@contextmanager
def node_stack(tmp: Path) -> Iterator[NodeStack]:
    """A `NodeStack` in `tmp` (no node started yet); at exit the node is stopped (if it still
    runs) and the emulator with it."""
    roots = {1: tmp / "host1", 2: tmp / "host2"}
    for root in roots.values():
        root.mkdir()
    (tmp / "secondary").mkdir()
    emu = Emulator(
        tmp / "emu",
        token=NODE_TOKEN,
        clients=roots,
        cluster_id="emu.a",
        templates={NODE_TEMPLATE: 64 << 30},
    )
    emu.start()
    running = NodeStack(tmp, emu, storpool_api(emu), roots[1], tmp / "secondary")
    try:
        yield running
    finally:
        if running.channel is not None:
            running.channel.close()
        if running.node is not None and running.node.popen.poll() is None:
            running.node.terminate()
        emu.stop(release_devices=True)


# ---- a private MariaDB server --------------------------------------------------------------------

MARIADB_USER = "spcs"


def mariadb_installed() -> bool:
    return mariadb.installed()


@dataclass
class MariaDB:
    """A MariaDB server of a test session's own on 127.0.0.1:`port`. `url` is its database
    `spcs` for the user `spcs`, whose `password` is never in the URL; `new_database()` makes a
    fresh one for a test, `rows()` reads as root (for assertions)."""

    port: int
    socket: Path
    password: str
    created: int = 0

    def url_of(self, database: str) -> str:
        return f"mysql+pymysql://{MARIADB_USER}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_of("spcs")

    def root(self, database: str | None = None):
        import pymysql

        return pymysql.connect(
            unix_socket=str(self.socket), user="root", database=database, autocommit=True
        )

    def new_database(self) -> str:
        """A new empty database the user may use; returns its URL."""
        self.created += 1
        name = f"spcs_t{self.created}"
        with self.root() as conn, conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        return self.url_of(name)

    def rows(self, database: str, sql: str, *args: object) -> list[tuple]:
        with self.root(database) as conn, conn.cursor() as cursor:
            cursor.execute(sql, args)
            return list(cursor.fetchall())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def mariadb_server(tmp: Path, *, bare: bool = False) -> Iterator[MariaDB]:
    """`mariadbd` on 127.0.0.1 and a free port, its data, socket and pid file in `tmp` (no
    system config read), with the database `spcs` and the user `spcs` (a random password,
    allowed on every database named spcs*) unless `bare`; stopped and its data left in `tmp`
    at exit."""
    server = MariaDB(_free_port(), tmp / "mariadb.sock", secrets.token_hex(12))
    # a test server: a small buffer pool, no fsync per commit
    extra = ["--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=2"]
    popen = mariadb.start(tmp, server.port, extra).popen
    try:
        if bare:
            yield server
            return
        with server.root() as conn, conn.cursor() as cursor:
            cursor.execute("CREATE DATABASE spcs CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            cursor.execute(
                f"CREATE USER '{MARIADB_USER}'@'127.0.0.1' IDENTIFIED BY %s", (server.password,)
            )
            cursor.execute(f"GRANT ALL PRIVILEGES ON `spcs%`.* TO '{MARIADB_USER}'@'127.0.0.1'")
        yield server
    finally:
        popen.terminate()
        try:
            popen.wait(30)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
