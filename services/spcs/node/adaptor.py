"""The KVM StorageAdaptor: attach and detach StorPool volumes and snapshots on this host.

Everything goes to StorPool for this host's client id (SP_OURID) only. Attach uses
VolumesReassignWait and then waits for the device link; detach retries while StorPool says the
device is open ("busy"), and forces only when the caller allows it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from spcs.common import errors, holds, metrics
from spcs.common.locks import KeyedLocks
from spcs.node.devices import Devices
from spcs.storpool import errors as sp_errors
from spcs.storpool import names
from spcs.storpool.client import StorPoolClient
from spcs.storpool.records import StorPoolObject
from spcs.v1 import node_pb2, types_pb2

log = logging.getLogger(__name__)

DETACH_ATTEMPTS = 10
MAX_NEIGHBOURS = 256  # a zone's hosts, with room; more is a caller's bug
DETACH_PAUSE_SECONDS = 0.5
DEVICE_GONE_SECONDS = 10.0


@dataclass(frozen=True)
class Disk:
    """A StorPool object as seen from this host."""

    obj: StorPoolObject
    device: Path
    attached: bool
    read_only: bool

    @property
    def kind(self) -> node_pb2.DiskKind.ValueType:
        return node_pb2.DISK_KIND_SNAPSHOT if self.obj.is_snapshot else node_pb2.DISK_KIND_VOLUME

    def message(self, size: int | None = None) -> node_pb2.PhysicalDisk:
        mode = types_pb2.ACCESS_MODE_UNSPECIFIED
        if self.attached:
            mode = (
                types_pb2.ACCESS_MODE_READ_ONLY
                if self.read_only
                else types_pb2.ACCESS_MODE_READ_WRITE
            )
        return node_pb2.PhysicalDisk(
            path=names.byid_path(self.obj.global_id),
            name=self.obj.name,
            global_id=self.obj.global_id,
            size_bytes=self.obj.size if size is None else size,
            format=types_pb2.IMAGE_FORMAT_RAW,
            attached=self.attached,
            mode=mode,
            kind=self.kind,
        )


class Adaptor:
    """Public methods take the object's try-lock; `attach`/`detach` are for callers (copy jobs)
    that already hold it."""

    def __init__(
        self,
        api: StorPoolClient,
        devices: Devices,
        client_id: int,
        wait_seconds: float,
        locks: KeyedLocks,
        detach_attempts: int = DETACH_ATTEMPTS,
    ) -> None:
        self.api = api
        self.devices = devices
        self.client_id = client_id
        self.wait_seconds = wait_seconds
        self.locks = locks
        self.detach_attempts = detach_attempts

    # ---- lookups ------------------------------------------------------------------------

    def lookup(
        self, path: str, kind: node_pb2.DiskKind.ValueType, field: str = "disk.path"
    ) -> StorPoolObject:
        """The volume or snapshot a path/name refers to; NOT_FOUND naming it if neither."""
        ref = names.api_ref(path, field)
        if kind == node_pb2.DISK_KIND_SNAPSHOT:
            snap = self.api.snapshot_or_none(ref)
            if snap is None:
                raise errors.NotFound(f"StorPool snapshot {ref} ({path}) does not exist")
            return snap
        volume = self.api.volume_or_none(ref)
        if volume is not None:
            return volume
        if kind == node_pb2.DISK_KIND_UNSPECIFIED:
            snap = self.api.snapshot_or_none(ref)
            if snap is not None:
                return snap
        raise errors.NotFound(f"StorPool volume {ref} ({path}) does not exist")

    def attachment(self, obj: StorPoolObject) -> str | None:
        """'rw' / 'ro' if attached to this host, else None."""
        for att in self.api.attachments():
            if att.client != self.client_id or att.snapshot != obj.is_snapshot:
                continue
            if att.global_id == obj.global_id or att.volume in (obj.name, obj.ref):
                return att.rights
        return None

    def device(self, obj: StorPoolObject) -> Path:
        """Where the object's block device appears on this host (attached or not)."""
        return self.devices.byid(obj.global_id)

    def device_size(self, disk: Disk) -> int:
        """The size of an attached disk's device as this host's kernel sees it."""
        return self.devices.size(disk.device)

    def client_running(self) -> bool:
        """Whether StorPool shows this host's client (SP_OURID) as running."""
        return self.api.client_running(self.client_id)

    def heartbeat(self, neighbours: Sequence[int]) -> list[tuple[int, str]]:
        """(client id, StorPool status) of this host's client, then of each neighbour asked
        about, from one service list; "" for a client StorPool does not list."""
        if len(neighbours) > MAX_NEIGHBOURS:
            raise errors.InvalidArgument(
                f"neighbour_client_ids: {len(neighbours)} clients; ask about at most "
                f"{MAX_NEIGHBOURS} in one call"
            )
        # a probe's short timeout and retries: an HA check must answer while the asker waits
        statuses = self.api.for_probes().client_statuses()
        return [(cid, statuses.get(cid, "")) for cid in (self.client_id, *neighbours)]

    def wait_device(self, obj: StorPoolObject) -> Path:
        """The object's device, once present (it is attached here already)."""
        device = self.device(obj)
        self.devices.wait_present(device, self.wait_seconds, obj.ref)
        return device

    def disk(self, path: str, kind: node_pb2.DiskKind.ValueType) -> Disk:
        obj = self.lookup(path, kind)
        rights = self.attachment(obj)
        return Disk(obj, self.devices.byid(obj.global_id), rights is not None, rights == "ro")

    # ---- attach / detach ----------------------------------------------------------------

    def connect(
        self,
        path: str,
        kind: node_pb2.DiskKind.ValueType,
        mode: types_pb2.AccessMode.ValueType,
        timeout: float | None = None,
    ) -> Disk:
        obj = self.lookup(path, kind)
        with self.locks.hold("ConnectPhysicalDisk", disk=holds.storpool_object(obj.global_id)):
            return self.attach(obj, mode, timeout)

    def attach(
        self,
        obj: StorPoolObject,
        mode: types_pb2.AccessMode.ValueType,
        timeout: float | None = None,
    ) -> Disk:
        with _device_metric("attach"):
            return self._attach(obj, mode, timeout)

    def _attach(
        self,
        obj: StorPoolObject,
        mode: types_pb2.AccessMode.ValueType,
        timeout: float | None,
    ) -> Disk:
        read_only = mode == types_pb2.ACCESS_MODE_READ_ONLY or obj.is_snapshot
        if obj.is_snapshot and mode == types_pb2.ACCESS_MODE_READ_WRITE:
            raise errors.InvalidArgument(
                f"mode ACCESS_MODE_READ_WRITE: snapshot {obj.ref} can only be attached read-only; "
                "use ACCESS_MODE_READ_ONLY"
            )
        wait = timeout if timeout else self.wait_seconds
        current = self.attachment(obj)
        if current != ("ro" if read_only else "rw"):
            self.api.attach(
                obj.ref,
                self.client_id,
                read_only=read_only,
                snapshot=obj.is_snapshot,
                timeout=max(1, int(wait)),
            )
        device = self.devices.byid(obj.global_id)
        self.devices.wait_present(device, wait, f"{obj.ref} ({obj.name})")
        log.info(
            "attached %s %s here (%s) at %s",
            "snapshot" if obj.is_snapshot else "volume",
            obj.ref,
            "ro" if read_only else "rw",
            device,
        )
        return Disk(obj, device, True, read_only)

    def disconnect(self, path: str, kind: node_pb2.DiskKind.ValueType, force_allowed: bool) -> bool:
        """Detach from this host. False if it was not attached here or does not exist."""
        try:
            obj = self.lookup(path, kind)
        except errors.NotFound:
            return False
        with self.locks.hold("DisconnectPhysicalDisk", disk=holds.storpool_object(obj.global_id)):
            return self.detach(obj, force_allowed)

    def detach(self, obj: StorPoolObject, force_allowed: bool) -> bool:
        if self.attachment(obj) is None:
            return False
        with _device_metric("detach"):
            self._detach(obj, force_allowed)
            self.devices.wait_absent(self.devices.byid(obj.global_id), DEVICE_GONE_SECONDS)
        log.info(
            "detached %s %s from this host", "snapshot" if obj.is_snapshot else "volume", obj.ref
        )
        return True

    def _detach(self, obj: StorPoolObject, force_allowed: bool) -> None:
        last: errors.SpcsError | None = None
        for attempt in range(self.detach_attempts):
            try:
                self.api.detach(obj.ref, self.client_id, snapshot=obj.is_snapshot, force=False)
                return
            except errors.NotFound:
                return
            except (errors.FailedPrecondition, errors.InvalidArgument) as error:
                if not sp_errors.is_busy(error):
                    raise
                last = error
                log.info(
                    "%s is open on this host; detach attempt %d/%d",
                    obj.ref,
                    attempt + 1,
                    self.detach_attempts,
                )
                time.sleep(DETACH_PAUSE_SECONDS)
        if not force_allowed:
            raise errors.FailedPrecondition(
                f"{obj.ref} ({obj.name}) is still open on this host after {self.detach_attempts} "
                f"detach attempts ({last.message if last else 'busy'}); stop whatever uses "
                "the device, or retry with force_allowed"
            )
        log.warning("forcing the detach of %s, which is open on this host", obj.ref)
        self.api.detach(obj.ref, self.client_id, snapshot=obj.is_snapshot, force=True)

    def disconnect_by_path(self, path: str, force_allowed: bool) -> tuple[bool, bool]:
        """(handled, detached): not a StorPool path → (False, False), another adaptor's turn."""
        if names.ref_or_none(path) is None or not path.startswith(
            (names.BYID_DIR + "/", names.NAME_DIR + "/")
        ):
            return False, False
        return True, self.disconnect(path, node_pb2.DISK_KIND_UNSPECIFIED, force_allowed)

    # ---- other adaptor calls -------------------------------------------------------------

    def delete(self, path: str, kind: node_pb2.DiskKind.ValueType) -> bool:
        """Delete a cached template snapshot (or a volume when asked explicitly)."""
        try:
            obj = self.lookup(path, kind or node_pb2.DISK_KIND_SNAPSHOT)
        except errors.NotFound:
            return False
        with self.locks.hold("DeletePhysicalDisk", disk=holds.storpool_object(obj.global_id)):
            if obj.is_snapshot:
                return self.api.snapshot_delete(obj.ref)
            return self.api.volume_delete(obj.ref)

    def resize(self, path: str, new_size: int, shrink_ok: bool) -> Disk:
        obj = self.lookup(path, node_pb2.DISK_KIND_VOLUME)
        with self.locks.hold("ResizePhysicalDisk", disk=holds.storpool_object(obj.global_id)):
            self.set_size(obj, new_size, shrink_ok)
        return self.disk(path, node_pb2.DISK_KIND_VOLUME)

    def set_size(self, obj: StorPoolObject, new_size: int, shrink_ok: bool) -> None:
        """Resize a volume the caller holds (OUT_OF_RANGE for a shrink without shrink_ok)."""
        if new_size < obj.size and not shrink_ok:
            raise errors.OutOfRange(
                f"volume {obj.ref} is {obj.size} bytes; shrinking it to {new_size} needs "
                "shrink_ok (data past the new end is lost)"
            )
        if new_size != obj.size:
            self.api.volume_update(obj.ref, size=new_size, shrinkOk=shrink_ok or None)


@contextmanager
def _device_metric(action: str) -> Iterator[None]:
    """The attach's or detach's time and outcome; a device that never appeared is counted."""
    started = time.monotonic()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except errors.DeadlineExceeded:
        if action == "attach":
            metrics.DEVICE_WAIT_TIMEOUTS.inc()
        raise
    finally:
        metrics.DEVICE_SECONDS.labels(action, outcome).observe(time.monotonic() - started)
