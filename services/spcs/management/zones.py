"""Copying a snapshot to another zone's StorPool pool (StorPool multi-cluster locations).

CloudStack's copySnapshot between zones becomes StorPool's own transfer between locations, as
the Java plugin does it: the source location exports the snapshot to the destination location,
the destination creates a copy from it (SnapshotFromRemote) and fetches its data
(SnapshotReconcile). Unlike the Java plugin, which leaves the unexport to a periodic task, the
job follows the transfer to its end (progress from the copy's stored bytes), unexports the
source itself, and asks StorPool to resume a transfer that stopped sending data.

StorPool keeps a snapshot's global id in every location, so the copy's path is the source's
path, on the destination pool. The copy carries `names.FILLING_TAG` (the operation id) until
it has all its data: a failed or cancelled copy deletes it only then, and the recovery sweep
removes one whose operation died with its replica.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.longrunning import operations_pb2

from spcs.common import errors, holds, validate
from spcs.common.operations import JobContext, OperationRegistry, fingerprint
from spcs.management import objects
from spcs.management.pools import Pools
from spcs.management.state import PoolRecord
from spcs.storpool import names
from spcs.storpool.api import cluster_of
from spcs.storpool.client import StorPoolClient
from spcs.storpool.records import Location, StorPoolSnapshot
from spcs.v1 import strategies_pb2, types_pb2

log = logging.getLogger(__name__)

KIND = "spcs.v1.SnapshotStrategy/CopySnapshot"
COPY = "snapshot-to-zone"  # its entry in the holds table, and its metrics kind
# The pool detail naming the pool's StorPool location (the Java plugin's name for it); without
# it the location is the one whose id begins the cluster's global ids.
LOCATION_DETAIL = "sp.cluster.location"
POLL_SECONDS = 0.5
# No new data for this long: ask StorPool to resume the transfer (SnapshotReconcile) again.
KICK_SECONDS = 5.0
DEFAULT_STALL_SECONDS = 600.0


@dataclass(frozen=True)
class ZoneCopy:
    source: PoolRecord
    destination: PoolRecord
    snapshot: StorPoolSnapshot
    uuid: str


@dataclass(frozen=True)
class _Arrival:
    """The copy in the destination pool, and whether this operation made it."""

    snapshot: StorPoolSnapshot
    ours: bool


class ZoneCopies:
    def __init__(
        self,
        pools: Pools,
        registry: OperationRegistry,
        *,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pools = pools
        self.registry = registry
        self.stall_seconds = stall_seconds
        self._clock = clock

    # ---- starting -------------------------------------------------------------------------

    def start(self, request: strategies_pb2.CopySnapshotRequest) -> operations_pb2.Operation:
        source = self.pools.get(request.pool.pool_uuid)
        snap = objects.require_snapshot(self.pools.api(source), request.snapshot)
        destination = self.pools.usable(request.destination_pool.pool_uuid)
        if source.uuid == destination.uuid:
            raise errors.InvalidArgument(
                f"destination_pool is the snapshot's own pool {source.name}; name a pool in "
                "the zone to copy the snapshot to"
            )
        if snap.recovering:
            raise errors.FailedPrecondition(
                f"snapshot {snap.ref} in pool {source.name} is itself still arriving from "
                "another StorPool location; copy it once it is complete"
            )
        uuid = request.snapshot.uuid or snap.tags.get("uuid", "")
        if not uuid:
            raise errors.InvalidArgument(
                f"snapshot {snap.ref} has no uuid tag: give snapshot.uuid, the CloudStack "
                "snapshot's uuid, which tags the copy"
            )
        validate.identifier(uuid, "snapshot.uuid")
        copy = ZoneCopy(source, destination, snap, uuid)
        args = strategies_pb2.CopySnapshotRequest()
        args.CopyFrom(request)
        args.ClearField("operation_id")
        return self.registry.start(
            request.operation_id,
            kind=KIND,
            fingerprint=fingerprint(args),
            target=f"{names.byid_path(snap.global_id)} in pool {destination.name}",
            runner=lambda ctx: self._run(ctx, copy),
            holds=holds.holds(
                COPY,
                source=holds.storpool_object(snap.global_id),
                destination=holds.zone_copy(snap.global_id, destination.uuid),
            ),
            metric_kind=COPY,
        )

    # ---- the job --------------------------------------------------------------------------

    def _run(self, ctx: JobContext, copy: ZoneCopy) -> strategies_pb2.CopySnapshotResult:
        src_api, dst_api = self.pools.api(copy.source), self.pools.api(copy.destination)
        ref = copy.snapshot.ref
        ctx.stage("finding the StorPool locations")
        src_loc = self.location(copy.source, src_api)
        dst_loc = self.location(copy.destination, dst_api)
        if src_loc.name == dst_loc.name:
            raise errors.FailedPrecondition(
                f"pools {copy.source.name} and {copy.destination.name} are both in StorPool "
                f"location {src_loc.name}: a snapshot there needs no copy between zones"
            )
        arrival = self._arrive(ctx, copy, src_api, dst_api, src_loc, dst_loc)
        try:
            stored = self._follow(ctx, copy, src_api, dst_api, src_loc)
            ctx.stage(f"unexporting from location {dst_loc.name}")
            src_api.snapshot_unexport(ref, dst_loc.name)
            if arrival.snapshot.tags.get(names.FILLING_TAG):
                dst_api.snapshot_update(ref, tags={names.FILLING_TAG: ""})
        except BaseException:
            if arrival.ours:
                self._remove(copy, src_api, dst_api, dst_loc)
            raise
        done = dst_api.snapshot(ref)
        log.info(
            "snapshot %s copied from pool %s (location %s) to pool %s (location %s)",
            ref,
            copy.source.name,
            src_loc.name,
            copy.destination.name,
            dst_loc.name,
        )
        return strategies_pb2.CopySnapshotResult(
            snapshot=types_pb2.Snapshot(
                uuid=copy.uuid,
                path=names.byid_path(done.global_id),
                store=types_pb2.DataStore(
                    primary=types_pb2.PrimaryStore(pool_uuid=copy.destination.uuid)
                ),
                format=types_pb2.IMAGE_FORMAT_RAW,
                size_bytes=done.size,
                global_id=done.global_id,
            ),
            source_location=src_loc.name,
            destination_location=dst_loc.name,
            bytes_stored=stored,
        )

    def _arrive(
        self,
        ctx: JobContext,
        copy: ZoneCopy,
        src_api: StorPoolClient,
        dst_api: StorPoolClient,
        src_loc: Location,
        dst_loc: Location,
    ) -> _Arrival:
        """The copy in the destination pool: one an earlier attempt of this operation started
        (or a finished one for the same uuid), else a new one."""
        ref = copy.snapshot.ref
        existing = dst_api.snapshot_or_none(ref)
        if existing is None:
            ctx.stage(f"exporting to location {dst_loc.name}")
            src_api.snapshot_export(ref, dst_loc.name)
            ctx.stage(f"copying from location {src_loc.name}")
            tags = {
                "uuid": copy.uuid,
                "cs": names.CS_SNAPSHOT,
                names.FILLING_TAG: ctx.operation_id,
            }
            try:
                # (already there: an earlier attempt's request took effect after all)
                with contextlib.suppress(errors.AlreadyExists):
                    dst_api.snapshot_from_remote(
                        src_loc.name,
                        copy.snapshot.global_id,
                        template=copy.destination.template,
                        tags=tags,
                    )
            except BaseException:
                # nothing arrived: the export was for this copy only
                _best_effort(
                    f"export of {ref} to location {dst_loc.name}",
                    lambda: src_api.snapshot_unexport(ref, dst_loc.name),
                )
                raise
            existing = dst_api.snapshot(ref)
        if existing.tags.get("uuid") != copy.uuid:
            raise errors.FailedPrecondition(
                f"pool {copy.destination.name} already holds StorPool snapshot {ref} for "
                f"another CloudStack object (uuid {existing.tags.get('uuid') or 'none'}); "
                "delete it there first"
            )
        filling = existing.tags.get(names.FILLING_TAG, "")
        return _Arrival(existing, ours=filling == ctx.operation_id)

    def _follow(
        self,
        ctx: JobContext,
        copy: ZoneCopy,
        src_api: StorPoolClient,
        dst_api: StorPoolClient,
        src_loc: Location,
    ) -> int:
        """Wait until the copy has all its data (recoveringFromRemote false), reporting its
        stored bytes against the source's; returns the copy's stored bytes."""
        gid, ref = copy.snapshot.global_id, copy.snapshot.ref
        total = _stored(src_api, gid)
        ctx.stage(f"receiving from location {src_loc.name}")
        dst_api.snapshot_reconcile(ref)
        wake = threading.Event()
        ctx.on_cancel(wake.set)
        last, changed = -1, self._clock()
        asked = changed
        while True:
            ctx.check_cancelled()
            snap = dst_api.snapshot_or_none(ref)
            if snap is None:
                raise errors.Conflict(
                    f"the copy {ref} in pool {copy.destination.name} was deleted while it was "
                    "arriving; retry with the same operation id to copy it again"
                )
            stored = _stored(dst_api, gid)
            ctx.progress(min(stored, total) if total else stored, total or None)
            if not snap.recovering:
                return stored
            now = self._clock()
            if stored != last:
                last, changed = stored, now
            elif now - changed >= self.stall_seconds:
                raise errors.Unavailable(
                    f"StorPool location {src_loc.name} sent no data of snapshot {ref} for "
                    f"{self.stall_seconds:.0f} s; check the link between the locations and "
                    "StorPool there, then retry with the same operation id"
                )
            if now - max(changed, asked) >= KICK_SECONDS:
                log.info("snapshot %s receives no data: asking StorPool to resume", ref)
                dst_api.snapshot_reconcile(ref)
                asked = now
            wake.wait(POLL_SECONDS)

    def _remove(
        self, copy: ZoneCopy, src_api: StorPoolClient, dst_api: StorPoolClient, dst_loc: Location
    ) -> None:
        """After a failure: the copy this operation made goes, and so does its export (both
        best effort: the job's own error is what the caller needs)."""
        ref = copy.snapshot.ref
        _best_effort(
            f"copy {ref} in pool {copy.destination.name}", lambda: dst_api.snapshot_delete(ref)
        )
        _best_effort(
            f"export of {ref} to location {dst_loc.name}",
            lambda: src_api.snapshot_unexport(ref, dst_loc.name),
        )

    # ---- locations ------------------------------------------------------------------------

    def location(self, pool: PoolRecord, api: StorPoolClient) -> Location:
        """The StorPool location of a pool's cluster: the pool detail `sp.cluster.location`,
        else the location whose id begins the cluster's global ids."""
        known = api.locations()
        wanted = pool.details.get(LOCATION_DETAIL, "")
        listed = ", ".join(loc.name for loc in known) or "none"
        if wanted:
            for loc in known:
                if loc.name == wanted:
                    return loc
            raise errors.FailedPrecondition(
                f"pool {pool.name}: its detail {LOCATION_DETAIL}={wanted} is not a location "
                f"StorPool at {api.endpoint} knows ({listed}); correct it with UpdatePool"
            )
        cluster = _volumes_cluster(api) or _probe_cluster(pool, api)
        location_id = cluster.split(".", 1)[0]
        for loc in known:
            if loc.id == location_id:
                return loc
        raise errors.FailedPrecondition(
            f"pool {pool.name}: StorPool at {api.endpoint} lists no location with id "
            f"{location_id} (it lists {listed}); set the pool detail {LOCATION_DETAIL} to its "
            "location's name with UpdatePool"
        )


def _best_effort(what: str, step: Callable[[], object]) -> None:
    """A clean-up step after a failure: its own error goes to the log, never over the job's."""
    try:
        step()
    except errors.SpcsError as error:
        log.warning("could not remove the %s after the copy failed: %s", what, error.message)


def _stored(api: StorPoolClient, global_id: str) -> int:
    for row in api.snapshots_space():
        if row.global_id == global_id:
            return row.used
    return 0


def _volumes_cluster(api: StorPoolClient) -> str | None:
    """The cluster id the endpoint's volumes' global ids show, when they agree. Never the
    snapshots': copies from other locations keep their global ids."""
    found = {cluster_of(volume.global_id) for volume in api.volumes()}
    found.discard(None)
    return found.pop() if len(found) == 1 else None


def _probe_cluster(pool: PoolRecord, api: StorPoolClient) -> str:
    """The cluster id of an endpoint that holds no volume: the global id it gives a
    512-byte probe volume (the Java plugin keeps such volumes per cluster; this one goes)."""
    name = names.probe_volume_name(pool.uuid)
    gid = api.volume_create(
        name=name, size=512, template=pool.template, tags={"cs": names.CS_PROBE}
    )
    try:
        api.volume_delete(f"~{gid}")
    except errors.SpcsError as error:
        log.warning("could not delete the probe volume %s: %s", name, error)
    cluster = gid.rsplit(".", 1)[0]
    if not cluster or "." not in cluster:
        raise errors.Internal(f"StorPool at {api.endpoint} gave the global id {gid!r}")
    return cluster
