"""The emulated cluster: state under one lock, transactions, lookups, devices, space.

Every change runs in `Cluster.change()`: it works on a deep copy of the state,
registers undo actions for side effects it made (data files, device links) and
post-commit actions for side effects that destroy things (deleting files,
tearing down devices). Only when the new state has been written does it
replace the live one, so a failing or rejected request leaves no trace.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from spcs.emulator import blockdata, devices
from spcs.emulator.bridge import Bridge
from spcs.emulator.errors import invalid, no_space, not_found
from spcs.emulator.faults import Faults
from spcs.emulator.model import Attachment, State, Template, Volume
from spcs.emulator.naming import MAX_ATTACHMENT_POS, base36, global_id_of_ref
from spcs.emulator.store import Store
from spcs.emulator.transfer import DEFAULT_BANDWIDTH, Pacer, Transfers

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_size_limits(size: int) -> Iterator[None]:
    """A data file the data directory's filesystem can not make that large: a clean
    ``insufficientResources`` (emulator-specific: a real cluster has no such limit below its
    maximum volume size), never the OS error's text."""
    try:
        yield
    except OverflowError:
        raise no_space(f"the emulator can not store an object of {size} bytes") from None
    except OSError as exc:
        if exc.errno != errno.EFBIG:
            raise
        raise no_space(
            f"the emulator's data filesystem can not hold an object of {size} bytes (its files "
            "are smaller); use a smaller size, or put the emulator's data directory on a "
            "filesystem with larger files (xfs, btrfs)"
        ) from None


class Txn:
    """One change in progress: the draft state plus undo and post-commit actions."""

    def __init__(self, state: State, *, bump: bool = True) -> None:
        self.state = state
        # What the change commits as; admin changes keep the generation.
        self.generation = state.generation + (1 if bump else 0)
        self._undo: list[Callable[[], None]] = []
        self._after: list[Callable[[], None]] = []
        # (client, pos) slots whose devices are torn down only after commit:
        # not to be handed out again within this change.
        self.released: set[tuple[int, int]] = set()

    def on_undo(self, action: Callable[[], None]) -> None:
        self._undo.append(action)

    def after_commit(self, action: Callable[[], None]) -> None:
        self._after.append(action)

    def ok(self, **extra: Any) -> dict[str, Any]:
        """An ApiOk reply for this change."""
        return {"ok": True, "generation": self.generation, **extra}

    def rollback(self) -> None:
        for action in reversed(self._undo):
            try:
                action()
            except Exception:
                log.exception("undo action failed")

    def finish(self) -> None:
        for action in self._after:
            try:
                action()
            except Exception:
                log.exception("post-commit action failed")


class Cluster:
    def __init__(
        self,
        store: Store,
        state: State,
        hosts: dict[int, devices.ClientHost],
        *,
        loop: bool = False,
        default_placement_group: str = "default",
        bridge: Bridge | None = None,
        location_name: str | None = None,
        faults: Faults | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.hosts = hosts
        self.loop = loop
        self.default_placement_group = default_placement_group
        self.lock = threading.RLock()
        # the other locations, and this one's name among them (see `spcs.emulator.bridge`)
        self.bridge = bridge if bridge is not None else Bridge()
        self.location_name = location_name or self.location_id
        self.transfers = Transfers(
            self, faults or Faults(), pacer if pacer is not None else Pacer(DEFAULT_BANDWIDTH)
        )
        # no snapshot is due before this (a lower bound; 0: look): every call checks it, and
        # only a call at or after it looks through the snapshots
        self._next_due = 0.0
        self.started = int(time.time())
        # clients whose StorPool service is shown down (`_emulator/client`): runtime only, as
        # a real client comes back up on its own
        self.clients_down: set[int] = set()

    @property
    def location_id(self) -> str:
        """The location part of the cluster id ``<location>.<subcluster>``."""
        return self.state.cluster_id.partition(".")[0]

    def set_client_running(self, client: int, running: bool) -> None:
        self.host(client)  # an unknown client is the caller's mistake
        (self.clients_down.discard if running else self.clients_down.add)(client)

    # Reading and changing.

    @contextlib.contextmanager
    def read(self) -> Iterator[State]:
        with self.lock:
            yield self.state

    @contextlib.contextmanager
    def change(self, *, bump: bool = True) -> Iterator[Txn]:
        with self.lock:
            txn = Txn(self.state.copy(), bump=bump)
            try:
                yield txn
                txn.state.generation = txn.generation
                self.store.save(txn.state)
            except BaseException:
                txn.rollback()
                raise
            self.state = txn.state
            txn.finish()

    # Lookups.

    def resolve(self, state: State, ref: str, *, snapshot: bool) -> Volume:
        """The volume (or snapshot) a name or ``~gid`` reference names."""
        kind = "snapshot" if snapshot else "volume"
        gid = global_id_of_ref(ref)
        vol = state.volumes.get(gid) if gid is not None else state.by_name(ref)
        if vol is None or vol.snapshot != snapshot:
            raise not_found(f"{kind} {ref}")
        return vol

    def template(self, state: State, name: str) -> Template:
        tmpl = state.templates.get(name)
        if tmpl is None:
            raise not_found(f"template {name}")
        return tmpl

    def host(self, client: int) -> devices.ClientHost:
        host = self.hosts.get(client)
        if host is None:
            raise invalid(f"No such client registered: {client}")
        return host

    def data_path(self, gid: str) -> str:
        return self.store.data_path(gid)

    def new_gid(self, state: State) -> tuple[str, int]:
        """A new visible volume id and the global id made of it. Snapshots copied from other
        locations keep their own global ids, so a made one is checked against them too."""
        while True:
            vid = self.new_vid(state)
            gid = f"{state.cluster_id}.{base36(vid)}"
            if gid not in state.volumes:
                return gid, vid

    def new_vid(self, state: State) -> int:
        vid = state.next_vid
        state.next_vid += 1
        return vid

    # Space accounting.

    def filesystem_space(self) -> tuple[int, int]:
        """(size, available) of the filesystem holding the data directory."""
        st = os.statvfs(self.store.dir)
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    def template_used(self, state: State, name: str) -> int:
        return sum(
            blockdata.allocated_bytes(self.data_path(v.gid))
            for v in state.volumes.values()
            if v.template == name
        )

    def template_capacity(self, tmpl: Template) -> int:
        return tmpl.capacity if tmpl.capacity is not None else self.filesystem_space()[0]

    def template_free(self, state: State, tmpl: Template) -> int:
        free = self.template_capacity(tmpl) - self.template_used(state, tmpl.name)
        return max(0, min(free, self.filesystem_space()[1]))

    def check_space(self, state: State, template: str) -> None:
        """Refuse to add data to a template whose allocated bytes reached its capacity.

        Volumes are thin: the check is on really allocated bytes, not on sizes.
        """
        tmpl = state.templates.get(template) if template else None
        # without a capacity of its own a template holds what the filesystem does: the check
        # below (summing its volumes' allocated bytes is a stat of each, on every write)
        capacity = tmpl.capacity if tmpl is not None else None
        if capacity is not None and self.template_used(state, template) >= capacity:
            raise no_space(f"template {template} is full ({capacity} bytes)")
        if self.filesystem_space()[1] <= 0:
            raise no_space("the emulator's data filesystem is full")

    # Data files.

    def new_data_file(self, txn: Txn, gid: str, size: int, source: str | None = None) -> None:
        """Create the data file of a new object: zeroes, or a copy of `source`'s bytes.

        A failure leaves no file behind (the global id is not used up either: the change
        that allocated it is rolled back)."""
        path = self.data_path(gid)
        with file_size_limits(size):
            if source is None:
                blockdata.create(path, size)
            else:
                blockdata.clone(self.data_path(source), path, size)
        txn.on_undo(lambda: blockdata.remove(path))

    def drop_data_file(self, txn: Txn, gid: str) -> None:
        path = self.data_path(gid)
        txn.after_commit(lambda: blockdata.remove(path))

    # Devices.

    def _target(self, att: Attachment) -> str:
        return att.loop if att.loop else self.data_path(att.gid)

    def publish(self, txn: Txn, att: Attachment, vol: Volume) -> None:
        """Make the attachment's device and links appear on its client."""
        host = self.host(att.client)
        if self.loop:
            readonly = att.rights == "ro" or vol.snapshot
            att.loop = devices.loop_attach(self.data_path(vol.gid), readonly=readonly)
            loopdev = att.loop
            txn.on_undo(lambda: devices.loop_detach(loopdev))
        name, gid, pos = vol.name, vol.gid, att.pos
        txn.on_undo(lambda: host.unpublish(pos, name, gid))
        host.publish(att.pos, vol.name, vol.gid, self._target(att), loop=self.loop)

    def unpublish(self, txn: Txn, att: Attachment, vol: Volume) -> None:
        """Tear the device down once the change is committed."""
        host = self.hosts.get(att.client)
        name, gid, pos, loopdev = vol.name, vol.gid, att.pos, att.loop
        txn.released.add((att.client, pos))
        if host is not None:
            txn.after_commit(lambda: host.unpublish(pos, name, gid))
        if loopdev:
            txn.after_commit(lambda: devices.loop_detach(loopdev))

    def change_rights(self, txn: Txn, att: Attachment, vol: Volume, rights: str) -> None:
        """New rights; in loop mode that means a new loop device at the same position."""
        att.rights = rights
        if not self.loop:
            return
        host = self.host(att.client)
        old = att.loop
        att.loop = devices.loop_attach(self.data_path(vol.gid), readonly=rights == "ro")
        new = att.loop
        txn.on_undo(lambda: devices.loop_detach(new))
        host.publish(att.pos, vol.name, vol.gid, new, loop=True)
        if old:
            pos, name, gid = att.pos, vol.name, vol.gid
            txn.on_undo(lambda: host.publish(pos, name, gid, old, loop=True))
            txn.after_commit(lambda: devices.loop_detach(old))

    def free_pos(self, txn: Txn, client: int) -> int:
        used = {a.pos for a in txn.state.attachments if a.client == client}
        used |= {pos for cid, pos in txn.released if cid == client}
        for pos in range(MAX_ATTACHMENT_POS + 1):
            if pos not in used:
                return pos
        raise invalid(f"too many attachments on client {client}")

    def refresh_size(self, state: State, vol: Volume) -> None:
        """Let loop devices see a resized data file (files show the new size by themselves)."""
        for att in state.attachments_of(vol.gid):
            if att.loop:
                devices.loop_refresh(att.loop)

    def open_clients(self, state: State, vol: Volume, clients: list[int]) -> list[int]:
        """Which of `clients` hold `vol` open (by an fd, a mount, a holder or a mark)."""
        atts = [a for a in state.attachments_of(vol.gid) if a.client in clients]
        if not atts:
            return []
        held = devices.open_paths()
        data_held = self.data_path(vol.gid) in held
        result = []
        for att in atts:
            if att.marked_open or data_held or self._device_held(att, held):
                result.append(att.client)
        return result

    def _device_held(self, att: Attachment, held: set[str]) -> bool:
        if att.loop:
            return att.loop in held or devices.device_in_use(att.loop)
        host = self.hosts.get(att.client)
        return host is not None and host.node(att.pos) in held

    def restore_devices(self) -> None:
        """On start: re-create every attachment's device; drop entries nothing explains."""
        with self.change(bump=False) as txn:
            state = txn.state
            wanted: dict[int, set[str]] = {cid: set() for cid in self.hosts}
            for att in state.attachments:
                host = self.hosts.get(att.client)
                vol = state.volumes.get(att.gid)
                if host is None or vol is None:
                    log.warning(
                        "attachment of %s to unconfigured client %d kept", att.gid, att.client
                    )
                    continue
                self._restore_one(att, vol, host)
                wanted[att.client].update(
                    {host.node(att.pos), host.byid_link(vol.gid)}
                    | ({host.name_link(vol.name)} if vol.name is not None else set())
                )
            if self.loop:
                in_use = {a.loop for a in state.attachments if a.loop}
                for dev in devices.loops_backed_by(self.store.objects_dir + os.sep):
                    if dev not in in_use:
                        log.info("detaching stale loop device %s", dev)
                        devices.loop_detach(dev)
            inodes = self._data_inodes()
            for cid, host in self.hosts.items():
                for entry in list(host.entries()):
                    if entry in wanted[cid]:
                        continue
                    if self._emulator_made(entry, inodes):
                        log.info("removing stale device entry %s", entry)
                        devices.remove_entry(entry)
                    else:
                        log.warning("leaving %s alone: not made by this emulator", entry)

    def _data_inodes(self) -> set[tuple[int, int]]:
        out = set()
        for entry in os.scandir(self.store.objects_dir):
            with contextlib.suppress(OSError):
                st = entry.stat()
                out.add((st.st_dev, st.st_ino))
        return out

    def _emulator_made(self, path: str, inodes: set[tuple[int, int]]) -> bool:
        """Whether a stale entry is ours to remove (a root may be a real /dev)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        ours = self.store.objects_dir + os.sep
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(path)
            if not os.path.exists(target) or target.startswith(ours):
                return True
            backing = devices.loop_backing_file(target) if "/loop" in target else None
            return backing is not None and backing.startswith(ours)
        if stat.S_ISREG(st.st_mode):  # a hard link to a data file, maybe of a deleted one
            return (st.st_dev, st.st_ino) in inodes or st.st_nlink == 1
        return False  # block devices and anything else belong to someone else

    def _restore_one(self, att: Attachment, vol: Volume, host: devices.ClientHost) -> None:
        data = self.data_path(vol.gid)
        if self.loop:
            if not (att.loop and devices.loop_backing_file(att.loop) == data):
                readonly = att.rights == "ro" or vol.snapshot
                att.loop = devices.loop_attach(data, readonly=readonly)
        elif att.loop:
            att.loop = None  # restarted without --loop: fall back to files
        # publish() replaces whatever is there, e.g. a hard link to an old inode.
        host.publish(att.pos, vol.name, vol.gid, self._target(att), loop=self.loop)

    def release_devices(self) -> None:
        """Tear down every device (for test and demo clean-up); attachments stay recorded."""
        with self.lock:
            for att in self.state.attachments:
                host = self.hosts.get(att.client)
                vol = self.state.volumes.get(att.gid)
                if host is not None and vol is not None:
                    host.unpublish(att.pos, vol.name, vol.gid)
                if att.loop:
                    devices.loop_detach(att.loop)

    # Garbage collection of snapshots.

    def collect_snapshots(self, txn: Txn) -> None:
        """Remove deleted, bound or transient snapshots that have become childless (an
        exported one waits until it is unexported: other locations may be fetching it)."""
        state = txn.state
        while True:
            doomed = [
                v
                for v in state.volumes.values()
                if v.snapshot
                and (v.deleted or v.bound or v.transient)
                and not v.exports
                and not state.children(v.gid)
                and not state.attachments_of(v.gid)
            ]
            if not doomed:
                return
            for snap in doomed:
                log.info("snapshot %s is gone (no children left)", snap.ref)
                self._drop_snapshot(txn, snap)

    def _drop_snapshot(self, txn: Txn, snap: Volume) -> None:
        del txn.state.volumes[snap.gid]
        self.drop_data_file(txn, snap.gid)
        if snap.recovering:
            gid = snap.gid
            txn.after_commit(lambda: self.transfers.cancel(gid, "the local snapshot was deleted"))

    def due_at(self, date: int | None) -> None:
        """A change gave a snapshot a targetDeleteDate (even if it rolls back: a bound)."""
        if date:
            with self.lock:
                self._next_due = min(self._next_due, date)

    def expire_snapshots(self) -> None:
        """Delete snapshots whose targetDeleteDate has passed (checked before each call)."""
        now = int(time.time())
        with self.lock:
            if now < self._next_due:
                return
            dated = [
                (v.gid, v.target_delete_date)
                for v in self.state.volumes.values()
                if v.snapshot and v.target_delete_date
            ]
            # An attached snapshot waits until it is detached, an exported one until unexported.
            due = [
                gid
                for gid, date in dated
                if date <= now
                and not self.state.attachments_of(gid)
                and not self.state.volumes[gid].exports
            ]
            self._next_due = min((d for g, d in dated if g not in due), default=math.inf)
            if not due:
                return
            with self.change() as txn:
                for gid in due:
                    snap = txn.state.volumes.get(gid)
                    if snap is None:  # gone with an earlier one of this batch
                        continue
                    snap.target_delete_date = None
                    log.info("snapshot %s reached its targetDeleteDate", snap.ref)
                    self.delete_snapshot(txn, snap)

    def delete_snapshot(self, txn: Txn, snap: Volume) -> None:
        """Delete now, or mark deleted until the last child goes away."""
        if txn.state.children(snap.gid):
            snap.deleted = True
            return
        self._drop_snapshot(txn, snap)
        self.collect_snapshots(txn)
