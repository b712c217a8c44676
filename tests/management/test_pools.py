"""Pool lifecycle and the host listener, over gRPC against the emulator and two nodes."""

from __future__ import annotations

import grpc
import pytest

from spcs.v1 import driver_pb2, hosts_pb2, lifecycle_pb2, types_pb2
from tests.management.helpers import MIB, OTHER_TEMPLATE, Mgmt, new_id, rpc_error
from tests.stacks import TEMPLATE
from tests.support import log_containing


def init_request(mgmt: Mgmt, url: str, **fields) -> lifecycle_pb2.InitializePoolRequest:
    values = dict(
        pool_uuid=new_id("pool"), name="sp-pool", url=url, zone_id="zone-1", capacity_bytes=1 << 40
    )
    values.update(fields)
    return lifecycle_pb2.InitializePoolRequest(**values)


def test_initialize_forms_replay_and_no_token_echo(mgmt: Mgmt):
    emu = mgmt.stack.emulator
    assert emu is not None
    # the default pool used the parameters form; the storpool:// form on the other template
    request = init_request(
        mgmt,
        f"storpool://{emu.token}@{emu.host}:{emu.port}/{OTHER_TEMPLATE}",
        tags=["fast"],
        scope=lifecycle_pb2.POOL_SCOPE_ZONE,
        hypervisor="kvm",
    )
    pool = mgmt.lifecycle.InitializePool(request)
    assert (pool.sp_template, pool.api_endpoint, pool.url_form, pool.state, list(pool.tags)) == (
        OTHER_TEMPLATE,
        f"{emu.host}:{emu.port}",
        "storpool-url",
        lifecycle_pb2.POOL_STATE_INITIALIZED,
        ["fast"],
    )
    assert emu.token not in str(pool)
    assert mgmt.lifecycle.InitializePool(request) == pool  # replay: the same pool
    changed = lifecycle_pb2.InitializePoolRequest()
    changed.CopyFrom(request)
    changed.capacity_bytes = 1 << 30
    assert (
        rpc_error(mgmt.lifecycle.InitializePool, changed).code() == grpc.StatusCode.ALREADY_EXISTS
    )
    # the bare template name takes the API from the management host's storpool.conf; the
    # template is taken already, so it is a duplicate
    duplicate = rpc_error(mgmt.lifecycle.InitializePool, init_request(mgmt, TEMPLATE))
    assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS
    assert mgmt.pool_uuid in duplicate.details()
    assert mgmt.lifecycle.DeletePool(lifecycle_pb2.DeletePoolRequest(pool_uuid=pool.uuid)).deleted
    # every call above is in the log (the last one too) and the token in none of them
    deleted = f"DeletePool key={pool.uuid} status=OK"
    log = log_containing(mgmt.stack.management.log_path, deleted)
    assert deleted in log and f"InitializePool key={pool.uuid}" in log
    assert emu.token not in log


@pytest.mark.parametrize(
    ("url", "fields", "code", "words"),
    [
        ("{missing-template}", {}, grpc.StatusCode.NOT_FOUND, "template nope does not exist"),
        ("wrongtoken", {}, grpc.StatusCode.PERMISSION_DENIED, "SP_AUTH_TOKEN"),
        (
            "{params}",
            {"scope": lifecycle_pb2.POOL_SCOPE_CLUSTER},
            grpc.StatusCode.INVALID_ARGUMENT,
            "zone-wide",
        ),
        ("{params}", {"hypervisor": "VMware"}, grpc.StatusCode.INVALID_ARGUMENT, "KVM"),
        ("{params}", {"capacity_bytes": 0}, grpc.StatusCode.INVALID_ARGUMENT, "capacity_bytes"),
        (
            "SP_API_HTTP=nohostport;SP_AUTH_TOKEN=x;SP_TEMPLATE=t",
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
            "host:port",
        ),
        (
            "SP_API_HTTP=127.0.0.1:1;SP_TEMPLATE=t",
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
            "SP_AUTH_TOKEN",
        ),
        ("storpool://127.0.0.1:81/t", {}, grpc.StatusCode.INVALID_ARGUMENT, "TOKEN@host:port"),
        ("bad template!", {}, grpc.StatusCode.INVALID_ARGUMENT, "template name"),
        (
            "SP_API_HTTP=127.0.0.1:1;SP_AUTH_TOKEN=x;SP_TEMPLATE=t",
            {},
            grpc.StatusCode.UNAVAILABLE,
            "unreachable",
        ),
    ],
)
def test_initialize_errors(mgmt: Mgmt, url: str, fields, code, words):
    if url == "wrongtoken":
        url = mgmt.pool_url(OTHER_TEMPLATE, token="wrong-token-value")
    url = url.replace("{params}", mgmt.pool_url(OTHER_TEMPLATE))
    url = url.replace("{missing-template}", mgmt.pool_url("nope"))
    before = len(mgmt.lifecycle.ListPools(lifecycle_pb2.ListPoolsRequest()).pools)
    error = rpc_error(mgmt.lifecycle.InitializePool, init_request(mgmt, url, **fields))
    assert error.code() == code, error.details()
    assert words in error.details()
    assert "wrong-token-value" not in error.details()
    assert len(mgmt.lifecycle.ListPools(lifecycle_pb2.ListPoolsRequest()).pools) == before


def test_states_maintenance_and_scope(mgmt: Mgmt):
    pool = mgmt.pool_uuid
    assert (
        mgmt.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=pool)).state
        == lifecycle_pb2.POOL_STATE_UP
    )
    cluster = rpc_error(
        mgmt.lifecycle.AttachCluster,
        lifecycle_pb2.AttachClusterRequest(pool_uuid=pool, cluster_id="c1"),
    )
    assert (
        cluster.code() == grpc.StatusCode.FAILED_PRECONDITION and "zone-wide" in cluster.details()
    )
    for call, state in (
        (mgmt.lifecycle.MaintainPool, lifecycle_pb2.POOL_STATE_MAINTENANCE),
        (mgmt.lifecycle.DisablePool, lifecycle_pb2.POOL_STATE_DISABLED),
    ):
        assert call(lifecycle_pb2.PoolRef(pool_uuid=pool)).state == state
        assert call(lifecycle_pb2.PoolRef(pool_uuid=pool)).state == state  # idempotent
        refused = rpc_error(mgmt.create_volume)
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not placed on it" in refused.details()
        mgmt.lifecycle.EnablePool(lifecycle_pb2.PoolRef(pool_uuid=pool))
    assert (
        mgmt.lifecycle.CancelMaintainPool(lifecycle_pb2.PoolRef(pool_uuid=pool)).state
        == lifecycle_pb2.POOL_STATE_UP
    )
    assert mgmt.create_volume().path.startswith("/dev/storpool-byid/")
    unknown = rpc_error(mgmt.lifecycle.GetPool, lifecycle_pb2.PoolRef(pool_uuid="nope"))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


def test_update_stats_and_host_events(mgmt: Mgmt):
    pool = mgmt.pool_uuid
    updated = mgmt.lifecycle.UpdatePool(
        lifecycle_pb2.UpdatePoolRequest(
            pool_uuid=pool,
            capacity_bytes=2 << 40,
            tags=["a", "b"],
            update_tags=True,
            details={"snapshot.backup.to.secondary": "true"},
        )
    )
    assert (updated.capacity_bytes, list(updated.tags)) == (2 << 40, ["a", "b"])
    bad = rpc_error(
        mgmt.lifecycle.UpdatePool,
        lifecycle_pb2.UpdatePoolRequest(pool_uuid=pool, url=mgmt.pool_url(OTHER_TEMPLATE)),
    )
    assert (
        bad.code() == grpc.StatusCode.INVALID_ARGUMENT and "cannot change template" in bad.details()
    )
    stats = mgmt.driver.GetStorageStats(driver_pb2.GetStorageStatsRequest(pool=mgmt.pool_ref()))
    assert stats.capacity_bytes == 256 << 30 and 0 <= stats.used_bytes < stats.capacity_bytes
    assert sorted(
        mgmt.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=pool)).connected_host_ids
    ) == ["host-1", "host-2"]
    # a host reconnecting never resets the pool's capacity
    mgmt.hosts.HostConnect(hosts_pb2.HostConnectRequest(host_id="host-1", pool_uuid=pool))
    assert mgmt.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=pool)).capacity_bytes == 2 << 40
    # a host without a node service is skipped, not an error
    skipped = mgmt.hosts.HostConnect(hosts_pb2.HostConnectRequest(host_id="host-9", pool_uuid=pool))
    assert not skipped.connected and "spcs node" in skipped.reason
    assert "host-9" in mgmt.hosts.HostAdded(hosts_pb2.HostEventRequest(host_id="host-9")).message
    mgmt.hosts.HostDisconnected(hosts_pb2.HostEventRequest(host_id="host-2", pool_uuid=pool))
    assert list(
        mgmt.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=pool)).connected_host_ids
    ) == ["host-1"]
    assert mgmt.hosts.HostConnect(
        hosts_pb2.HostConnectRequest(host_id="host-2", pool_uuid=pool)
    ).connected


def test_delete_refuses_while_data_exists_and_removes_template_cache(mgmt: Mgmt):
    pool = mgmt.add_pool(OTHER_TEMPLATE)
    template, _ = mgmt.template_on_secondary(301, size=16 * MIB)
    cached = mgmt.copy(
        types_pb2.DataObject(template=template),
        types_pb2.DataObject(
            template=types_pb2.Template(uuid=template.uuid, store=mgmt.primary(pool))
        ),
    )
    volume = mgmt.driver.CreateVolume(
        driver_pb2.CreateVolumeRequest(
            pool=mgmt.pool_ref(pool), volume=types_pb2.Volume(uuid=new_id("v"), size_bytes=MIB)
        )
    )
    refused = rpc_error(mgmt.lifecycle.DeletePool, lifecycle_pb2.DeletePoolRequest(pool_uuid=pool))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "1 volume(s)" in refused.details() and volume.global_id
    mgmt.driver.DeleteData(
        driver_pb2.DeleteDataRequest(
            pool=mgmt.pool_ref(pool), object=types_pb2.DataObject(volume=volume)
        )
    )
    reply = mgmt.lifecycle.DeletePool(lifecycle_pb2.DeletePoolRequest(pool_uuid=pool))
    assert (reply.deleted, reply.template_snapshots_removed) == (True, 1)
    assert mgmt.api.snapshot_or_none(f"~{cached.result.template.global_id}") is None
    again = mgmt.lifecycle.DeletePool(lifecycle_pb2.DeletePoolRequest(pool_uuid=pool))
    assert not again.deleted
