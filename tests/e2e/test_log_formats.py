"""Both log formats on a running stack at DEBUG: text (the default) and JSON (one object per
line, the RPC line's fields as fields of their own), and in neither a StorPool token or a
secret a call carried, whether it came in a request, a pool's URL or an error."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from spcs.v1 import driver_pb2, lifecycle_pb2, types_pb2
from tests.management.helpers import MIB, new_id, rpc_error, running_stack

OTHER_TOKEN = "spcs-test-secret-7f3a9c21d4"  # a token the emulator does not know


def _wait_for_rpc_line(log: Path, request_id: str) -> None:
    deadline = time.monotonic() + 10
    while not any(request_id in line and "rpc=" in line for line in log.read_text().splitlines()):
        assert time.monotonic() < deadline, f"no RPC line of {request_id} in {log}"
        time.sleep(0.05)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_logs_carry_no_secret_and_json_is_one_object_per_line(tmp_path: Path, log_format: str):
    args = ["--log-format", log_format, "--log-level", "DEBUG"]
    with running_stack(tmp_path, management_args=args, node_args=args) as mgmt:
        emulator = mgmt.stack.emulator
        assert emulator is not None
        rid = f"logs-{new_id('req')}"
        volume = mgmt.driver.CreateVolume(
            driver_pb2.CreateVolumeRequest(
                pool=mgmt.pool_ref(), volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB)
            ),
            metadata=(("x-request-id", rid),),
        )
        # a pool whose token StorPool refuses: the error names the pool, not the token
        last = f"logs-{new_id('req')}"
        refused = rpc_error(
            mgmt.lifecycle.InitializePool,
            lifecycle_pb2.InitializePoolRequest(
                pool_uuid=new_id("pool"),
                name="refused",
                url=mgmt.pool_url(token=OTHER_TOKEN),
                zone_id="zone-1",
                capacity_bytes=1 << 40,
            ),
            metadata=(("x-request-id", last),),
        )
        assert refused.code() != grpc.StatusCode.OK and OTHER_TOKEN not in refused.details()
        management = mgmt.stack.management
        assert management is not None
        _wait_for_rpc_line(management.log_path, last)  # the lines are written in order
        logs = {"management": management.log_path.read_text()}
        for n, node in enumerate(mgmt.stack.nodes):
            logs[f"node{n}"] = node.log_path.read_text()
    for name, text in logs.items():
        for secret in (emulator.token, OTHER_TOKEN):
            assert secret not in text, f"{name}'s {log_format} log shows a token"
    assert "<redacted>" in logs["management"]  # the DEBUG request bodies had them
    if log_format == "text":
        assert f"[{rid}] rpc=/spcs.v1.PrimaryDataStoreDriver/CreateVolume" in logs["management"]
        assert not logs["management"].lstrip().startswith("{")
        return
    for name, text in logs.items():
        lines = [json.loads(line) for line in text.splitlines()]  # every line is one object
        assert lines, f"{name} logged nothing"
        for line in lines:
            assert {"time", "level", "logger", "request_id", "message"} <= line.keys()
            assert line["time"].endswith("Z") and line["level"] in ("DEBUG", "INFO", "WARNING")
    (rpc,) = [
        line
        for line in map(json.loads, logs["management"].splitlines())
        if line["request_id"] == rid and "method" in line
    ]
    assert rpc["method"] == "/spcs.v1.PrimaryDataStoreDriver/CreateVolume"
    assert rpc["status"] == "OK" and rpc["object"] != "-"
    assert rpc["logger"] == "spcs.common.interceptors"
    assert isinstance(rpc["ms"], float) and rpc["ms"] >= rpc["storpool_ms"] > 0
    assert rpc["db_ms"] >= 0
    assert volume.path and rpc["message"].startswith(f"rpc={rpc['method']} ")
