"""Nothing outside the secondary store reaches a volume, and nothing half-written outlives a job."""

from __future__ import annotations

import os
import signal
import time

import grpc
import pytest

from spcs.v1 import node_pb2, types_pb2
from tests.node.test_commands import object_file, snapshot_of
from tests.stacks import NodeStack
from tests.support import log_containing, pattern, patterned_raw, qemu_img

MIB = 1 << 20
SECRET = b"SP_AUTH_TOKEN=the-secret-token-of-this-host\n" * 64


def hostile_template(node: NodeStack, case: str) -> str:
    """A template directory whose QCOW2 names a backing file outside the store."""
    secret = node.tmp / "storpool.conf"
    secret.write_bytes(SECRET.ljust(MIB, b"\0"))
    directory = node.secondary / "template" / "tmpl" / "2" / case
    directory.mkdir(parents=True)
    if case == "absolute":
        backing = str(secret)
    elif case == "dotdot":
        backing = os.path.relpath(secret, directory)
    else:  # a symlink inside the directory that leads out
        os.symlink(secret, directory / "base.raw")
        backing = "base.raw"
    qemu_img(
        "create", "-f", "qcow2", "-u", "-b", backing, "-F", "raw", str(directory / "t.qcow2"), "1M"
    )
    return f"template/tmpl/2/{case}", backing


@pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink"])
def test_a_template_backing_file_outside_the_store_is_refused(node: NodeStack, case: str):
    path, backing = hostile_template(node, case)
    volume = node.volume(f"cs-tmpldl-{case}", 4 * MIB)
    op = node.commands.DownloadTemplate(
        node_pb2.DownloadTemplateRequest(
            operation_id=f"evil-{case}",
            source=types_pb2.SecondaryStore(url=node.url),
            source_path=path,
            source_file_name="t.qcow2",
            destination_path=volume,
            resize_to_virtual_size=True,
        )
    )
    failed = node.wait(op.name)
    assert failed.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], failed.error
    assert backing in failed.error.message and "outside" in failed.error.message
    assert SECRET[:40] not in object_file(node, volume).read_bytes()


def test_a_backing_file_inside_the_store_is_followed(node: NodeStack):
    directory = node.secondary / "template" / "tmpl" / "2" / "chain"
    directory.mkdir(parents=True)
    patterned_raw(directory / "base.raw", 8 * MIB, {MIB: pattern(71, MIB)})
    qemu_img("create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", str(directory / "top.qcow2"))
    volume = node.volume("cs-tmpldl-chain", 4 * MIB)
    op = node.commands.DownloadTemplate(
        node_pb2.DownloadTemplateRequest(
            operation_id="chain",
            source=types_pb2.SecondaryStore(url=node.url),
            source_path="template/tmpl/2/chain",
            source_file_name="top.qcow2",
            destination_path=volume,
            resize_to_virtual_size=True,
        )
    )
    done = node.wait(op.name)
    assert not done.HasField("error"), done.error
    assert object_file(node, volume).read_bytes()[MIB : 2 * MIB] == pattern(71, MIB)


def test_a_template_image_without_its_properties_goes_at_the_next_start(node: NodeStack):
    """A node killed after the image is in place but before template.properties is written
    leaves a complete-looking image; the node's journal removes it when it starts again."""
    volume = node.volume("cs-vol-kill", 384 * MIB)
    snap = snapshot_of(node, volume, "cs-snap-kill", {0: os.urandom(384 * MIB)})
    op = node.commands.BackupTemplate(
        node_pb2.BackupTemplateRequest(
            operation_id="bt-kill",
            source=node_pb2.DiskRef(path=snap, kind=node_pb2.DISK_KIND_SNAPSHOT),
            destination=types_pb2.SecondaryStore(url=node.url),
            destination_dir="template/tmpl/2/501",
            template=types_pb2.Template(uuid="tmpl-kill", name="501-2-k", id=501),
            format=types_pb2.IMAGE_FORMAT_RAW,
        )
    )
    directory = node.secondary / "template/tmpl/2/501"
    deadline = time.monotonic() + 60
    while node.metadata(op.name).stage != "checksum":
        assert time.monotonic() < deadline, node.metadata(op.name)
        time.sleep(0.005)
    assert node.node is not None
    node.node.popen.send_signal(signal.SIGKILL)
    node.node.popen.wait(10)
    image = directory / "tmpl-kill.raw"
    assert image.exists() and not (directory / "template.properties").exists()
    node.start_node()
    deadline = time.monotonic() + 20
    while image.exists():
        assert time.monotonic() < deadline, "the image without properties was left"
        time.sleep(0.05)
    line = "left by interrupted job bt-kill"
    assert line in log_containing(node.node.log_path, line)
    assert sorted(p.name for p in directory.iterdir()) == []
    # the same job again: it completes, image and properties together
    node.commands.BackupTemplate(
        node_pb2.BackupTemplateRequest(
            operation_id="bt-kill",
            source=node_pb2.DiskRef(path=snap, kind=node_pb2.DISK_KIND_SNAPSHOT),
            destination=types_pb2.SecondaryStore(url=node.url),
            destination_dir="template/tmpl/2/501",
            template=types_pb2.Template(uuid="tmpl-kill", name="501-2-k", id=501),
            format=types_pb2.IMAGE_FORMAT_RAW,
        )
    )
    done = node.wait(op.name)
    assert not done.HasField("error"), done.error
    assert sorted(p.name for p in directory.iterdir()) == ["template.properties", image.name]
