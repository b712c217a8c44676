"""A StorPool emulator with two client hosts and a real `spcs node` process for host 1."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc

from spcs.emulator import Emulator
from spcs.storpool.api import StorPoolApi
from spcs.v1 import node_pb2_grpc, types_pb2
from tests.support import Service, start_service

TOKEN = "1234567890123456789"
TEMPLATE = "hybrid"


@dataclass
class NodeStack:
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
            "SP_AUTH_TOKEN": TOKEN,
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
        gid = self.api.volume_create(name=name, size=size, template=TEMPLATE)
        return f"/dev/storpool-byid/{gid}"

    def device(self, path: str) -> Path:
        return self.root / "storpool-byid" / path.rsplit("/", 1)[1]

    def attachments(self) -> list[tuple[str, int, str]]:
        return sorted((a.global_id, a.client, a.rights) for a in self.api.attachments())


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[NodeStack]:
    roots = {1: tmp_path / "host1", 2: tmp_path / "host2"}
    for root in roots.values():
        root.mkdir()
    (tmp_path / "secondary").mkdir()
    emu = Emulator(
        tmp_path / "emu",
        token=TOKEN,
        clients=roots,
        cluster_id="emu.a",
        templates={TEMPLATE: 64 << 30},
    )
    emu.start()
    stack = NodeStack(
        tmp_path, emu, StorPoolApi(emu.host, emu.port, TOKEN), roots[1], tmp_path / "secondary"
    )
    try:
        yield stack
    finally:
        if stack.channel is not None:
            stack.channel.close()
        if stack.node is not None and stack.node.popen.poll() is None:
            stack.node.terminate()
        emu.stop(release_devices=True)


@pytest.fixture
def node(stack: NodeStack) -> NodeStack:
    stack.start_node()
    return stack


def patterned_raw(path: Path, size: int, chunks: dict[int, bytes]) -> Path:
    """A sparse raw image of `size` with `chunks` (offset → bytes) written into it."""
    with path.open("wb") as handle:
        handle.truncate(size)
        for offset, data in chunks.items():
            handle.seek(offset)
            handle.write(data)
    return path


def pattern(seed: int, length: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:length])


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True).stdout


def same_content(a: Path, b: Path, a_format: str = "raw", b_format: str = "raw") -> bool:
    result = subprocess.run(
        ["qemu-img", "compare", "-f", a_format, "-F", b_format, str(a), str(b)],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0
