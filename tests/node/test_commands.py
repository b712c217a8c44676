"""Agent commands move real bytes between StorPool (the emulator) and secondary storage."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2

from spcs.node import template_properties
from spcs.v1 import node_pb2, types_pb2
from tests.stacks import NodeStack
from tests.support import pattern, patterned_raw, qemu_img, same_content

MIB = 1 << 20


def make_template(
    stack: NodeStack, name: str = "tmpl.qcow2", size: int = 96 * MIB, compress: bool = False
) -> tuple[Path, Path]:
    """A QCOW2 template in a CloudStack-like template directory, and its raw original."""
    raw = patterned_raw(
        stack.tmp / "template.raw",
        size,
        {0: pattern(1, 3 * MIB), 40 * MIB: pattern(2, 5 * MIB), size - MIB: pattern(3, MIB)},
    )
    directory = stack.secondary / "template" / "tmpl" / "2" / "201"
    directory.mkdir(parents=True)
    image = directory / name
    qemu_img(
        "convert", "-f", "raw", "-O", "qcow2", *(["-c"] if compress else []), str(raw), str(image)
    )
    (directory / "template.properties").write_text("uniquename=201-2-abc\n")
    return image, raw


def snapshot_of(stack: NodeStack, volume: str, name: str, writes: dict[int, bytes]) -> str:
    """Write bytes into a volume through its device, snapshot it; returns the snapshot path."""
    stack.adaptor.ConnectPhysicalDisk(
        node_pb2.ConnectPhysicalDiskRequest(disk=node_pb2.DiskRef(path=volume))
    )
    with stack.device(volume).open("r+b") as handle:
        for offset, data in writes.items():
            handle.seek(offset)
            handle.write(data)
    stack.adaptor.DisconnectPhysicalDisk(
        node_pb2.DisconnectPhysicalDiskRequest(disk=node_pb2.DiskRef(path=volume))
    )
    gid = stack.api.snapshot_create(volume.replace("/dev/storpool-byid/", "~"), name=name)
    return f"/dev/storpool-byid/{gid}"


def object_file(stack: NodeStack, path: str, kind=node_pb2.DISK_KIND_VOLUME) -> Path:
    """Read access to a StorPool object's bytes: attach it here and return the device."""
    mode = types_pb2.ACCESS_MODE_READ_ONLY if kind == node_pb2.DISK_KIND_SNAPSHOT else 0
    stack.adaptor.ConnectPhysicalDisk(
        node_pb2.ConnectPhysicalDiskRequest(disk=node_pb2.DiskRef(path=path, kind=kind), mode=mode)
    )
    return stack.device(path)


def result_of(stack: NodeStack, op, message):
    done = stack.wait(op.name)
    assert not done.HasField("error"), done.error
    assert done.response.Unpack(message)
    return message


@pytest.mark.parametrize("compress", [False, True])
def test_download_template_into_volume(node: NodeStack, compress: bool):
    _image, raw = make_template(node, compress=compress)
    volume = node.volume("cs-tmpldl-t-p", 8 * MIB)  # smaller: the node grows it
    op = node.commands.DownloadTemplate(
        node_pb2.DownloadTemplateRequest(
            operation_id="dl-1",
            source=types_pb2.SecondaryStore(url=node.url),
            source_path="template/tmpl/2/201",
            destination_path=volume,
            resize_to_virtual_size=True,
            target_is_zero=True,
        )
    )
    result = result_of(node, op, node_pb2.DownloadResult())
    assert (result.virtual_size_bytes, result.volume_size_bytes) == (96 * MIB, 96 * MIB)
    assert result.bytes_written >= 9 * MIB
    assert node.api.volume("cs-tmpldl-t-p").size == 96 * MIB
    assert node.attachments() == []  # detached again
    assert same_content(raw, object_file(node, volume))
    meta = node.metadata(op.name)
    assert (meta.state, meta.bytes_done, meta.bytes_total, meta.host_id) == (
        types_pb2.JOB_STATE_SUCCEEDED,
        96 * MIB,
        96 * MIB,
        "host-1",
    )


def test_download_template_picks_files_and_refuses_ambiguity(node: NodeStack):
    image, raw = make_template(node)
    (image.parent / "other.qcow2").write_bytes(image.read_bytes())
    volume = node.volume("cs-vol-amb", 96 * MIB)
    op = node.commands.DownloadTemplate(
        node_pb2.DownloadTemplateRequest(
            operation_id="dl-amb",
            source=types_pb2.SecondaryStore(url=node.url),
            source_path="template/tmpl/2/201",
            destination_path=volume,
        )
    )
    failed = node.wait(op.name)
    assert failed.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "other.qcow2" in failed.error.message and "tmpl.qcow2" in failed.error.message
    named = node.commands.DownloadTemplate(
        node_pb2.DownloadTemplateRequest(
            operation_id="dl-named",
            source=types_pb2.SecondaryStore(url=node.url),
            source_path="template/tmpl/2/201",
            source_file_name="tmpl.qcow2",
            destination_path=volume,
        )
    )
    result_of(node, named, node_pb2.DownloadResult())
    assert same_content(raw, object_file(node, volume))


def test_download_without_resize_needs_a_big_enough_volume(node: NodeStack):
    make_template(node)
    small = node.volume("cs-vol-small", 8 * MIB)
    op = node.commands.DownloadTemplate(
        node_pb2.DownloadTemplateRequest(
            operation_id="dl-small",
            source=types_pb2.SecondaryStore(url=node.url),
            source_path="template/tmpl/2/201",
            destination_path=small,
        )
    )
    failed = node.wait(op.name)
    assert failed.error.code == grpc.StatusCode.OUT_OF_RANGE.value[0]
    assert "resize_to_virtual_size" in failed.error.message
    assert node.api.volume("cs-vol-small").size == 8 * MIB


@pytest.mark.parametrize(
    ("fmt", "compression"),
    [
        (types_pb2.IMAGE_FORMAT_QCOW2, types_pb2.COMPRESSION_NONE),
        (types_pb2.IMAGE_FORMAT_QCOW2, types_pb2.COMPRESSION_ZSTD),
        (types_pb2.IMAGE_FORMAT_RAW, types_pb2.COMPRESSION_NONE),
    ],
)
def test_backup_snapshot_to_secondary(node: NodeStack, fmt, compression):
    volume = node.volume("cs-vol-b", 64 * MIB)
    snap = snapshot_of(node, volume, "cs-snap-b", {MIB: pattern(7, 2 * MIB), 60 * MIB: b"end"})
    # the volume changes after the snapshot: the backup must hold the snapshot's bytes
    snapshot_of(node, volume, "cs-snap-later", {MIB: b"changed later"})
    op = node.commands.BackupSnapshot(
        node_pb2.NodeBackupSnapshotRequest(
            operation_id="bk-1",
            snapshot_path=snap,
            destination=types_pb2.SecondaryStore(url=node.url),
            destination_path="snapshots/2/15/snap-uuid",
            format=fmt,
            compression=compression,
        )
    )
    result = result_of(node, op, node_pb2.BackupResult())
    backup = node.secondary / "snapshots/2/15/snap-uuid"
    assert result.path == "snapshots/2/15/snap-uuid" and backup.is_file()
    assert result.physical_size_bytes == backup.stat().st_size
    assert result.virtual_size_bytes == 64 * MIB
    info = qemu_img("info", "--output=json", str(backup))
    name = "qcow2" if fmt == types_pb2.IMAGE_FORMAT_QCOW2 else "raw"
    assert f'"format": "{name}"' in info
    if name == "qcow2":
        assert '"check-errors"' not in qemu_img("check", str(backup))
    assert node.attachments() == []
    assert same_content(object_file(node, snap, node_pb2.DISK_KIND_SNAPSHOT), backup, "raw", name)
    assert not list(backup.parent.glob(".*spcs-partial*"))


def test_backup_template_writes_template_properties(node: NodeStack):
    volume = node.volume("cs-vol-t", 48 * MIB)
    snap = snapshot_of(node, volume, "cs-snap-t", {0: pattern(9, 4 * MIB)})
    op = node.commands.BackupTemplate(
        node_pb2.BackupTemplateRequest(
            operation_id="bt-1",
            source=node_pb2.DiskRef(path=snap, kind=node_pb2.DISK_KIND_SNAPSHOT),
            destination=types_pb2.SecondaryStore(url=node.url),
            destination_dir="template/tmpl/2/305",
            template=types_pb2.Template(
                uuid="0a1b2c3d-tmpl", name="305-2-0a1b", id=305, description="from snapshot"
            ),
        )
    )
    result = result_of(node, op, node_pb2.TemplateResult())
    directory = node.secondary / "template/tmpl/2/305"
    image = directory / "0a1b2c3d-tmpl.qcow2"
    assert (result.install_path, result.file_name) == ("template/tmpl/2/305", image.name)
    props = template_properties.parse((directory / "template.properties").read_text())
    md5 = hashlib.md5(image.read_bytes()).hexdigest()
    size = str(image.stat().st_size)
    assert props == {
        "id": "305",
        "public": "true",
        "uniquename": "305-2-0a1b",
        "filename": image.name,
        "virtualsize": str(48 * MIB),
        "size": size,
        "qcow2": "true",
        "qcow2.filename": image.name,
        "qcow2.size": size,
        "qcow2.virtualsize": str(48 * MIB),
        "checksum": md5,
        "description": "from snapshot",
    }
    assert result.checksum == md5
    assert same_content(object_file(node, snap, node_pb2.DISK_KIND_SNAPSHOT), image, "raw", "qcow2")


def test_copy_volume_to_secondary_and_download_it_back(node: NodeStack):
    volume = node.volume("cs-vol-c", 32 * MIB)
    snapshot_of(node, volume, "cs-snap-c", {5 * MIB: pattern(11, 3 * MIB)})
    op = node.commands.CopyVolumeToSecondary(
        node_pb2.CopyVolumeToSecondaryRequest(
            operation_id="cv-1",
            source=node_pb2.DiskRef(path=volume),
            volume_uuid="vol-uuid-1",
            destination=types_pb2.SecondaryStore(url=node.url),
            destination_dir="volumes/2/31",
        )
    )
    result = result_of(node, op, node_pb2.BackupResult())
    exported = node.secondary / "volumes/2/31/vol-uuid-1.qcow2"
    assert result.path == "volumes/2/31/vol-uuid-1.qcow2" and exported.is_file()
    # round trip into a fresh volume
    target = node.volume("cs-vol-back", 32 * MIB)
    back = node.commands.DownloadVolume(
        node_pb2.DownloadVolumeRequest(
            operation_id="dv-1",
            source=types_pb2.SecondaryStore(url=node.url),
            source_path=result.path,
            destination_path=target,
        )
    )
    assert result_of(node, back, node_pb2.DownloadResult()).virtual_size_bytes == 32 * MIB
    original = object_file(node, volume)
    copy = object_file(node, target)
    assert same_content(original, copy)
    assert original.read_bytes()[5 * MIB : 8 * MIB] == pattern(11, 3 * MIB)


def test_replay_same_operation_and_conflicts(node: NodeStack):
    make_template(node, size=512 * MIB)
    volume = node.volume("cs-vol-r", 512 * MIB)
    request = node_pb2.DownloadTemplateRequest(
        operation_id="dl-r",
        source=types_pb2.SecondaryStore(url=node.url),
        source_path="template/tmpl/2/201",
        destination_path=volume,
    )
    first = node.commands.DownloadTemplate(request)
    again = node.commands.DownloadTemplate(request)
    assert again.name == first.name
    other = node_pb2.DownloadTemplateRequest()
    other.CopyFrom(request)
    other.source_file_name = "tmpl.qcow2"
    with pytest.raises(grpc.RpcError) as different:
        node.commands.DownloadTemplate(other)
    assert different.value.code() == grpc.StatusCode.ALREADY_EXISTS
    other.operation_id = "dl-r2"  # another job on the same volume while the first runs
    with pytest.raises(grpc.RpcError) as busy:
        node.commands.DownloadTemplate(other)
    if busy.value.code() != grpc.StatusCode.ABORTED:
        pytest.fail(f"expected ABORTED, got {busy.value.code()}: {busy.value.details()}")
    assert "dl-r" in busy.value.details()
    node.wait(first.name)
    # once the first finished the volume is free again
    result_of(node, node.commands.DownloadTemplate(other), node_pb2.DownloadResult())


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd-copy", "snapshots/../../x", ""])
def test_path_traversal_is_refused(node: NodeStack, bad: str):
    volume = node.volume("cs-vol-x", 8 * MIB)
    snap = snapshot_of(node, volume, "cs-snap-x", {0: b"x"})
    with pytest.raises(grpc.RpcError) as refused:
        op = node.commands.BackupSnapshot(
            node_pb2.NodeBackupSnapshotRequest(
                operation_id=f"bk-{abs(hash(bad))}",
                snapshot_path=snap,
                destination=types_pb2.SecondaryStore(url=node.url),
                destination_path=bad,
            )
        )
        failed = node.wait(op.name)
        raise AssertionError(failed.error)  # must not even start
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_symlink_escaping_the_store_is_refused(node: NodeStack):
    outside = node.tmp / "outside"
    outside.mkdir()
    (node.secondary / "snapshots").mkdir()
    os.symlink(outside, node.secondary / "snapshots" / "evil")
    volume = node.volume("cs-vol-y", 8 * MIB)
    snap = snapshot_of(node, volume, "cs-snap-y", {0: b"y"})
    op = node.commands.BackupSnapshot(
        node_pb2.NodeBackupSnapshotRequest(
            operation_id="bk-evil",
            snapshot_path=snap,
            destination=types_pb2.SecondaryStore(url=node.url),
            destination_path="snapshots/evil/s1",
        )
    )
    failed = node.wait(op.name)
    assert failed.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "outside" in failed.error.message
    assert list(outside.iterdir()) == []


def test_bad_store_urls(node: NodeStack):
    """An unsupported URL and a store this node does not serve fail the call itself; a served
    store that does not exist on this host fails the job."""
    volume = node.volume("cs-vol-u", 8 * MIB)
    before = node.device(volume).read_bytes()[:4096] if node.device(volume).exists() else b""

    def download(operation_id: str, url: str, path: str) -> operations_pb2.Operation:
        return node.commands.DownloadVolume(
            node_pb2.DownloadVolumeRequest(
                operation_id=operation_id,
                source=types_pb2.SecondaryStore(url=url),
                source_path=path,
                destination_path=volume,
            )
        )

    for url, code, text in (
        ("smb://x/y", grpc.StatusCode.INVALID_ARGUMENT, "not supported"),
        # a host file through a store URL nobody configured
        ("file:///etc", grpc.StatusCode.PERMISSION_DENIED, "--secondary-store"),
        (f"file://{node.tmp}", grpc.StatusCode.PERMISSION_DENIED, "secondary_store"),
        ("nfs://evil.example/export", grpc.StatusCode.PERMISSION_DENIED, "secondary_store"),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            download(f"u-{code.name}", url, "passwd")
        assert refused.value.code() == code and text in refused.value.details(), url
    if before:
        assert node.device(volume).read_bytes()[:4096] == before
    op = download("u-missing", f"{node.url}/missing", "a.qcow2")
    assert node.wait(op.name).error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
