"""The proto's `google.api.field_behavior` REQUIRED marks, which generated clients (the Java
shim's) see, are exactly the request fields the server's contracts refuse to do without
(`spcs.common.contract`): a field the server requires is marked, and a marked field is one it
requires, for every RPC; the field's comment says REQUIRED too."""

from __future__ import annotations

import pytest
from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor

from spcs.common.contract import Contract, declared
from tests.contract.harness import SERVICE_MODULES, SERVICERS
from tests.support import REPO

pytestmark = pytest.mark.fast


def required_by_contract(contract: Contract) -> set[str]:
    """The request's own fields without which the call is INVALID_ARGUMENT: those the contract
    requires (or a field inside them), the messages whose oneof must be chosen, and the one
    field all of an id's alternatives are in."""
    tops = {path.split(".")[0].split("[")[0] for path in contract.must_be_set}
    tops |= {path.split(".")[0] for path in contract.chosen}
    for group in contract.id_of:
        firsts = {path.split(".")[0] for path in group}
        if len(firsts) == 1:
            tops |= firsts
    return tops


def marked_required(message: Descriptor) -> set[str]:
    return {
        field.name
        for field in message.fields
        if field_behavior_pb2.REQUIRED
        in field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    }


def test_required_marks_are_what_the_server_requires():
    by_message: dict[str, list[tuple[str, set[str]]]] = {}
    for service_name, servicer in SERVICERS.items():
        service = SERVICE_MODULES[service_name].DESCRIPTOR.services_by_name[service_name]
        for name, contract in declared(servicer).items():
            message = service.methods_by_name[name].input_type
            by_message.setdefault(message.full_name, []).append(
                (f"{service.name}/{name}", required_by_contract(contract))
            )
            assert marked_required(message) == required_by_contract(contract), (
                f"{service.name}/{name}: {message.name} marks {sorted(marked_required(message))} "
                f"REQUIRED, the server requires {sorted(required_by_contract(contract))}"
            )
    # a request message shared by several RPCs is required alike by all of them
    for message, uses in by_message.items():
        assert len({frozenset(fields) for _rpc, fields in uses}) == 1, (message, uses)


def test_a_required_mark_is_in_the_comment_too():
    """The comment above each marked field starts with REQUIRED (proto/ is read by people)."""
    wrong = []
    for path in sorted((REPO / "proto" / "spcs" / "v1").glob("*.proto")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if "(google.api.field_behavior) = REQUIRED" not in line:
                continue
            comment = lines[number - 1].strip()
            back = number - 1
            while back > 0 and lines[back - 1].strip().startswith("//"):
                back -= 1
                comment = lines[back].strip()
            if not comment.startswith("// REQUIRED"):
                wrong.append(f"{path.name}:{number + 1}: {line.strip()}")
    assert not wrong, "\n".join(wrong)
