"""The demo's story: a CloudStack-like lifecycle driven over gRPC, with real bytes.

Every step prints one line: what it did, how long it took, how many bytes the data mover wrote
and at what rate, and the integrity check (a SHA-256 of the data, compared with what it must
be). The "VM" is this process: it reads and writes the volumes through the device links the
node services attach on the emulated hosts.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

from spcs import datamover
from spcs.demo.stack import TEMPLATE, Stack
from spcs.storpool.api import StorPoolApi
from spcs.v1 import (
    driver_pb2,
    driver_pb2_grpc,
    hosts_pb2,
    hosts_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    strategies_pb2,
    strategies_pb2_grpc,
    types_pb2,
)

GIB = 1 << 30
MIB = 1 << 20
CHUNK = 4 * MIB
LUKS_HEADER = 2 * MIB  # where a LUKS volume's payload starts
DIRECT_TEMPLATE = "demo-template-url"  # a direct-download template (fetched from its URL)
PASSPHRASE = b"demo passphrase"  # the encrypted volume's (CloudStack would hand its own)
DELAY_DELETE = "storpool.delete.after.interval"  # the pool detail, as the Java plugin names it


class DemoFailure(Exception):
    """A step did not do what it must (a checksum mismatch, a wrong state)."""


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def digest(path: Path, length: int | None = None) -> str:
    """SHA-256 of the first `length` bytes of a device or file (all of it when None)."""
    sha = hashlib.sha256()
    remaining = length
    with path.open("rb") as handle:
        while remaining is None or remaining > 0:
            block = handle.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not block:
                break
            sha.update(block)
            if remaining is not None:
                remaining -= len(block)
    return sha.hexdigest()


def pattern(seed: int, length: int) -> bytes:
    block = hashlib.sha256(f"spcs-demo-{seed}".encode()).digest() * (MIB // 32)
    return (block * (length // len(block) + 1))[:length]


@dataclass
class Step:
    what: str
    seconds: float = 0.0
    written: int = 0
    processed: int = 0
    check: str = ""
    # time spent verifying (hashing), not counted in `seconds`
    check_seconds: float = 0.0

    @contextmanager
    def checking(self) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.check_seconds += time.monotonic() - started


@dataclass
class Story:
    stack: Stack
    template_size: int = 2 * GIB
    out = sys.stdout
    steps: list[Step] = field(default_factory=list)
    channel: grpc.Channel | None = None
    pool: str = "pool-demo"
    # the direct-download web server serving the secondary store's files ("" = skip that step)
    web_url: str = ""

    # ---- plumbing --------------------------------------------------------------------------

    @property
    def open_channel(self) -> grpc.Channel:
        """The channel to the management service (`run` opens it)."""
        assert self.channel is not None, "the story is not running"
        return self.channel

    @property
    def lifecycle(self) -> lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub:
        return lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(self.open_channel)

    @property
    def driver(self) -> driver_pb2_grpc.PrimaryDataStoreDriverStub:
        return driver_pb2_grpc.PrimaryDataStoreDriverStub(self.open_channel)

    @property
    def operations(self) -> operations_pb2_grpc.OperationsStub:
        return operations_pb2_grpc.OperationsStub(self.open_channel)

    def primary(self) -> types_pb2.DataStore:
        return types_pb2.DataStore(primary=types_pb2.PrimaryStore(pool_uuid=self.pool))

    def secondary(self) -> types_pb2.DataStore:
        return types_pb2.DataStore(
            secondary=types_pb2.SecondaryStore(url=f"file://{self.stack.secondary}")
        )

    def storpool(self) -> StorPoolApi:
        """Direct StorPool access, only to show what the services did."""
        emu = self.stack.emulator
        assert emu is not None
        return StorPoolApi(emu.host, emu.port, emu.token)

    def device(self, path: str, host: int) -> Path:
        return self.stack.device_root(host) / "storpool-byid" / path.rsplit("/", 1)[1]

    def run_step(self, what: str, action: Callable[[Step], None]) -> Step:
        step = Step(what)
        started = time.monotonic()
        action(step)
        step.seconds = time.monotonic() - started - step.check_seconds
        self.steps.append(step)
        self._print(step)
        return step

    def _print(self, step: Step) -> None:
        moved = human(step.written) if step.written else "-"
        rate = (
            f"{human(step.processed / step.seconds)}/s" if step.processed and step.seconds else ""
        )
        line = (
            f"{len(self.steps):>2}. {step.what:<50} {step.seconds:7.2f}s  {moved:>10}  {rate:>12}"
        )
        if step.check:
            line += f"  {step.check}"
        if step.check_seconds >= 0.05:
            line += f" (checked in {step.check_seconds:.1f}s)"
        self._clear_progress()
        print(line, file=self.out, flush=True)

    def _clear_progress(self) -> None:
        if self.out.isatty():
            print("\r\033[K", end="", file=self.out)

    @staticmethod
    def sha(step: Step, path: Path, length: int) -> str:
        with step.checking():
            return digest(path, length)

    @staticmethod
    def sha_image(step: Step, path: Path, length: int) -> str:
        with step.checking():
            return digest_image(path, length)

    def copy(
        self,
        source: types_pb2.DataObject,
        destination: types_pb2.DataObject,
        step: Step,
        options: driver_pb2.CopyOptions | None = None,
    ) -> driver_pb2.CopyDataResult:
        """CopyData, following the operation with a progress bar."""
        name = f"demo-{len(self.steps) + 1}-{int(time.time() * 1000)}"
        op = self.driver.CopyData(
            driver_pb2.CopyDataRequest(
                operation_id=name,
                source=source,
                destination=destination,
                options=options if options is not None else driver_pb2.CopyOptions(),
            )
        )
        while not op.done:
            op = self.operations.WaitOperation(operations_pb2.WaitOperationRequest(name=op.name))
            self._progress(op)
        if op.HasField("error"):
            raise DemoFailure(f"{step.what}: copy failed: {op.error.message}")
        result = driver_pb2.CopyDataResult()
        op.response.Unpack(result)
        meta = types_pb2.OperationMetadata()
        op.metadata.Unpack(meta)
        step.written = result.bytes_written
        step.processed = meta.bytes_done if result.bytes_written else 0
        return result

    def _progress(self, op: operations_pb2.Operation) -> None:
        if not self.out.isatty():
            return
        meta = types_pb2.OperationMetadata()
        op.metadata.Unpack(meta)
        if not meta.bytes_total:
            print(f"\r\033[K    {meta.stage}", end="", file=self.out, flush=True)
            return
        fraction = min(1.0, meta.bytes_done / meta.bytes_total)
        bar = "#" * int(fraction * 30)
        print(
            f"\r\033[K    [{bar:<30}] {fraction:4.0%} {human(meta.bytes_done)}/"
            f"{human(meta.bytes_total)} {human(meta.rate_bytes_per_second)}/s  {meta.stage}",
            end="",
            file=self.out,
            flush=True,
        )

    @staticmethod
    def expect(step: Step, what: str, actual: object, expected: object) -> None:
        if actual != expected:
            raise DemoFailure(f"{step.what}: {what} is {actual!r}, expected {expected!r}")
        shown = str(expected)
        step.check = f"ok: {what}" if len(shown) > 24 else f"ok: {what} = {shown}"

    # ---- the story -------------------------------------------------------------------------

    def run(self) -> None:
        assert self.stack.management is not None
        self.channel = grpc.insecure_channel(self.stack.management.address)
        try:
            self._story()
        finally:
            self.channel.close()

    def _story(self) -> None:
        template, template_sha = self._make_template()
        self._add_pool()
        root1 = self._root_from_template(template, template_sha, first=True)
        root2 = self._root_from_template(template, template_sha, first=False)
        encrypted = self._encrypted_root(template, template_sha)
        direct = self._direct_download_root(template_sha)
        data, data_sha = self._data_volume()
        snapshot = self._snapshot(data)
        backup = self._backup(snapshot, data_sha)
        restored = self._volume_from_backup(backup, data_sha)
        self._resize(data)
        self._revert(data, snapshot, data_sha)
        self._migrate([root1, data])
        made = self._template_from_volume(data, data_sha)
        extracted = self._download_volume(data, data_sha)
        undeleted, backup = self._delay_delete(restored, data_sha)
        self._copy_to_zone2(snapshot, data_sha)
        volumes = [root1, root2, encrypted, direct, data, undeleted]
        self._delete_everything(volumes, [snapshot, backup], made, template, extracted)
        self._delete_pool()

    def _make_template(self) -> tuple[types_pb2.Template, str]:
        directory = self.stack.secondary / "template" / "tmpl" / "2" / "201"
        template = types_pb2.Template(
            uuid="demo-template",
            name="201-2-demo",
            id=201,
            path="template/tmpl/2/201",
            store=self.secondary(),
            format=types_pb2.IMAGE_FORMAT_QCOW2,
        )
        result: dict[str, str] = {}

        def make(step: Step) -> None:
            directory.mkdir(parents=True, exist_ok=True)
            raw = self.stack.workdir / "template.raw"
            with raw.open("wb") as handle:  # sparse, with a patterned 8 MiB every 256 MiB
                handle.truncate(self.template_size)
                for n, offset in enumerate(range(0, self.template_size, 256 * MIB)):
                    handle.seek(offset)
                    handle.write(pattern(n, 8 * MIB))
            stats = datamover.convert(
                raw,
                directory / "demo.qcow2",
                src_format="raw",
                dst_format="qcow2",
                checksum="sha256",
            )
            raw.unlink()
            result["sha"] = stats.checksum or ""
            step.written, step.processed = stats.bytes_written, stats.virtual_size
            step.check = f"{human(self.template_size)} QCOW2 template, sha256 {result['sha'][:12]}"

        self.run_step("make a patterned QCOW2 template (secondary)", make)
        return template, result["sha"]

    def _add_pool(self) -> None:
        emu = self.stack.emulator
        assert emu is not None

        def add(step: Step) -> None:
            url = (
                f"SP_API_HTTP={emu.host}:{emu.port};SP_AUTH_TOKEN={emu.token};"
                f"SP_TEMPLATE={TEMPLATE}"
            )
            self.lifecycle.InitializePool(
                lifecycle_pb2.InitializePoolRequest(
                    pool_uuid=self.pool,
                    name="storpool-demo",
                    url=url,
                    zone_id="zone-1",
                    capacity_bytes=512 * GIB,
                )
            )
            pool = self.lifecycle.AttachZone(
                lifecycle_pb2.AttachZoneRequest(
                    pool_uuid=self.pool, zone_id="zone-1", hypervisor="KVM"
                )
            )
            self.expect(
                step, "pool state", lifecycle_pb2.PoolState.Name(pool.state), "POOL_STATE_UP"
            )

        self.run_step("add primary storage (StorPool template spcs-demo)", add)

        def connect(step: Step) -> None:
            hosts = hosts_pb2_grpc.HostListenerStub(self.open_channel)
            connected = [
                hosts.HostConnect(
                    hosts_pb2.HostConnectRequest(host_id=f"host-{n}", pool_uuid=self.pool)
                ).connected
                for n in (1, 2)
            ]
            self.expect(step, "hosts connected", connected, [True, True])

        self.run_step("connect KVM hosts host-1 and host-2", connect)

    def _root_from_template(
        self, template: types_pb2.Template, sha: str, first: bool
    ) -> types_pb2.Volume:
        holder: dict[str, types_pb2.Volume] = {}
        name = "ROOT-1" if first else "ROOT-2"

        def deploy(step: Step) -> None:
            result = self.copy(
                types_pb2.DataObject(template=template),
                types_pb2.DataObject(
                    volume=types_pb2.Volume(
                        uuid=f"demo-{name.lower()}",
                        name=name,
                        size_bytes=GIB,
                        type=types_pb2.VOLUME_TYPE_ROOT,
                        vm_uuid="demo-vm-1",
                        store=self.primary(),
                    )
                ),
                step,
            )
            volume = holder["v"] = result.result.volume
            if not first and result.bytes_written:
                raise DemoFailure(f"{step.what}: copied {result.bytes_written} bytes, expected 0")
            host = 1 if first else 2
            self._grant(volume, host)
            self.expect(
                step,
                "sha256 = template's",
                self.sha(step, self.device(volume.path, host), self.template_size),
                sha,
            )
            if not first:
                self._revoke(volume, host)

        what = (
            "ROOT volume from template (first use: download)"
            if first
            else "second ROOT from it (instant clone, no copy)"
        )
        self.run_step(what, deploy)
        return holder["v"]

    def _encrypted_root(self, template: types_pb2.Template, sha: str) -> types_pb2.Volume:
        """A LUKS ROOT volume: the cached template written encrypted (no clone); its payload,
        decrypted with the passphrase, is the template, and the device holds only ciphertext."""
        holder: dict[str, types_pb2.Volume] = {}

        def deploy(step: Step) -> None:
            result = self.copy(
                types_pb2.DataObject(template=template),
                types_pb2.DataObject(
                    volume=types_pb2.Volume(
                        uuid="demo-root-luks",
                        name="ROOT-LUKS",
                        size_bytes=GIB,
                        type=types_pb2.VOLUME_TYPE_ROOT,
                        store=self.primary(),
                        encryption_format=types_pb2.ENCRYPTION_FORMAT_LUKS,
                        passphrase=PASSPHRASE,
                    )
                ),
                step,
            )
            volume = holder["v"] = result.result.volume
            self._grant(volume, 1)
            device = self.device(volume.path, 1)
            plain = self.stack.workdir / "root-luks.raw"
            with step.checking():
                datamover.convert(
                    device, plain, src_format="luks", src_passphrase=PASSPHRASE, dst_format="raw"
                )
                decrypted = digest(plain, self.template_size)
                plain.unlink()
                with device.open("rb") as handle:
                    handle.seek(LUKS_HEADER)  # where the template's first bytes would be
                    stored = handle.read(4096)
            self._revoke(volume, 1)
            if stored == pattern(0, 4096):
                raise DemoFailure(f"{step.what}: the device holds the template in plain text")
            self.expect(step, "decrypted sha256 = template's", decrypted, sha)

        self.run_step("encrypted ROOT from it (LUKS, written encrypted)", deploy)
        return holder["v"]

    def _direct_download_root(self, sha: str) -> types_pb2.Volume:
        """A ROOT volume from a direct-download template: a node streams the QCOW2 from the
        web server into StorPool (no file on the host), checking its SHA-256 on the way."""
        holder: dict[str, types_pb2.Volume] = {}
        image = self.stack.secondary / "template" / "tmpl" / "2" / "201" / "demo.qcow2"

        def deploy(step: Step) -> None:
            with step.checking():
                file_sha = hashlib.sha256(image.read_bytes()).hexdigest()
            source = types_pb2.Template(
                uuid=DIRECT_TEMPLATE,
                format=types_pb2.IMAGE_FORMAT_QCOW2,
                store=types_pb2.DataStore(
                    direct_download=types_pb2.DirectDownloadSource(
                        url=f"{self.web_url}template/tmpl/2/201/demo.qcow2",
                        checksum="{SHA-256}" + file_sha,
                    )
                ),
            )
            result = self.copy(
                types_pb2.DataObject(template=source),
                types_pb2.DataObject(
                    volume=types_pb2.Volume(
                        uuid="demo-root-dd",
                        name="ROOT-DD",
                        size_bytes=GIB,
                        type=types_pb2.VOLUME_TYPE_ROOT,
                        store=self.primary(),
                    )
                ),
                step,
            )
            volume = holder["v"] = result.result.volume
            self._grant(volume, 2)
            self.expect(
                step,
                "sha256 = template's",
                self.sha(step, self.device(volume.path, 2), self.template_size),
                sha,
            )
            self._revoke(volume, 2)

        self.run_step("ROOT from a direct-download template (URL)", deploy)
        return holder["v"]

    def _grant(self, volume: types_pb2.Volume, host: int) -> None:
        self.driver.GrantAccess(
            driver_pb2.GrantAccessRequest(
                object=types_pb2.DataObject(
                    volume=types_pb2.Volume(path=volume.path, store=self.primary())
                ),
                host_id=f"host-{host}",
            )
        )

    def _revoke(self, volume: types_pb2.Volume, host: int, clear: bool = False) -> None:
        self.driver.RevokeAccess(
            driver_pb2.RevokeAccessRequest(
                object=types_pb2.DataObject(
                    volume=types_pb2.Volume(path=volume.path, store=self.primary())
                ),
                host_id=f"host-{host}",
                force=True,
                clear_vm_tags=clear,
            )
        )

    def _data_volume(self) -> tuple[types_pb2.Volume, str]:
        holder: dict[str, types_pb2.Volume] = {}
        shas: dict[str, str] = {}

        def create(step: Step) -> None:
            volume = self.driver.CreateVolume(
                driver_pb2.CreateVolumeRequest(
                    pool=types_pb2.PrimaryStore(pool_uuid=self.pool),
                    volume=types_pb2.Volume(
                        uuid="demo-data-1",
                        name="DATA-1",
                        size_bytes=GIB,
                        max_iops=2000,
                        type=types_pb2.VOLUME_TYPE_DATA,
                    ),
                )
            )
            holder["v"] = volume
            self.expect(step, "size", human(volume.size_bytes), "1.0 GiB")

        self.run_step("create DATA volume (1 GiB, max 2000 IOPS)", create)
        volume = holder["v"]

        def attach(step: Step) -> None:
            self._grant(volume, 1)
            self.driver.ProvideVmInfo(
                driver_pb2.ProvideVmInfoRequest(
                    pool=types_pb2.PrimaryStore(pool_uuid=self.pool),
                    volume=types_pb2.Volume(path=volume.path, vm_uuid="demo-vm-1", device_id=1),
                )
            )
            self.expect(step, "device on host-1", self.device(volume.path, 1).exists(), True)

        self.run_step("attach DATA to the VM on host-1", attach)

        def write(step: Step) -> None:
            device = self.device(volume.path, 1)
            with device.open("r+b") as handle:
                for n, offset in enumerate(range(0, GIB, 128 * MIB)):
                    handle.seek(offset)
                    handle.write(pattern(100 + n, 16 * MIB))
                handle.flush()
                os.fsync(handle.fileno())
            shas["sha"] = self.sha(step, device, GIB)
            step.check = f"wrote 128 MiB, sha256 {shas['sha'][:12]}"

        self.run_step("write a pattern through the device", write)
        return volume, shas["sha"]

    def _snapshot(self, volume: types_pb2.Volume) -> types_pb2.Snapshot:
        holder: dict[str, types_pb2.Snapshot] = {}

        def take(step: Step) -> None:
            snap = self.driver.TakeSnapshot(
                driver_pb2.TakeSnapshotRequest(
                    pool=types_pb2.PrimaryStore(pool_uuid=self.pool),
                    snapshot=types_pb2.Snapshot(
                        uuid="demo-snap-1", volume_path=volume.path, vm_uuid="demo-vm-1"
                    ),
                )
            )
            snap.store.CopyFrom(self.primary())
            holder["s"] = snap
            step.check = f"ok: StorPool snapshot ~{snap.global_id}"

        self.run_step("snapshot DATA", take)
        return holder["s"]

    def _backup(self, snapshot: types_pb2.Snapshot, sha: str) -> types_pb2.Snapshot:
        holder: dict[str, types_pb2.Snapshot] = {}

        def backup(step: Step) -> None:
            result = self.copy(
                types_pb2.DataObject(snapshot=snapshot),
                types_pb2.DataObject(
                    snapshot=types_pb2.Snapshot(path="snapshots/2/1", store=self.secondary())
                ),
                step,
            )
            copy = holder["s"] = result.result.snapshot
            with step.checking():
                info = datamover.info(self.stack.secondary / copy.path, checksum="sha256")
            if info.format != "qcow2":
                raise DemoFailure(f"{step.what}: the backup is {info.format}, not qcow2")
            self.expect(step, "QCOW2 sha256 = snapshot's", info.checksum, sha)

        self.run_step("back up the snapshot to secondary (QCOW2)", backup)
        return holder["s"]

    def _volume_from_backup(self, backup: types_pb2.Snapshot, sha: str) -> types_pb2.Volume:
        holder: dict[str, types_pb2.Volume] = {}

        def restore(step: Step) -> None:
            result = self.copy(
                types_pb2.DataObject(snapshot=backup),
                types_pb2.DataObject(
                    volume=types_pb2.Volume(
                        uuid="demo-restored", name="RESTORED", store=self.primary()
                    )
                ),
                step,
            )
            volume = holder["v"] = result.result.volume
            self._grant(volume, 2)
            self.expect(
                step, "sha256 = snapshot's", self.sha(step, self.device(volume.path, 2), GIB), sha
            )
            self._revoke(volume, 2)

        self.run_step("volume from the backup on secondary", restore)
        return holder["v"]

    def _resize(self, volume: types_pb2.Volume) -> None:
        def grow(step: Step) -> None:
            resized = self.driver.ResizeVolume(
                driver_pb2.ResizeVolumeRequest(
                    pool=types_pb2.PrimaryStore(pool_uuid=self.pool),
                    volume=types_pb2.Volume(path=volume.path, max_iops=2000),
                    new_size_bytes=2 * GIB,
                )
            )
            device = self.device(volume.path, 1)
            with device.open("rb") as handle:
                seen = handle.seek(0, os.SEEK_END)
            self.expect(step, "size seen on host-1", (resized.size_bytes, seen), (2 * GIB, 2 * GIB))
            step.check += " (no VM process: no guest to notify)"

        self.run_step("resize DATA to 2 GiB while attached", grow)

    def _revert(self, volume: types_pb2.Volume, snapshot: types_pb2.Snapshot, sha: str) -> None:
        def revert(step: Step) -> None:
            with self.device(volume.path, 1).open("r+b") as handle:
                handle.write(b"\xff" * MIB)
            reverted = self.driver.RevertSnapshot(
                driver_pb2.RevertSnapshotRequest(
                    pool=types_pb2.PrimaryStore(pool_uuid=self.pool),
                    snapshot=snapshot,
                    volume=types_pb2.Volume(path=volume.path, max_iops=2000),
                )
            )
            self._grant(volume, 1)  # revert detaches it everywhere; the VM attaches it again
            if reverted.max_iops != 2000:
                raise DemoFailure(f"{step.what}: IOPS limit is {reverted.max_iops}, not 2000")
            self.expect(
                step, "sha256 = snapshot's", self.sha(step, self.device(volume.path, 1), GIB), sha
            )

        self.run_step("overwrite DATA, revert it to the snapshot", revert)

    def _migrate(self, volumes: list[types_pb2.Volume]) -> None:

        def migrate(step: Step) -> None:
            before = {v.path: self.sha(step, self.device(v.path, 1), GIB) for v in volumes}
            for volume in volumes:
                self._grant(volume, 2)
            for volume in volumes:
                self._revoke(volume, 1)
            gids = {v.global_id for v in volumes}
            clients = sorted(
                {a.client for a in self.storpool().attachments() if a.global_id in gids}
            )
            after = {v.path: self.sha(step, self.device(v.path, 2), GIB) for v in volumes}
            if before != after:
                raise DemoFailure(f"{step.what}: data differs on host-2")
            self.expect(step, "attached on clients", clients, [2])
            step.check += ", same sha256 on host-2"

        self.run_step("migrate the VM: attach on host-2, detach host-1", migrate)

    def _template_from_volume(self, volume: types_pb2.Volume, sha: str) -> types_pb2.Template:
        holder: dict[str, types_pb2.Template] = {}

        def make(step: Step) -> None:
            template = types_pb2.Template(
                uuid="demo-template-2",
                name="202-2-from-data",
                id=202,
                path="template/tmpl/2/202",
                store=self.secondary(),
            )
            result = self.copy(
                types_pb2.DataObject(
                    volume=types_pb2.Volume(path=volume.path, store=self.primary())
                ),
                types_pb2.DataObject(template=template),
                step,
            )
            made = holder["t"] = result.result.template
            image = self.stack.secondary / made.path / made.file_name
            props = (self.stack.secondary / made.path / "template.properties").read_text()
            if f"checksum={made.checksum}" not in props:
                raise DemoFailure(f"{step.what}: template.properties lacks the checksum")
            self.expect(step, "sha256 = volume's", self.sha_image(step, image, GIB), sha)

        self.run_step("template from DATA (QCOW2 + template.properties)", make)
        return holder["t"]

    def _download_volume(self, volume: types_pb2.Volume, sha: str) -> types_pb2.Volume:
        holder: dict[str, types_pb2.Volume] = {}

        def extract(step: Step) -> None:
            result = self.copy(
                types_pb2.DataObject(
                    volume=types_pb2.Volume(
                        uuid="demo-data-1", path=volume.path, store=self.primary()
                    )
                ),
                types_pb2.DataObject(
                    volume=types_pb2.Volume(path="volumes/2/1", store=self.secondary())
                ),
                step,
            )
            extracted = holder["v"] = result.result.volume
            self.expect(
                step,
                "sha256 = volume's",
                self.sha_image(step, self.stack.secondary / extracted.path, GIB),
                sha,
            )

        self.run_step("download DATA to secondary (point-in-time)", extract)
        return holder["v"]

    def _delay_delete(
        self, volume: types_pb2.Volume, sha: str
    ) -> tuple[types_pb2.Volume, types_pb2.Snapshot]:
        """The pool keeps a backup of what is deleted (storpool.delete.after.interval), and
        the deleted volume comes back from it."""
        holder: dict[str, tuple[types_pb2.Volume, types_pb2.Snapshot]] = {}
        pool = types_pb2.PrimaryStore(pool_uuid=self.pool)

        def undelete(step: Step) -> None:
            self.lifecycle.UpdatePool(
                lifecycle_pb2.UpdatePoolRequest(pool_uuid=self.pool, details={DELAY_DELETE: "3600"})
            )
            gone = self.driver.DeleteData(
                driver_pb2.DeleteDataRequest(pool=pool, object=types_pb2.DataObject(volume=volume))
            )
            # later deletes keep nothing: the demo leaves StorPool empty
            self.lifecycle.UpdatePool(
                lifecycle_pb2.UpdatePoolRequest(pool_uuid=self.pool, details={DELAY_DELETE: ""})
            )
            if not (gone.deleted and gone.HasField("delay_delete_backup")):
                raise DemoFailure(f"{step.what}: the delete reported no backup")
            backup = gone.delay_delete_backup
            result = self.copy(
                types_pb2.DataObject(snapshot=backup),
                types_pb2.DataObject(
                    volume=types_pb2.Volume(
                        uuid="demo-undeleted", name="UNDELETED", store=self.primary()
                    )
                ),
                step,
            )
            back = result.result.volume
            self._grant(back, 1)
            self.expect(
                step,
                "sha256 = deleted volume's",
                self.sha(step, self.device(back.path, 1), GIB),
                sha,
            )
            self._revoke(back, 1)
            holder["r"] = (back, backup)

        self.run_step("undelete RESTORED from its delay-delete backup", undelete)
        return holder["r"]

    def _copy_to_zone2(self, snapshot: types_pb2.Snapshot, sha: str) -> None:
        """CloudStack's copy of a snapshot to another zone: StorPool moves it to the other
        location itself; spcs follows it and unexports the source at the end."""
        zone2 = self.stack.zone2
        if zone2 is None:
            raise DemoFailure("the stack has no second zone")
        pool2 = f"{self.pool}-zone2"
        here = types_pb2.PrimaryStore(pool_uuid=pool2)

        def copy(step: Step) -> None:
            url = f"SP_API_HTTP={zone2.host}:{zone2.port};SP_AUTH_TOKEN={zone2.token};"
            self.lifecycle.InitializePool(
                lifecycle_pb2.InitializePoolRequest(
                    pool_uuid=pool2,
                    name="storpool-demo-zone2",
                    url=f"{url}SP_TEMPLATE={TEMPLATE}",
                    zone_id="zone-2",
                    capacity_bytes=512 * GIB,
                )
            )
            self.lifecycle.AttachZone(
                lifecycle_pb2.AttachZoneRequest(pool_uuid=pool2, zone_id="zone-2")
            )
            strategy = strategies_pb2_grpc.SnapshotStrategyStub(self.open_channel)
            op = strategy.CopySnapshot(
                strategies_pb2.CopySnapshotRequest(
                    operation_id=f"demo-zone-copy-{int(time.time() * 1000)}",
                    snapshot=types_pb2.Snapshot(uuid=snapshot.uuid, path=snapshot.path),
                    pool=types_pb2.PrimaryStore(pool_uuid=self.pool),
                    destination_pool=here,
                )
            )
            while not op.done:
                op = self.operations.WaitOperation(
                    operations_pb2.WaitOperationRequest(name=op.name)
                )
                self._progress(op)
            if op.HasField("error"):
                raise DemoFailure(f"{step.what}: the copy failed: {op.error.message}")
            result = strategies_pb2.CopySnapshotResult()
            op.response.Unpack(result)
            step.processed = snapshot.size_bytes
            assert zone2.cluster is not None
            # the copy's bytes as zone 2's StorPool keeps them (no host there to attach it)
            data = Path(zone2.cluster.data_path(result.snapshot.global_id))
            self.expect(step, "sha256 in zone 2 = snapshot's", self.sha(step, data, GIB), sha)
            strategy.DeleteSnapshot(
                strategies_pb2.DeleteSnapshotRequest(snapshot=result.snapshot, pool=here)
            )
            self.lifecycle.DeletePool(lifecycle_pb2.DeletePoolRequest(pool_uuid=pool2))

        self.run_step("copy the snapshot to zone 2 (another location)", copy)

    def _delete_everything(
        self,
        volumes: list[types_pb2.Volume],
        snapshots: list[types_pb2.Snapshot],
        made: types_pb2.Template,
        template: types_pb2.Template,
        extracted: types_pb2.Volume,
    ) -> None:
        def delete(step: Step) -> None:
            pool = types_pb2.PrimaryStore(pool_uuid=self.pool)
            for volume in volumes:
                self.driver.DetachVolumeFromAllStorageNodes(
                    driver_pb2.DetachVolumeFromAllStorageNodesRequest(
                        pool=pool, volume_path=volume.path
                    )
                )
                self.driver.DeleteData(
                    driver_pb2.DeleteDataRequest(
                        pool=pool, object=types_pb2.DataObject(volume=volume)
                    )
                )
            strategy = strategies_pb2_grpc.SnapshotStrategyStub(self.open_channel)
            for snapshot in snapshots:
                strategy.DeleteSnapshot(strategies_pb2.DeleteSnapshotRequest(snapshot=snapshot))
            for cached in (
                types_pb2.Template(uuid=template.uuid),
                types_pb2.Template(uuid=made.uuid),
                types_pb2.Template(uuid=DIRECT_TEMPLATE),
            ):
                self.driver.DeleteData(
                    driver_pb2.DeleteDataRequest(
                        pool=pool, object=types_pb2.DataObject(template=cached)
                    )
                )
            api = self.storpool()
            left = [v.name for v in api.volumes()] + [
                s.name for s in api.snapshots() if not s.deleted
            ]
            self.expect(step, "StorPool objects left", left, [])

        self.run_step("delete volumes, snapshots and cached templates", delete)

    def _delete_pool(self) -> None:
        def delete(step: Step) -> None:
            reply = self.lifecycle.DeletePool(lifecycle_pb2.DeletePoolRequest(pool_uuid=self.pool))
            pools = self.lifecycle.ListPools(lifecycle_pb2.ListPoolsRequest()).pools
            self.expect(step, "pools left", (reply.deleted, len(pools)), (True, 0))

        self.run_step("delete the primary storage pool", delete)


def digest_image(path: Path, length: int) -> str:
    """SHA-256 of the first `length` bytes of a disk image's contents (any format)."""
    raw = path.with_name(path.name + ".demo-check.raw")
    try:
        datamover.convert(path, raw, dst_format="raw")
        return digest(raw, length)
    finally:
        raw.unlink(missing_ok=True)
