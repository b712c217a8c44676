"""What every RPC checks before its handler runs, over real gRPC: malformed bytes, enum values
the contract does not define, and error messages that quote an oversized field."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from spcs.v1 import driver_pb2, driver_pb2_grpc, lifecycle_pb2, lifecycle_pb2_grpc, types_pb2
from tests.stacks import Service, start_management
from tests.support import log_containing


@pytest.fixture
def management(tmp_path: Path, services: list[Service]) -> Service:
    return start_management(tmp_path, services)


def error_of(call, request) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=10)
    return caught.value


def test_unknown_enum_values_are_invalid_argument_naming_the_field(management: Service):
    with management.channel() as channel:
        lifecycle = lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(channel)
        driver = driver_pb2_grpc.PrimaryDataStoreDriverStub(channel)
        scope = error_of(
            lifecycle.InitializePool,
            lifecycle_pb2.InitializePoolRequest(
                pool_uuid="p1",
                name="p1",
                url="SP_API_HTTP=127.0.0.1:1;SP_AUTH_TOKEN=x;SP_TEMPLATE=t",
                zone_id="1",
                capacity_bytes=1 << 30,
                scope=42,
            ),
        )
        assert scope.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "scope=42" in scope.details() and "POOL_SCOPE_ZONE" in scope.details()
        kind = error_of(
            driver.CreateVolume,
            driver_pb2.CreateVolumeRequest(
                pool=types_pb2.PrimaryStore(pool_uuid="p1"),
                volume=types_pb2.Volume(uuid="v1", size_bytes=1 << 20, type=99),
            ),
        )
        assert kind.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "volume.type=99" in kind.details()
        # nested in a repeated field of a oneof member, too
        copy = error_of(
            driver.CopyData,
            driver_pb2.CopyDataRequest(
                operation_id="op-1",
                source=types_pb2.DataObject(volume=types_pb2.Volume(uuid="v", format=7)),
                destination=types_pb2.DataObject(volume=types_pb2.Volume(uuid="w")),
            ),
        )
        assert copy.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "source.volume.format=7" in copy.details()
    line = "CopyData key=op-1 status=INVALID_ARGUMENT"
    log = log_containing(management.log_path, line)
    assert line in log and "InitializePool key=p1 status=INVALID_ARGUMENT" in log
    assert "Traceback" not in log and "INTERNAL" not in log


def test_an_oversized_field_is_quoted_only_in_part(management: Service):
    huge = "u" * 10240
    with management.channel() as channel:
        driver = driver_pb2_grpc.PrimaryDataStoreDriverStub(channel)
        refused = error_of(
            driver.CreateVolume,
            driver_pb2.CreateVolumeRequest(
                pool=types_pb2.PrimaryStore(pool_uuid="p1"),
                volume=types_pb2.Volume(uuid=huge, size_bytes=1 << 20),
            ),
        )
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused
        assert "volume.uuid" in refused.details() and "10240 characters" in refused.details()
        assert len(refused.details()) < 1024
        pool = error_of(
            lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(channel).GetPool,
            lifecycle_pb2.PoolRef(pool_uuid=huge),
        )
        assert pool.code() == grpc.StatusCode.INVALID_ARGUMENT and len(pool.details()) < 1024


def test_malformed_bytes_get_one_log_line_and_no_traceback(management: Service):
    with management.channel() as channel:
        raw = channel.unary_unary(
            "/spcs.v1.PrimaryDataStoreDriver/CreateVolume",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\xff\xff\xff\xff\x0f garbage", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spcs.v1.CreateVolumeRequest" in caught.value.details()
    log = log_containing(management.log_path, "CreateVolume key=- status=INVALID_ARGUMENT")
    assert "CreateVolume key=- status=INVALID_ARGUMENT" in log
    assert "Traceback" not in log and "deserializing" not in log
