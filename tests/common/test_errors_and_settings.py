"""The error table, the interceptor's error handling, settings precedence."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status

from spcs.common import errors
from spcs.common.identity import IdentityInfo, IdentityServicer
from spcs.common.interceptors import redacted_text, request_key
from spcs.common.server import bind
from spcs.common.settings import ConfigError, Option, add_options, parse_listen, resolve
from spcs.v1 import driver_pb2, identity_pb2, identity_pb2_grpc, lifecycle_pb2, types_pb2
from tests.stacks import serving

pytestmark = pytest.mark.fast


def test_every_domain_error_has_a_distinct_status():
    classes = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.SpcsError)
        and cls is not errors.SpcsError
    ]
    codes = [errors.status_code(cls("x")) for cls in classes]
    assert grpc.StatusCode.UNKNOWN not in codes
    assert len(set(codes)) == len(classes)
    for cls in classes:
        assert type(errors.from_status(errors.status_code(cls("m")), "m")) is cls


@pytest.mark.parametrize(
    ("raised", "code", "reason"),
    [
        (errors.NotFound("volume ~a.b.c does not exist"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        (errors.Conflict("busy"), grpc.StatusCode.ABORTED, "OPERATION_IN_PROGRESS"),
        (ValueError("secret internals"), grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
def test_interceptor_maps_errors_without_tracebacks(raised, code, reason):
    def probe() -> tuple[bool, str]:
        raise raised

    info = IdentityInfo(name="t", services=[], probe=probe)
    if isinstance(raised, ValueError):
        # IdentityServicer reports a crashing probe as FAILED_PRECONDITION; bypass it here
        class Crashing(IdentityServicer):
            def Probe(self, request, context):
                raise raised

        servicer = Crashing(info)
    else:
        servicer = IdentityServicer(info)
    with (
        serving("t", [bind(identity_pb2, identity_pb2_grpc, "Identity", servicer)]) as address,
        grpc.insecure_channel(address) as channel,
        pytest.raises(grpc.RpcError) as failure,
    ):
        identity_pb2_grpc.IdentityStub(channel).Probe(identity_pb2.ProbeRequest())
    error = failure.value
    assert error.code() == code
    assert "Traceback" not in error.details() and "secret internals" not in error.details()
    status = rpc_status.from_call(error)
    assert status is not None and reason in str(status.details[0].value)
    if code == grpc.StatusCode.INTERNAL:
        assert "request " in error.details()
    else:
        assert error.details() == raised.message


def test_secret_fields_are_redacted_and_keys_found():
    request = lifecycle_pb2.InitializePoolRequest(
        pool_uuid="p-1", name="sp", url="storpool://SECRETTOKEN@127.0.0.1:81/t"
    )
    text = redacted_text(request)
    assert "SECRETTOKEN" not in text and "<redacted>" in text and "p-1" in text
    assert request.url.startswith("storpool://SECRETTOKEN")  # the original is untouched
    assert request_key(request) == "p-1"
    create = driver_pb2.CreateVolumeRequest(volume=types_pb2.Volume(uuid="v-1", path="/dev/x"))
    assert request_key(create) == "v-1"


def test_settings_precedence(tmp_path: Path):
    options = (
        Option("listen", "l", default="127.0.0.1:1", parse=parse_listen),
        Option("workers", "w", default="4", parse=int),
    )
    parser = argparse.ArgumentParser()
    add_options(parser, options)
    (tmp_path / "c.toml").write_text('listen = "127.0.0.1:3"\nworkers = 9\n')
    args = parser.parse_args(["--config", str(tmp_path / "c.toml"), "--listen", "127.0.0.1:5"])
    assert resolve(args, options, environ={"SPCS_LISTEN": "127.0.0.1:4"}) == {
        "listen": ("127.0.0.1", 5),
        "workers": 9,
    }
    args = parser.parse_args(["--config", str(tmp_path / "c.toml")])
    assert resolve(args, options, environ={"SPCS_LISTEN": "[::1]:4"})["listen"] == ("[::1]", 4)
    with pytest.raises(ConfigError, match="SPCS_WORKERS"):
        resolve(parser.parse_args([]), options, environ={"SPCS_WORKERS": "x"})
