"""Prometheus metrics on a running stack: each service serves them on its metrics_listen port
while real work runs, and the values move as the work says they must (RPCs, StorPool calls
with a retry, a hold conflict, a copy with its bytes, a node's attach and detach, operations),
with no object's uuid or name in any label."""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.request
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from spcs.v1 import driver_pb2, driver_pb2_grpc, types_pb2
from tests.management.helpers import MIB, Mgmt, new_id, rpc_error, running_stack
from tests.management.test_client_failover import balanced_channel
from tests.management.test_replicas import shared_database
from tests.stacks import MariaDB

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of `name` that have these labels (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_metrics_move_with_real_work(tmp_path: Path):
    mgmt_port = _free_port()
    with running_stack(
        tmp_path,
        management_args=["--metrics-listen", f"127.0.0.1:{mgmt_port}"],
        node_args=["--metrics-listen", "127.0.0.1:0"],  # the two nodes: a free port each
    ) as mgmt:
        node_ports = _node_metric_ports(mgmt)
        before, nodes_before = scrape(mgmt_port), {p: scrape(p) for p in node_ports}
        _work(mgmt)
        after, nodes_after = scrape(mgmt_port), {p: scrape(p) for p in node_ports}

    create = "/spcs.v1.PrimaryDataStoreDriver/CreateVolume"
    assert moved(before, after, "spcs_rpcs_total", method=create, code="OK") == 2
    assert moved(before, after, "spcs_rpc_duration_seconds_count", method=create, code="OK") == 2
    assert moved(before, after, "spcs_rpcs_total", code="ABORTED") == 1
    assert value(after, "spcs_build_info", service="spcs-management") == 1
    # StorPool: the create that met a transient error was retried once and then succeeded
    assert moved(before, after, "spcs_storpool_retries_total", call="volume_create") == 1
    assert moved(before, after, "spcs_storpool_transient_errors_total", call="volume_create") == 1
    calls = {dict(labels)["call"] for name, labels in after if name.startswith("spcs_storpool_")}
    assert {"volume_create", "volume"} <= calls
    assert all(re.fullmatch(r"[a-z_]+|[A-Z][A-Za-z]+", call) for call in calls), calls
    ok = moved(before, after, "spcs_storpool_call_duration_seconds_count", outcome="ok")
    assert ok >= 5
    # the resize held the volume while the delete came: one refusal, by the delete's entry
    assert moved(before, after, "spcs_hold_conflicts_total", operation="DeleteVolume") == 1
    assert value(after, "spcs_holds_held") == 0  # all released
    # one copy on the management service (template-to-volume) with its bytes
    kind = "template-to-volume"
    assert moved(before, after, "spcs_copies_total", kind=kind, outcome="done") == 1
    assert moved(before, after, "spcs_operations_ended_total", kind=kind, state="done") == 1
    assert moved(before, after, "spcs_copy_bytes_total", kind=kind) >= 5 * MIB
    assert moved(before, after, "spcs_copy_throughput_bytes_per_second_count", kind=kind) == 1
    assert value(after, "spcs_copies_active") == 0 and value(after, "spcs_copies_queued") == 0
    assert value(after, "spcs_operations_running") == 0

    # the nodes: the download ran on one of them; both attach and detach were timed
    node_moved = {
        name: sum(moved(nodes_before[p], nodes_after[p], name) for p in node_ports)
        for name in (
            "spcs_copies_total",
            "spcs_copy_bytes_total",
            "spcs_node_device_duration_seconds_count",
            "spcs_rpcs_total",
        )
    }
    assert node_moved["spcs_copies_total"] == 1
    assert node_moved["spcs_copy_bytes_total"] >= 5 * MIB
    assert node_moved["spcs_node_device_duration_seconds_count"] >= 2
    assert node_moved["spcs_rpcs_total"] >= 2
    for port in node_ports:
        assert value(nodes_after[port], "spcs_build_info", service="spcs-node") == 1

    # bounded labels: no uuid, path or StorPool name of an object anywhere
    objects = re.compile(r"(vol|snap|tmpl|pool|op|req)-[0-9a-f]{12}|/dev/|~|cs-(vol|tmpl|snap)-")
    for samples in (after, *nodes_after.values()):
        for _name, labels in samples:
            for _key, label in labels:
                assert not objects.search(label), label


def _metrics_port(log: Path) -> int:
    """Where a service started with --metrics-listen 127.0.0.1:0 serves its metrics."""
    found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log.read_text())
    assert found, f"{log} does not say where its metrics are"
    return int(found[1])


def _node_metric_ports(mgmt: Mgmt) -> list[int]:
    return [_metrics_port(node.log_path) for node in mgmt.stack.nodes]


def _work(mgmt: Mgmt) -> None:
    emulator = mgmt.stack.emulator
    assert emulator is not None
    emulator.set_faults({"failNext": {"VolumeCreate": 1}})
    try:
        volume = mgmt.create_volume(8 * MIB)  # one transient error, retried
    finally:
        emulator.set_faults({})
    mgmt.create_volume(8 * MIB)
    # a delete while a slow resize holds the volume: ABORTED
    emulator.set_faults({"delays": {"VolumeUpdate": 1.5}})
    try:
        resize = threading.Thread(
            target=mgmt.driver.ResizeVolume,
            args=(
                driver_pb2.ResizeVolumeRequest(
                    pool=mgmt.pool_ref(),
                    volume=types_pb2.Volume(path=volume.path),
                    new_size_bytes=16 * MIB,
                ),
            ),
        )
        resize.start()
        time.sleep(0.5)
        clash = rpc_error(
            mgmt.driver.DeleteData,
            driver_pb2.DeleteDataRequest(
                pool=mgmt.pool_ref(), object=types_pb2.DataObject(volume=volume)
            ),
        )
        resize.join(10)
    finally:
        emulator.set_faults({})
    assert clash.code() == grpc.StatusCode.ABORTED
    # a template's first use: downloaded by a node (attach, copy, detach), then cloned
    template, _raw = mgmt.template_on_secondary(301, size=16 * MIB)
    result = mgmt.copy(
        types_pb2.DataObject(template=template),
        types_pb2.DataObject(
            volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=32 * MIB, store=mgmt.primary())
        ),
    )
    assert result.bytes_written >= 5 * MIB


def test_each_replica_exports_what_it_served(mariadb: MariaDB, tmp_path: Path):
    """Three replicas on one database, calls spread over them by round robin: each replica's
    metrics count its own calls, and their sum is the region's."""
    args, _url = shared_database(mariadb, tmp_path)
    with running_stack(
        tmp_path / "stack",
        management_args=[*args, "--metrics-listen", "127.0.0.1:0"],
        replicas=3,
    ) as mgmt:
        replicas = mgmt.stack.managements
        ports = [_metrics_port(replica.log_path) for replica in replicas]
        assert len(set(ports)) == 3
        before = [scrape(port) for port in ports]
        with balanced_channel([replica.address for replica in replicas]) as channel:
            driver = driver_pb2_grpc.PrimaryDataStoreDriverStub(channel)
            for _ in range(30):
                driver.CreateVolume(
                    driver_pb2.CreateVolumeRequest(
                        pool=mgmt.pool_ref(),
                        volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=MIB),
                    )
                )
        after = [scrape(port) for port in ports]
    create = "/spcs.v1.PrimaryDataStoreDriver/CreateVolume"
    served = [
        moved(b, a, "spcs_rpcs_total", method=create, code="OK")
        for b, a in zip(before, after, strict=True)
    ]
    assert sum(served) == 30 and all(n > 0 for n in served), served
    assert all(value(a, "spcs_holds_held") == 0 for a in after)
    assert all(value(a, "spcs_build_info", service="spcs-management") == 1 for a in after)
