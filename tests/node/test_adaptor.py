"""StorageAdaptor on a real node process against the emulator: attach, detach, devices, bytes."""

from __future__ import annotations

import os
import time

import grpc
import pytest

from spcs.v1 import node_pb2, types_pb2
from tests.stacks import NodeStack
from tests.support import pattern

RW = types_pb2.ACCESS_MODE_READ_WRITE
RO = types_pb2.ACCESS_MODE_READ_ONLY
VOLUME = node_pb2.DISK_KIND_VOLUME
SNAPSHOT = node_pb2.DISK_KIND_SNAPSHOT


def connect(stack: NodeStack, path: str, mode=RW, kind=VOLUME, **kw) -> node_pb2.PhysicalDisk:
    return stack.adaptor.ConnectPhysicalDisk(
        node_pb2.ConnectPhysicalDiskRequest(
            disk=node_pb2.DiskRef(path=path, kind=kind), mode=mode, **kw
        ),
        timeout=30,
    )


def disconnect(stack: NodeStack, path: str, kind=VOLUME, force=False) -> bool:
    return stack.adaptor.DisconnectPhysicalDisk(
        node_pb2.DisconnectPhysicalDiskRequest(
            disk=node_pb2.DiskRef(path=path, kind=kind), force_allowed=force
        ),
        timeout=60,
    ).detached


def test_attach_write_read_detach_volume(node: NodeStack):
    path = node.volume("cs-vol-a", 64 << 20)
    gid = path.rsplit("/", 1)[1]
    disk = connect(node, path)
    assert (disk.path, disk.global_id, disk.size_bytes, disk.attached, disk.mode) == (
        path,
        gid,
        64 << 20,
        True,
        RW,
    )
    device = node.device(path)
    assert device.exists() and node.attachments() == [(gid, 1, "rw")]
    data = pattern(1, 1 << 20)
    with device.open("r+b") as handle:
        handle.seek(8 << 20)
        handle.write(data)
    # twice = idempotent, same device
    assert connect(node, path).path == path
    assert disconnect(node, path) is True
    assert not os.path.lexists(device) and node.attachments() == []
    assert disconnect(node, path) is False  # not attached any more: OK
    # the bytes went to StorPool: attach again (by name this time) and read them back
    connect(node, "/dev/storpool/cs-vol-a")
    with device.open("rb") as handle:
        handle.seek(8 << 20)
        assert handle.read(len(data)) == data
    disconnect(node, path)


def test_snapshot_attaches_read_only(node: NodeStack):
    path = node.volume("cs-vol-s", 16 << 20)
    gid = node.api.snapshot_create(path.replace("/dev/storpool-byid/", "~"), name="cs-snap-s")
    snap_path = f"/dev/storpool-byid/{gid}"
    with pytest.raises(grpc.RpcError) as rw:
        connect(node, snap_path, mode=RW, kind=SNAPSHOT)
    assert rw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "read-only" in rw.value.details()
    disk = connect(node, snap_path, mode=RO, kind=SNAPSHOT)
    assert (disk.kind, disk.mode) == (SNAPSHOT, RO)
    # unspecified kind finds the snapshot too
    assert (
        connect(
            node,
            snap_path,
            mode=types_pb2.ACCESS_MODE_UNSPECIFIED,
            kind=node_pb2.DISK_KIND_UNSPECIFIED,
        ).kind
        == SNAPSHOT
    )
    assert node.attachments() == [(gid, 1, "ro")]
    assert disconnect(node, snap_path, kind=SNAPSHOT) is True
    assert node.attachments() == []


def test_unknown_objects(node: NodeStack):
    with pytest.raises(grpc.RpcError) as missing:
        connect(node, "/dev/storpool-byid/emu.a.zzz")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "~emu.a.zzz" in missing.value.details()
    assert disconnect(node, "/dev/storpool-byid/emu.a.zzz") is False
    with pytest.raises(grpc.RpcError) as bad:
        connect(node, "/var/lib/libvirt/images/x.qcow2")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as empty:
        connect(node, "")
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "disk.path is required" in empty.value.details()


@pytest.mark.parametrize(
    "path",
    [
        "/dev/sdb",
        "/var/lib/libvirt/images/abc.qcow2",
        "/dev/disk/by-id/scsi-1",
        "rbd:pool/img",
        "/dev/storpool-byid/not_a_gid",
        "",
    ],
)
def test_disconnect_by_path_leaves_foreign_paths_to_other_adaptors(node: NodeStack, path: str):
    if not path:
        with pytest.raises(grpc.RpcError) as empty:
            node.adaptor.DisconnectPhysicalDiskByPath(
                node_pb2.DisconnectPhysicalDiskByPathRequest(path=path)
            )
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return
    reply = node.adaptor.DisconnectPhysicalDiskByPath(
        node_pb2.DisconnectPhysicalDiskByPathRequest(path=path)
    )
    assert (reply.handled, reply.detached) == (False, False)


def test_disconnect_by_path_detaches_storpool_devices(node: NodeStack):
    path = node.volume("cs-vol-p", 8 << 20)
    connect(node, path)
    reply = node.adaptor.DisconnectPhysicalDiskByPath(
        node_pb2.DisconnectPhysicalDiskByPathRequest(path=path)
    )
    assert (reply.handled, reply.detached) == (True, True)
    assert node.attachments() == []
    again = node.adaptor.DisconnectPhysicalDiskByPath(
        node_pb2.DisconnectPhysicalDiskByPathRequest(path=path)
    )
    assert (again.handled, again.detached) == (True, False)


def test_busy_device_then_force(node: NodeStack):
    path = node.volume("cs-vol-busy", 8 << 20)
    connect(node, path)
    holder = node.device(path).open("rb")  # the device is open, like a running VM
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as busy:
            disconnect(node, path, force=False)
        assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "still open" in busy.value.details() and "force_allowed" in busy.value.details()
        assert time.monotonic() - started >= 1.0  # it retried (3 attempts, 0.5 s apart)
        assert node.attachments() != []
        assert disconnect(node, path, force=True) is True
        assert node.attachments() == []
    finally:
        holder.close()
    assert "forcing the detach" in node.node.log_with("forcing the detach")


def test_device_wait_timeout_names_the_device(stack: NodeStack):
    # a node whose device root is not where the StorPool client puts the links
    stack.root = stack.tmp / "wrong-root"
    stack.root.mkdir()
    stack.start_node()
    path = stack.volume("cs-vol-w", 8 << 20)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as late:
        connect(stack, path, wait_timeout_ms=1500)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert str(stack.device(path)) in late.value.details()
    assert 1.4 < time.monotonic() - started < 10


def test_get_resize_delete(node: NodeStack):
    path = node.volume("cs-vol-g", 8 << 20)
    disk = node.adaptor.GetPhysicalDisk(
        node_pb2.GetPhysicalDiskRequest(disk=node_pb2.DiskRef(path=path))
    )
    assert (disk.size_bytes, disk.attached, disk.name) == (8 << 20, False, "cs-vol-g")
    grown = node.adaptor.ResizePhysicalDisk(
        node_pb2.ResizePhysicalDiskRequest(
            disk=node_pb2.DiskRef(path=path), new_size_bytes=16 << 20
        )
    )
    assert grown.size_bytes == 16 << 20 and node.api.volume("cs-vol-g").size == 16 << 20
    with pytest.raises(grpc.RpcError) as shrink:
        node.adaptor.ResizePhysicalDisk(
            node_pb2.ResizePhysicalDiskRequest(
                disk=node_pb2.DiskRef(path=path), new_size_bytes=4 << 20
            )
        )
    assert shrink.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert (
        node.adaptor.ResizePhysicalDisk(
            node_pb2.ResizePhysicalDiskRequest(
                disk=node_pb2.DiskRef(path=path), new_size_bytes=4 << 20, shrink_ok=True
            )
        ).size_bytes
        == 4 << 20
    )
    with pytest.raises(grpc.RpcError) as odd:
        node.adaptor.ResizePhysicalDisk(
            node_pb2.ResizePhysicalDiskRequest(
                disk=node_pb2.DiskRef(path=path), new_size_bytes=1000
            )
        )
    assert odd.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # a cached template snapshot, attached here: delete detaches and removes it
    gid = node.api.snapshot_create("cs-vol-g", name="cs-tmpl-t-p")
    snap = f"/dev/storpool-byid/{gid}"
    connect(node, snap, mode=RO, kind=SNAPSHOT)
    assert (
        node.adaptor.DeletePhysicalDisk(
            node_pb2.DeletePhysicalDiskRequest(disk=node_pb2.DiskRef(path=snap))
        ).deleted
        is True
    )
    assert node.api.snapshot_or_none(f"~{gid}") is None
    assert (
        node.adaptor.DeletePhysicalDisk(
            node_pb2.DeletePhysicalDiskRequest(disk=node_pb2.DiskRef(path=snap))
        ).deleted
        is False
    )


def test_modify_storage_pool_probe_and_resize_notify(node: NodeStack):
    reply = node.commands.ModifyStoragePool(
        node_pb2.ModifyStoragePoolRequest(pool_uuid="p1", add=True)
    )
    assert (
        reply.storpool_client_id,
        reply.storpool_cluster_id,
        reply.client_running,
        reply.host_id,
    ) == (1, "emu.a", True, "host-1")
    try:
        import libvirt  # noqa: F401
    except ImportError:
        with pytest.raises(grpc.RpcError) as no_libvirt:
            node.commands.ResizeNotify(
                node_pb2.ResizeNotifyRequest(
                    vm_name="i-2-3-VM", path="/dev/storpool-byid/emu.a.1", new_size_bytes=1 << 30
                )
            )
        assert no_libvirt.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "libvirt not available" in no_libvirt.value.details()
