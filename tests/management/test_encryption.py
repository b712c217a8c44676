"""Encrypted (LUKS) volumes end to end over gRPC, on loop devices: DATA volumes formatted by a
node, ROOT volumes written encrypted from a template, clones, snapshots, backups to secondary
storage (LUKS-encrypted QCOW2) and restores, resize, revert, the refusals (a template of an
encrypted volume, a backup without the passphrase, a compressed encrypted backup) and the
passphrase kept out of every log. qemu's own LUKS driver judges the bytes, with the passphrase
as a `secret` object; `cryptsetup luksDump` reads the header where Debian's cryptsetup-bin is
installed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2

from spcs.v1 import driver_pb2, lifecycle_pb2, strategies_pb2, types_pb2
from tests.management.helpers import MIB, OTHER_TEMPLATE, Mgmt, new_id, rpc_error, running_stack

PASSPHRASE = b"correct horse battery staple"
WRONG = b"not the passphrase"
LUKS = types_pb2.ENCRYPTION_FORMAT_LUKS
HEADER = 2 * MIB


@pytest.fixture(scope="module")
def mgmt(tmp_path_factory) -> Iterator[Mgmt]:
    with running_stack(tmp_path_factory.mktemp("luks"), loop=True) as stack:
        yield stack


def secret(passphrase: bytes) -> list[str]:
    return ["--object", f"secret,id=sec0,data={passphrase.decode()}"]


def luks_opts(path: Path | str) -> str:
    return f"driver=luks,key-secret=sec0,file.filename={path}"


def qcow2_opts(path: Path | str) -> str:
    return f"driver=qcow2,encrypt.key-secret=sec0,file.filename={path}"


def same(a: str, b: str, passphrase: bytes = PASSPHRASE) -> subprocess.CompletedProcess[str]:
    """qemu-img compare of two --image-opts images (exit 0: identical contents)."""
    return subprocess.run(
        ["qemu-img", "compare", *secret(passphrase), "--image-opts", a, b],
        capture_output=True,
        text=True,
        timeout=120,
    )


def plain(path: Path | str) -> str:
    return f"driver=raw,file.filename={path}"


def virtual_size(opts: str) -> int:
    out = subprocess.run(
        ["qemu-img", "info", *secret(PASSPHRASE), "--image-opts", opts],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("virtual size:"))
    return int(line.split("(")[1].split()[0])


def qemu_write(opts: str, offset: int, length: int, byte: int) -> None:
    subprocess.run(
        ["qemu-io", *secret(PASSPHRASE), "--image-opts", opts, "-c",
         f"write -P {byte} {offset} {length}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def encrypted_volume(mgmt: Mgmt, size: int = 16 * MIB, **fields) -> types_pb2.Volume:
    return mgmt.create_volume(size, encryption_format=LUKS, passphrase=PASSPHRASE, **fields)


def luks_volume(uuid: str = "", size: int = 0) -> types_pb2.Volume:
    return types_pb2.Volume(
        uuid=uuid or new_id("vol"), size_bytes=size, encryption_format=LUKS, passphrase=PASSPHRASE
    )


def failed(mgmt: Mgmt, request: driver_pb2.CopyDataRequest) -> operations_pb2.Operation:
    done = mgmt.wait(mgmt.driver.CopyData(request).name)
    assert done.HasField("error"), done
    return done


def test_a_data_volume_is_created_a_header_larger_and_formatted_by_a_node(mgmt: Mgmt, tmp_path):
    volume = encrypted_volume(mgmt, 16 * MIB, uuid=new_id("data"))
    assert volume.size_bytes == 16 * MIB and volume.encryption_format == LUKS
    assert not volume.passphrase  # never echoed
    obj = mgmt.api.volume(f"~{volume.global_id}")
    assert obj.size == 16 * MIB + HEADER
    assert obj.tags.get("spcs-enc") == "luks" and "spcs-filling" not in obj.tags
    device = mgmt.attach_here(volume.path)
    try:
        # as after cryptsetup luksFormat, the payload is not written: what the guest writes
        # through qemu's LUKS driver reads back, and the device holds only ciphertext
        assert virtual_size(luks_opts(device)) == 16 * MIB
        qemu_write(luks_opts(device), 3 * MIB, MIB, 0x6B)
        expected = tmp_path / "expected"
        with expected.open("wb") as handle:
            handle.write(bytes([0x6B]) * MIB)
        window = (
            f"driver=raw,offset={3 * MIB},size={MIB},file.driver=luks,file.key-secret=sec0,"
            f"file.file.filename={device}"
        )
        check = same(window, plain(expected))
        assert check.returncode == 0, check.stdout + check.stderr
        with open(device, "rb") as handle:
            handle.seek(HEADER + 3 * MIB)
            assert handle.read(4096) != bytes([0x6B]) * 4096
        wrong = same(window, plain(expected), WRONG)
        assert wrong.returncode != 0 and "invalid password" in wrong.stderr.lower()
        if shutil.which("cryptsetup"):
            dump = subprocess.run(
                ["cryptsetup", "luksDump", str(device)], capture_output=True, text=True, timeout=60
            )
            assert dump.returncode == 0, dump.stderr
            assert "aes" in dump.stdout and "xts-plain64" in dump.stdout
    finally:
        mgmt.detach_here(volume.path)
    # a replay is answered with the same volume (formatted once: it is no longer filling)
    again = encrypted_volume(mgmt, 16 * MIB, uuid=volume.uuid)
    assert again.path == volume.path
    # described back from StorPool: the guest's size, encrypted
    stats = mgmt.driver.GetVolumeStats(
        driver_pb2.GetVolumeStatsRequest(pool=mgmt.pool_ref(), volume_path=volume.path)
    )
    assert stats.size_bytes == 16 * MIB + HEADER


def test_an_encrypted_volume_needs_its_passphrase(mgmt: Mgmt):
    uuid = new_id("nopass")
    error = rpc_error(
        mgmt.driver.CreateVolume,
        driver_pb2.CreateVolumeRequest(
            pool=mgmt.pool_ref(),
            volume=types_pb2.Volume(uuid=uuid, size_bytes=8 * MIB, encryption_format=LUKS),
        ),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "passphrase" in error.details()
    bogus = rpc_error(
        mgmt.driver.CreateVolume,
        driver_pb2.CreateVolumeRequest(
            pool=mgmt.pool_ref(),
            volume=types_pb2.Volume(uuid=uuid, size_bytes=8 * MIB, encryption_format=7),
        ),
    )
    assert bogus.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "encryption_format" in bogus.details()
    assert not any(uuid in name for name in mgmt.storpool_names())


def test_a_root_volume_from_a_template_is_written_encrypted(mgmt: Mgmt):
    template, data = mgmt.template_on_secondary(301, 40 * MIB)
    destination = luks_volume()
    destination.store.CopyFrom(mgmt.primary())
    result = mgmt.copy(
        types_pb2.DataObject(template=template), types_pb2.DataObject(volume=destination)
    )
    root = result.result.volume
    assert result.kind == "template-to-volume" and root.encryption_format == LUKS
    assert root.size_bytes == 40 * MIB and not root.passphrase
    obj = mgmt.api.volume(f"~{root.global_id}")
    assert obj.size == 40 * MIB + HEADER and not obj.parent  # written, not a clone
    assert "spcs-filling" not in obj.tags
    image = mgmt.stack.secondary / template.path / "301.qcow2"
    device = mgmt.attach_here(root.path)
    try:
        check = same(luks_opts(device), f"driver=qcow2,file.filename={image}")
        assert check.returncode == 0, check.stdout + check.stderr
        # the payload really is ciphertext: the template's first bytes are not on the device
        with open(device, "rb") as handle:
            handle.seek(HEADER)
            assert handle.read(4096) != data[:4096]
    finally:
        mgmt.detach_here(root.path)


def write_through_qemu(mgmt: Mgmt, volume: types_pb2.Volume, writes: dict[int, int]) -> None:
    device = mgmt.attach_here(volume.path)
    try:
        for offset, byte in writes.items():
            qemu_write(luks_opts(device), offset, MIB, byte)
    finally:
        mgmt.detach_here(volume.path)


def decrypted(mgmt: Mgmt, path: str, into: Path, snapshot: bool = False) -> Path:
    """The guest's view of an encrypted volume or snapshot, as a plain raw file."""
    device = mgmt.attach_here(path, snapshot=snapshot)
    try:
        subprocess.run(
            ["qemu-img", "convert", *secret(PASSPHRASE), "--image-opts", luks_opts(device),
             "-O", "raw", str(into)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    finally:
        mgmt.detach_here(path)
    return into


def backup_request(
    mgmt: Mgmt, snap: types_pb2.Snapshot, passphrase: bytes = PASSPHRASE, **options
) -> driver_pb2.CopyDataRequest:
    source = types_pb2.Snapshot(path=snap.path, uuid=snap.uuid, passphrase=passphrase)
    source.store.CopyFrom(mgmt.primary())
    destination = types_pb2.Snapshot(uuid=snap.uuid, path="snapshots/2/77")
    destination.store.CopyFrom(mgmt.secondary())
    return driver_pb2.CopyDataRequest(
        operation_id=new_id("op"),
        source=types_pb2.DataObject(snapshot=source),
        destination=types_pb2.DataObject(snapshot=destination),
        options=driver_pb2.CopyOptions(**options),
    )


def test_snapshot_backup_and_restore_stay_encrypted(mgmt: Mgmt, tmp_path):
    volume = encrypted_volume(mgmt, 12 * MIB)
    write_through_qemu(mgmt, volume, {0: 0x5A, 7 * MIB: 0xC3})
    snap = mgmt.take_snapshot(volume.path)
    assert snap.encryption_format == LUKS and snap.size_bytes == 12 * MIB
    assert mgmt.api.snapshot(f"~{snap.global_id}").tags.get("spcs-enc") == "luks"
    guest = decrypted(mgmt, volume.path, tmp_path / "guest.raw")

    # without the passphrase, or compressed: refused, nothing written
    for request, words in (
        (backup_request(mgmt, snap, b""), "passphrase"),
        (backup_request(mgmt, snap, compression=types_pb2.COMPRESSION_ZSTD), "compress"),
    ):
        done = failed(mgmt, request)
        assert done.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], done.error
        assert words in done.error.message
    assert not (mgmt.stack.secondary / "snapshots/2/77" / snap.uuid).exists()

    result = mgmt.copy(
        backup_request(mgmt, snap).source,
        backup_request(mgmt, snap).destination,
    )
    backup = result.result.snapshot
    assert backup.encryption_format == LUKS and backup.format == types_pb2.IMAGE_FORMAT_QCOW2
    file = mgmt.stack.secondary / backup.path
    info = subprocess.run(["qemu-img", "info", str(file)], capture_output=True, text=True).stdout
    assert "encrypted: yes" in info
    check = same(qcow2_opts(file), plain(guest))
    assert check.returncode == 0, check.stdout + check.stderr
    assert PASSPHRASE not in file.read_bytes()

    # restored into a new encrypted volume: the same guest bytes
    source = types_pb2.Snapshot(path=backup.path, store=mgmt.secondary(), size_bytes=12 * MIB)
    destination = luks_volume()
    destination.store.CopyFrom(mgmt.primary())
    restored = mgmt.copy(
        types_pb2.DataObject(snapshot=source), types_pb2.DataObject(volume=destination)
    ).result.volume
    assert restored.encryption_format == LUKS and restored.size_bytes == 12 * MIB
    assert mgmt.api.volume(f"~{restored.global_id}").tags.get("spcs-enc") == "luks"
    check = same(plain(decrypted(mgmt, restored.path, tmp_path / "restored.raw")), plain(guest))
    assert check.returncode == 0, check.stdout + check.stderr

    # a clone of the encrypted snapshot is encrypted with the same passphrase
    clone_to = luks_volume()
    clone_to.store.CopyFrom(mgmt.primary())
    from_snapshot = types_pb2.Snapshot(path=snap.path, store=mgmt.primary())
    clone = mgmt.copy(
        types_pb2.DataObject(snapshot=from_snapshot), types_pb2.DataObject(volume=clone_to)
    ).result.volume
    assert clone.encryption_format == LUKS and clone.size_bytes == 12 * MIB
    check = same(plain(decrypted(mgmt, clone.path, tmp_path / "clone.raw")), plain(guest))
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_backup_strategy_and_an_export_write_encrypted_files(mgmt: Mgmt, tmp_path):
    volume = encrypted_volume(mgmt, 8 * MIB)
    write_through_qemu(mgmt, volume, {MIB: 0x11})
    guest = decrypted(mgmt, volume.path, tmp_path / "guest.raw")
    snap = mgmt.take_snapshot(volume.path)
    op = mgmt.snapshots.BackupSnapshot(
        strategies_pb2.BackupSnapshotRequest(
            operation_id=new_id("op"),
            snapshot=types_pb2.Snapshot(path=snap.path, uuid=snap.uuid, passphrase=PASSPHRASE),
            pool=mgmt.pool_ref(),
            destination=types_pb2.SecondaryStore(url=mgmt.url),
            destination_path=f"snapshots/2/78/{snap.uuid}",
        )
    )
    done = mgmt.wait(op.name)
    assert not done.HasField("error"), done.error
    file = mgmt.stack.secondary / "snapshots/2/78" / snap.uuid
    assert same(qcow2_opts(file), plain(guest)).returncode == 0

    source = types_pb2.Volume(path=volume.path, uuid=volume.uuid, passphrase=PASSPHRASE)
    source.store.CopyFrom(mgmt.primary())
    exported = mgmt.copy(
        types_pb2.DataObject(volume=source),
        types_pb2.DataObject(volume=types_pb2.Volume(path="volumes/2/31", store=mgmt.secondary())),
    ).result.volume
    assert exported.encryption_format == LUKS
    assert same(qcow2_opts(mgmt.stack.secondary / exported.path), plain(guest)).returncode == 0
    # and imported back: encrypted again
    back = luks_volume()
    back.store.CopyFrom(mgmt.primary())
    imported = mgmt.copy(
        types_pb2.DataObject(volume=types_pb2.Volume(path=exported.path, store=mgmt.secondary())),
        types_pb2.DataObject(volume=back),
    ).result.volume
    assert imported.encryption_format == LUKS
    check = same(plain(decrypted(mgmt, imported.path, tmp_path / "back.raw")), plain(guest))
    assert check.returncode == 0, check.stdout + check.stderr


def test_resize_keeps_the_header_and_revert_restores_the_data(mgmt: Mgmt, tmp_path):
    volume = encrypted_volume(mgmt, 8 * MIB)
    write_through_qemu(mgmt, volume, {0: 0x21})
    before = decrypted(mgmt, volume.path, tmp_path / "before.raw")
    snap = mgmt.take_snapshot(volume.path)
    write_through_qemu(mgmt, volume, {0: 0x42})

    grown = mgmt.driver.ResizeVolume(
        driver_pb2.ResizeVolumeRequest(
            pool=mgmt.pool_ref(), volume=types_pb2.Volume(path=volume.path),
            new_size_bytes=20 * MIB,
        )
    )  # fmt: skip
    assert grown.size_bytes == 20 * MIB and grown.encryption_format == LUKS
    assert mgmt.api.volume(f"~{volume.global_id}").size == 20 * MIB + HEADER
    device = mgmt.attach_here(volume.path)
    try:
        assert virtual_size(luks_opts(device)) == 20 * MIB
    finally:
        mgmt.detach_here(volume.path)
    shrink = rpc_error(
        mgmt.driver.ResizeVolume,
        driver_pb2.ResizeVolumeRequest(
            pool=mgmt.pool_ref(), volume=types_pb2.Volume(path=volume.path),
            new_size_bytes=10 * MIB,
        ),
    )  # fmt: skip
    assert shrink.code() == grpc.StatusCode.OUT_OF_RANGE and str(20 * MIB) in shrink.details()

    mgmt.driver.RevertSnapshot(
        driver_pb2.RevertSnapshotRequest(
            pool=mgmt.pool_ref(),
            snapshot=types_pb2.Snapshot(path=snap.path),
            volume=types_pb2.Volume(path=volume.path),
        )
    )
    after = decrypted(mgmt, volume.path, tmp_path / "after.raw")
    # StorPool keeps the volume's (grown) size on a revert; the snapshot's bytes come back
    assert after.stat().st_size == 20 * MIB
    assert after.read_bytes()[: 8 * MIB] == before.read_bytes()


def test_no_template_of_an_encrypted_volume_and_no_delay_delete_backup(mgmt: Mgmt):
    volume = encrypted_volume(mgmt, 8 * MIB)
    source = types_pb2.Volume(path=volume.path, store=mgmt.primary())
    template = types_pb2.Template(
        uuid=new_id("tmpl"), path="template/tmpl/2/401", store=mgmt.secondary()
    )
    done = failed(
        mgmt,
        driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(volume=source),
            destination=types_pb2.DataObject(template=template),
        ),
    )
    assert done.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "encrypted" in done.error.message and volume.global_id in done.error.message
    assert not (mgmt.stack.secondary / "template/tmpl/2/401").exists()

    pool = mgmt.add_pool(OTHER_TEMPLATE)
    mgmt.lifecycle.UpdatePool(
        lifecycle_pb2.UpdatePoolRequest(
            pool_uuid=pool, details={"storpool.delete.after.interval": "3600"}
        )
    )
    doomed = mgmt.driver.CreateVolume(
        driver_pb2.CreateVolumeRequest(pool=mgmt.pool_ref(pool), volume=luks_volume(size=4 * MIB))
    )
    gone = mgmt.driver.DeleteData(
        driver_pb2.DeleteDataRequest(
            pool=mgmt.pool_ref(pool), object=types_pb2.DataObject(volume=doomed)
        )
    )
    assert gone.deleted and not gone.HasField("delay_delete_backup")


def test_the_passphrase_reaches_no_log_and_no_record(mgmt: Mgmt):
    volume = encrypted_volume(mgmt, 4 * MIB)
    assert volume.encryption_format == LUKS
    # every log of the stack (the module's tests all sent it) and every database file
    records = [*(mgmt.stack.workdir / "logs").iterdir(), *mgmt.stack.workdir.rglob("*.db*")]
    assert len(records) > 3
    for record in records:
        assert PASSPHRASE not in record.read_bytes(), record
    capabilities = mgmt.driver.GetDriverCapabilities(driver_pb2.GetDriverCapabilitiesRequest())
    assert capabilities.capabilities["VOLUME_ENCRYPTION"] == "true"
