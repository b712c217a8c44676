"""The contract's plumbing: committed stubs match proto/, unimplemented methods say so."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from spcs.common.server import bind
from spcs.v1 import node_pb2, node_pb2_grpc
from tests.stacks import serving
from tests.support import REPO

pytestmark = pytest.mark.fast


def test_committed_stubs_match_proto():
    result = subprocess.run(
        [sys.executable, "proto/generate.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_every_proto_field_is_documented():
    """Each field and RPC in proto/ has a comment (what it is, required/optional, units)."""
    undocumented = []
    for path in sorted((REPO / "proto" / "spcs" / "v1").glob("*.proto")):
        lines = path.read_text().splitlines()
        in_enum = False
        for number, line in enumerate(lines):
            text = line.strip()
            if text.startswith("enum "):
                in_enum = True
            if text == "}":
                in_enum = False
            is_field = (
                "= " in text
                and text.endswith(";")
                and not text.startswith(("option", "syntax", "package", "import", "//"))
                and not in_enum
            )
            is_rpc = text.startswith("rpc ")
            if not (is_field or is_rpc):
                continue
            previous = lines[number - 1].strip() if number else ""
            if not previous.startswith("//") and "//" not in text:
                undocumented.append(f"{path.name}:{number + 1}: {text}")
    # fields of small, self-describing reply messages are described by their message comment
    assert undocumented == [], "\n".join(undocumented)


def test_an_unimplemented_method_answers_unimplemented_naming_it():
    """A servicer that implements nothing: every method fails clearly, never silently."""
    servicer = node_pb2_grpc.AgentCommandsServicer()
    with (
        serving("t", [bind(node_pb2, node_pb2_grpc, "AgentCommands", servicer)]) as address,
        grpc.insecure_channel(address) as channel,
    ):
        stub = node_pb2_grpc.AgentCommandsStub(channel)
        for method in node_pb2.DESCRIPTOR.services_by_name["AgentCommands"].methods:
            with pytest.raises(grpc.RpcError) as failure:
                getattr(stub, method.name)(method.input_type._concrete_class(), timeout=5)
            assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert f"spcs.v1.AgentCommands/{method.name}" in failure.value.details()
