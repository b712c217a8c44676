"""Over gRPC against the emulator and two nodes: volume stats from one cluster space query
(GetVolumeStats from a per-endpoint cache, GetVolumesStats in one call), sizes beyond StorPool's
maximum, and pool URLs whose host does not resolve. StorPool calls are counted by the emulator.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from spcs.common.validate import MAX_SIZE
from spcs.storpool import names
from spcs.v1 import driver_pb2, lifecycle_pb2, node_pb2, node_pb2_grpc, types_pb2
from tests.management.helpers import MIB, OTHER_TEMPLATE, Mgmt, new_id, rpc_error, running_stack
from tests.stacks import TEMPLATE
from tests.support import pattern

STATS_SECONDS = 3.0
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def mgmt(tmp_path_factory) -> Iterator[Mgmt]:
    """A stack whose management caches the cluster's volume space for STATS_SECONDS."""
    with running_stack(
        tmp_path_factory.mktemp("stats"),
        management_args=["--volume-stats-seconds", str(STATS_SECONDS)],
    ) as mgmt:
        yield mgmt


def counted(mgmt: Mgmt) -> dict[str, int]:
    """The StorPool API requests since the last call (the emulator counts them)."""
    assert mgmt.stack.emulator is not None
    return mgmt.stack.emulator.reset_request_counts()


def stale(mgmt: Mgmt) -> None:
    """Wait until management's cached volume space is older than it may be."""
    time.sleep(STATS_SECONDS + 0.2)
    counted(mgmt)


def stats(mgmt: Mgmt, path: str) -> tuple[int, int]:
    reply = mgmt.driver.GetVolumeStats(
        driver_pb2.GetVolumeStatsRequest(pool=mgmt.pool_ref(), volume_path=path)
    )
    return reply.size_bytes, reply.used_bytes


def batch(mgmt: Mgmt, paths: list[str], pool: str | None = None) -> list[driver_pb2.VolumeStats]:
    return list(
        mgmt.driver.GetVolumesStats(
            driver_pb2.GetVolumesStatsRequest(pool=mgmt.pool_ref(pool), volume_paths=paths)
        ).volumes
    )


# ---- C: stats ---------------------------------------------------------------------------------


def test_a_stats_cycle_costs_one_cluster_space_query(mgmt: Mgmt):
    volumes = [mgmt.create_volume((1 + n % 4) * MIB) for n in range(50)]
    sizes = {v.path: v.size_bytes for v in volumes}
    stale(mgmt)
    # a cycle: CloudStack asks for every volume, one at a time
    assert {v.path: stats(mgmt, v.path)[0] for v in volumes} == sizes
    assert counted(mgmt) == {"VolumesSpace": 1}
    # the next cycle within the interval costs nothing
    assert {v.path: stats(mgmt, v.path)[0] for v in volumes} == sizes
    assert counted(mgmt) == {}
    # a stale cache asked by many callers at once: still one query (single flight)
    stale(mgmt)
    answers: dict[str, int] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(10)

    def poll(part: list[types_pb2.Volume]) -> None:
        start.wait()
        try:
            for v in part:
                answers[v.path] = stats(mgmt, v.path)[0]
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=poll, args=(volumes[n::10],)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == [] and answers == sizes
    assert counted(mgmt) == {"VolumesSpace": 1}


def test_get_volumes_stats_answers_many_volumes_from_one_query(mgmt: Mgmt):
    volumes = [mgmt.create_volume(4 * MIB) for _ in range(50)]
    written = volumes[7]
    mgmt.write(written.path, {0: pattern(7, MIB), 2 * MIB: pattern(8, MIB)})
    missing = "/dev/storpool-byid/emu.a.zzzzzz"
    counted(mgmt)
    paths = [v.path for v in volumes] + [missing]
    reply = batch(mgmt, paths)
    assert counted(mgmt) == {"VolumesSpace": 1}
    assert [s.volume_path for s in reply] == paths  # in the order asked
    by_path = {s.volume_path: s for s in reply}
    assert all(by_path[v.path].found and by_path[v.path].size_bytes == 4 * MIB for v in volumes)
    assert 2 * MIB <= by_path[written.path].used_bytes <= 4 * MIB
    assert by_path[volumes[0].path].used_bytes == 0
    assert (by_path[missing].found, by_path[missing].size_bytes) == (False, 0)
    # every call reads anew: the bytes written since show at once
    mgmt.write(volumes[0].path, {MIB: pattern(9, MIB)})
    counted(mgmt)
    again = batch(mgmt, [volumes[0].path])
    assert counted(mgmt) == {"VolumesSpace": 1}
    assert again[0].found and MIB <= again[0].used_bytes <= 4 * MIB
    # and GetVolumeStats answers from that answer, without a call
    assert stats(mgmt, written.path) == (4 * MIB, by_path[written.path].used_bytes)
    assert counted(mgmt) == {}


def test_get_volumes_stats_of_every_volume_of_the_pool(mgmt: Mgmt):
    other = mgmt.add_pool(OTHER_TEMPLATE)
    try:
        mine = mgmt.create_volume(2 * MIB)
        theirs = mgmt.driver.CreateVolume(
            driver_pb2.CreateVolumeRequest(
                pool=mgmt.pool_ref(other),
                volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=2 * MIB),
            )
        )
        counted(mgmt)
        every = batch(mgmt, [])
        assert counted(mgmt) == {"VolumesSpace": 1}
        expected = sorted(
            f"/dev/storpool-byid/{v.global_id}"
            for v in mgmt.api.volumes()
            if v.template == TEMPLATE
        )
        assert sorted(s.volume_path for s in every) == expected
        assert mine.path in expected and theirs.path not in expected
        assert all(s.found for s in every)
        assert [s.volume_path for s in batch(mgmt, [], pool=other)] == [theirs.path]
        mgmt.driver.DeleteData(
            driver_pb2.DeleteDataRequest(
                pool=mgmt.pool_ref(other), object=types_pb2.DataObject(volume=theirs)
            )
        )
    finally:
        mgmt.lifecycle.DeletePool(lifecycle_pb2.DeletePoolRequest(pool_uuid=other))


def test_volumes_stats_carry_limits_and_the_template_cache(mgmt: Mgmt):
    """The stats cycle CloudStack runs: limits with the space from the same one query, and the
    template cache's usage from one more when asked."""
    limited = mgmt.create_volume(2 * MIB, max_iops=700, max_bandwidth_bytes_per_second=10 * MIB)
    free = mgmt.create_volume(2 * MIB)
    template, _raw = mgmt.template_on_secondary(211, size=8 * MIB)
    mgmt.copy(
        types_pb2.DataObject(template=template),
        types_pb2.DataObject(
            volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=8 * MIB, store=mgmt.primary())
        ),
    )
    counted(mgmt)
    reply = mgmt.driver.GetVolumesStats(
        driver_pb2.GetVolumesStatsRequest(
            pool=mgmt.pool_ref(), volume_paths=[limited.path, free.path], template_cache=True
        )
    )
    assert counted(mgmt) == {"VolumesSpace": 1, "SnapshotsSpace": 1}
    first, second = reply.volumes
    assert (first.max_iops, first.max_bandwidth_bytes_per_second) == (700, 10 * MIB)
    assert (second.max_iops, second.max_bandwidth_bytes_per_second) == (0, 0)
    cached = [
        s
        for s in mgmt.api.snapshots()
        if s.template == TEMPLATE and s.tags.get("cs") == "template" and not s.deleted
    ]
    usage = reply.template_cache
    assert usage.templates == len(cached) >= 1
    assert usage.size_bytes == sum(s.size for s in cached)
    assert 0 < usage.used_bytes <= usage.size_bytes
    counted(mgmt)
    plain = batch(mgmt, [free.path])
    assert counted(mgmt) == {"VolumesSpace": 1}  # not asked: no second query
    assert len(plain) == 1


def test_stats_of_a_volume_the_cache_does_not_know_and_after_changes(mgmt: Mgmt):
    batch(mgmt, [])  # a fresh cache
    new = mgmt.create_volume(8 * MIB)
    counted(mgmt)
    # created after the refresh: one small call, used bytes 0 until the next refresh
    assert stats(mgmt, new.path) == (8 * MIB, 0)
    assert counted(mgmt) == {"Volume": 1}
    assert stats(mgmt, new.path) == (8 * MIB, 0)
    assert counted(mgmt) == {}
    # a resize through this service shows at once, without a new query
    mgmt.driver.ResizeVolume(
        driver_pb2.ResizeVolumeRequest(
            pool=mgmt.pool_ref(), volume=types_pb2.Volume(path=new.path), new_size_bytes=16 * MIB
        )
    )
    counted(mgmt)
    assert stats(mgmt, new.path) == (16 * MIB, 0)
    assert counted(mgmt) == {}
    # data written shows after the next refresh
    mgmt.write(new.path, {0: pattern(3, 2 * MIB)})
    stale(mgmt)
    size, used = stats(mgmt, new.path)
    assert size == 16 * MIB and 2 * MIB <= used <= 16 * MIB
    assert counted(mgmt) == {"VolumesSpace": 1}
    # a deleted volume is gone at once, not answered from the cache
    mgmt.driver.DeleteData(
        driver_pb2.DeleteDataRequest(pool=mgmt.pool_ref(), object=types_pb2.DataObject(volume=new))
    )
    gone = rpc_error(
        mgmt.driver.GetVolumeStats,
        driver_pb2.GetVolumeStatsRequest(pool=mgmt.pool_ref(), volume_path=new.path),
    )
    assert gone.code() == grpc.StatusCode.NOT_FOUND and new.path in gone.details()


def test_get_volumes_stats_validates_the_request(mgmt: Mgmt):
    volume = mgmt.create_volume(MIB)
    counted(mgmt)
    bad = rpc_error(
        mgmt.driver.GetVolumesStats,
        driver_pb2.GetVolumesStatsRequest(
            pool=mgmt.pool_ref(), volume_paths=[volume.path, "/var/lib/x"]
        ),
    )
    assert bad.code() == INVALID
    assert "volume_paths[1]" in bad.details() and "'/var/lib/x'" in bad.details()
    no_pool = rpc_error(
        mgmt.driver.GetVolumesStats, driver_pb2.GetVolumesStatsRequest(volume_paths=[volume.path])
    )
    assert no_pool.code() == INVALID and "pool.pool_uuid" in no_pool.details()
    unknown = rpc_error(
        mgmt.driver.GetVolumesStats,
        driver_pb2.GetVolumesStatsRequest(
            pool=types_pb2.PrimaryStore(pool_uuid="no-such-pool"), volume_paths=[volume.path]
        ),
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND and "no-such-pool" in unknown.details()
    assert counted(mgmt) == {}  # refused before any StorPool call
    by_name = batch(mgmt, [f"/dev/storpool/{mgmt.api.volume(f'~{volume.global_id}').name}"])
    assert by_name[0].found and by_name[0].size_bytes == MIB


# ---- A: sizes beyond StorPool's maximum ---------------------------------------------------------


@pytest.mark.parametrize("size", [MAX_SIZE + 512, 1 << 60, 1 << 63])
def test_sizes_beyond_the_maximum_are_refused_naming_the_field(mgmt: Mgmt, size: int):
    volume = mgmt.create_volume(MIB)
    counted(mgmt)
    created = rpc_error(mgmt.create_volume, size)
    assert created.code() == INVALID
    assert "volume.size_bytes" in created.details() and str(MAX_SIZE) in created.details()
    assert "100 PiB" in created.details() and "OverflowError" not in created.details()
    resized = rpc_error(
        mgmt.driver.ResizeVolume,
        driver_pb2.ResizeVolumeRequest(
            pool=mgmt.pool_ref(), volume=types_pb2.Volume(path=volume.path), new_size_bytes=size
        ),
    )
    assert resized.code() == INVALID and "new_size_bytes" in resized.details()
    assert str(MAX_SIZE) in resized.details()
    with mgmt.node_channel(1) as channel:
        on_node = rpc_error(
            node_pb2_grpc.StorageAdaptorStub(channel).ResizePhysicalDisk,
            node_pb2.ResizePhysicalDiskRequest(
                disk=node_pb2.DiskRef(path=volume.path), new_size_bytes=size
            ),
        )
    assert on_node.code() == INVALID and "new_size_bytes" in on_node.details()
    assert str(MAX_SIZE) in on_node.details()
    assert counted(mgmt) == {}  # none of it reached StorPool
    # and the next create works
    assert mgmt.create_volume(MIB).size_bytes == MIB
    assert mgmt.api.volume(f"~{volume.global_id}").size == MIB


def test_a_copy_destination_beyond_the_maximum_is_refused(mgmt: Mgmt):
    volume = mgmt.create_volume(4 * MIB)
    snapshot = mgmt.take_snapshot(volume.path)
    snapshot.store.CopyFrom(mgmt.primary())
    destination = types_pb2.Volume(uuid=new_id("vol"), size_bytes=1 << 62, store=mgmt.primary())
    op = mgmt.driver.CopyData(
        driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(snapshot=snapshot),
            destination=types_pb2.DataObject(volume=destination),
        )
    )
    done = mgmt.wait(op.name)
    assert done.HasField("error") and done.error.code == INVALID.value[0], done
    assert "destination.volume.size_bytes" in done.error.message
    assert str(MAX_SIZE) in done.error.message
    assert mgmt.api.volume_or_none(names.volume_name(destination.uuid)) is None
    assert all(v.tags.get("uuid") != destination.uuid for v in mgmt.api.volumes())


# ---- B: a pool URL whose host does not resolve ----------------------------------------------


def test_an_unresolvable_storpool_host_is_invalid_at_once(mgmt: Mgmt):
    emu = mgmt.stack.emulator
    assert emu is not None
    host = "spcs-nowhere.invalid"
    for url in (
        f"SP_API_HTTP={host}:81;SP_AUTH_TOKEN={emu.token};SP_TEMPLATE={OTHER_TEMPLATE}",
        f"storpool://{emu.token}@{host}:81/{OTHER_TEMPLATE}",
    ):
        started = time.monotonic()
        error = rpc_error(
            mgmt.lifecycle.InitializePool,
            lifecycle_pb2.InitializePoolRequest(
                pool_uuid=new_id("pool"), name="x", url=url, zone_id="zone-1", capacity_bytes=1
            ),
        )
        assert time.monotonic() - started < 2
        assert error.code() == INVALID and f"'{host}'" in error.details(), error.details()
        assert "does not resolve" in error.details() and emu.token not in error.details()
    started = time.monotonic()
    error = rpc_error(
        mgmt.lifecycle.UpdatePool,
        lifecycle_pb2.UpdatePoolRequest(
            pool_uuid=mgmt.pool_uuid,
            url=f"SP_API_HTTP={host}:81;SP_AUTH_TOKEN={emu.token};SP_TEMPLATE={TEMPLATE}",
        ),
    )
    assert time.monotonic() - started < 2
    assert error.code() == INVALID and f"'{host}'" in error.details()
    pool = mgmt.lifecycle.GetPool(lifecycle_pb2.PoolRef(pool_uuid=mgmt.pool_uuid))
    assert pool.api_endpoint == f"{emu.host}:{emu.port}"  # unchanged
