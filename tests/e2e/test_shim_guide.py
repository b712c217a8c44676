"""docs/shim.md, the guide for the Java shim that calls spcs from CloudStack, keeps up with the API:
every RPC of every service the services serve (read from the compiled descriptors, so an RPC
added to a .proto fails here until the guide says who calls it) is named in it as
`Service/Method` inside backticks; each CloudStack interface the shim implements has a section
heading of its own; the wait cap it quotes is the one `spcs.common.operations` applies; and it
has no ```sh block (tests/e2e/test_documented_commands.py would run every such block)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from google.longrunning import operations_pb2
from google.protobuf.descriptor import FileDescriptor

from spcs.common.operations import MAX_WAIT_SECONDS
from spcs.v1 import (
    driver_pb2,
    hosts_pb2,
    identity_pb2,
    lifecycle_pb2,
    node_pb2,
    strategies_pb2,
)
from tests.support import REPO

pytestmark = pytest.mark.fast

GUIDE = REPO / "docs" / "shim.md"
DESCRIPTORS: tuple[FileDescriptor, ...] = (
    driver_pb2.DESCRIPTOR,
    lifecycle_pb2.DESCRIPTOR,
    hosts_pb2.DESCRIPTOR,
    identity_pb2.DESCRIPTOR,
    node_pb2.DESCRIPTOR,
    strategies_pb2.DESCRIPTOR,
    operations_pb2.DESCRIPTOR,
)
# the CloudStack interfaces the shim implements, each with a section of its own
INTERFACES = (
    "PrimaryDataStoreDriver",
    "PrimaryDataStoreLifeCycle",
    "HypervisorHostListener",
    "SnapshotStrategy",
    "VMSnapshotStrategy",
    "DataMotionStrategy",
    "StorageAdaptor",
)
FENCE = re.compile(r"^\s*```")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
HEADING = re.compile(r"^#{2,3}\s+(.*)$")


def rpcs() -> list[str]:
    """`Service/Method` of every RPC of the spcs services and google.longrunning.Operations."""
    return [
        f"{service.name}/{method.name}"
        for descriptor in DESCRIPTORS
        for service in descriptor.services_by_name.values()
        for method in service.methods
    ]


def prose_lines(text: str) -> Iterator[str]:
    """The lines of the page outside fenced blocks."""
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield line


def code_spans(text: str) -> list[str]:
    """The contents of the inline code spans outside fenced blocks."""
    return [span for line in prose_lines(text) for span in CODE_SPAN.findall(line)]


def named(rpc: str, spans: list[str]) -> bool:
    """Whether a code span names the RPC: exactly, or with its package in front
    (`spcs.v1.Identity/Probe`), but not as part of a longer name (`VMSnapshotStrategy/...` does
    not name `SnapshotStrategy/...`)."""
    pattern = re.compile(rf"(?<![\w/])(?:spcs\.v1\.|google\.longrunning\.)?{re.escape(rpc)}(?!\w)")
    return any(pattern.search(span) for span in spans)


@pytest.fixture(scope="module")
def guide() -> str:
    assert GUIDE.exists(), f"{GUIDE.relative_to(REPO)} is missing"
    return GUIDE.read_text()


def test_the_descriptors_list_every_service() -> None:
    services = {rpc.split("/")[0] for rpc in rpcs()}
    assert {
        "PrimaryDataStoreDriver",
        "PrimaryDataStoreLifeCycle",
        "HostListener",
        "NodeRegistry",
        "SnapshotStrategy",
        "VMSnapshotStrategy",
        "Identity",
        "StorageAdaptor",
        "AgentCommands",
        "Operations",
    } <= services


def test_every_rpc_is_named_in_backticks(guide: str) -> None:
    spans = code_spans(guide)
    missing = [rpc for rpc in rpcs() if not named(rpc, spans)]
    assert not missing, (
        f"{len(missing)} RPC(s) are not named as `Service/Method` in docs/shim.md: "
        + ", ".join(missing)
    )


def test_every_interface_has_its_own_section(guide: str) -> None:
    headings = [m[1] for line in prose_lines(guide) if (m := HEADING.match(line))]
    missing = [
        name
        for name in INTERFACES
        if not any(re.search(rf"(?<!\w){name}(?!\w)", heading) for heading in headings)
    ]
    assert not missing, (
        "CloudStack interfaces without a section heading (## or ###) in docs/shim.md: "
        + ", ".join(missing)
    )


def test_the_wait_cap_is_the_servers(guide: str) -> None:
    cap = f"{MAX_WAIT_SECONDS:g} s"
    assert "MAX_WAIT_SECONDS" in guide and cap in guide, (
        f"docs/shim.md should quote the server's WaitOperation cap, MAX_WAIT_SECONDS = {cap}"
    )


def test_no_sh_blocks(guide: str) -> None:
    blocks = [
        number
        for number, line in enumerate(guide.splitlines(), start=1)
        if re.match(r"^\s*```sh\s*$", line)
    ]
    assert not blocks, (
        "docs/shim.md has ```sh blocks (test_documented_commands.py would run them); use "
        f"```java or ```text instead: lines {blocks}"
    )


@pytest.mark.parametrize(
    ("rpc", "text", "expected"),
    [
        ("Identity/Probe", "call `Identity/Probe` first", True),
        ("Identity/Probe", "`spcs.v1.Identity/Probe`", True),
        ("Operations/WaitOperation", "`google.longrunning.Operations/WaitOperation`", True),
        ("SnapshotStrategy/DeleteSnapshot", "`VMSnapshotStrategy/DeleteSnapshot`", False),
        ("Identity/Probe", "Identity/Probe without backticks", False),
        ("Identity/Probe", "```text\n`Identity/Probe`\n```", False),
    ],
)
def test_named_reads_code_spans_outside_fences(rpc: str, text: str, expected: bool) -> None:
    assert named(rpc, code_spans(text)) is expected
