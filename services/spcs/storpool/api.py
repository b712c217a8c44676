"""The one facade over StorPool's REST API, shared by the management and node services.

Calls go through StorPool's official bindings (`spapi.Api`, multi-cluster paths, their
client-side validation of names, sizes and tags). Transient errors (`"transient": true`) and
connection failures are retried here with tenacity (exponential backoff with jitter, bounded
total time), because the bindings' own retry sleeps up to 31 s and ignores timeouts. Every
StorPool error leaves this module as a domain error (`spcs.common.errors`) whose message names
the object and what to do, typed by `spcs.storpool.errors` (StorPool's error name and
description kept as `.sp_name` / `.sp_desc`).

Mutations are retried too, so every object spcs creates has a deterministic name
(`spcs.storpool.names`): a create that took effect before a connection dropped meets
`objectExists` on the retry and the caller checks it instead of making a second object.

A host name that does not resolve is final at once (`UNRESOLVABLE_HOST`), never retried. No
size above `spcs.common.validate.MAX_SIZE` is sent. `StorPoolApi.space` caches the cluster's
VolumesSpace answer (StorPool has no per-volume space call) with single-flight refresh; the
changes this process makes through the facade keep it true.
"""

from __future__ import annotations

import functools
import http.client
import logging
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import tenacity

from spcs.common import errors, metrics, upstream_time, validate
from spcs.storpool import errors as sp_errors
from spcs.storpool import names
from spcs.storpool.bindings import spapi, spcatch
from spcs.storpool.records import (
    RUNNING,
    Attachment,
    Location,
    StorPoolSnapshot,
    StorPoolVolume,
    TemplateStatus,
)
from spcs.storpool.space import SpaceCache, VolumeSpace

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Transient(Exception):
    """Retry signal: the call may succeed if repeated."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class RetryPolicy:
    total_seconds: float = 30.0
    max_wait: float = 4.0
    sleep: Callable[[float], None] = field(default=time.sleep)


# The ErrorInfo reason of the Unavailable raised when the API host name does not resolve.
UNRESOLVABLE_HOST = "STORPOOL_HOST_UNRESOLVABLE"

# Health probes must answer quickly: a short timeout and next to no retrying.
PROBE_TIMEOUT = 5.0
PROBE_RETRY = RetryPolicy(total_seconds=1.0, max_wait=0.5)


def _limit(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": str(raw.get("name", "")),
        "global_id": str(raw.get("globalId", "")),
        "size": int(raw.get("size") or 0),
        "parent": str(raw.get("parentName") or ""),
        "template": str(raw.get("templateName") or ""),
        "iops": _limit(raw.get("iops")),
        "bw": _limit(raw.get("bw")),
        "tags": dict(raw.get("tags") or {}),
        "created": int(raw.get("creationTimestamp") or 0),
    }


def _space_row(raw: Mapping[str, Any]) -> VolumeSpace:
    return VolumeSpace(
        name=str(raw.get("name", "")),
        global_id=str(raw.get("globalId", "")),
        template=str(raw.get("templateName") or ""),
        size=int(raw.get("size") or 0),
        used=int(raw.get("spaceUsed") or 0),
        iops=_limit(raw.get("iops")),
        bw=_limit(raw.get("bw")),
        cs=str((raw.get("tags") or {}).get("cs", "")),
    )


def _volume(raw: Mapping[str, Any]) -> StorPoolVolume:
    return StorPoolVolume(**_fields(raw))


def _snapshot(raw: Mapping[str, Any]) -> StorPoolSnapshot:
    return StorPoolSnapshot(
        **_fields(raw),
        deleted=bool(raw.get("deleted", False)),
        on_volume=str(raw.get("onVolume") or ""),
        delete_at=int(raw.get("targetDeleteDate") or 0),
        recovering=bool(raw.get("recoveringFromRemote", False)),
    )


def _retrying_log(state: tenacity.RetryCallState) -> None:
    what, _fn, call = state.args
    metrics.STORPOOL_RETRIES.labels(call).inc()
    log.warning(
        "StorPool API %s: %s (attempt %d), retrying",
        what,
        state.outcome.exception() if state.outcome else "?",
        state.attempt_number,
    )


class StorPoolApi:
    """A StorPool API endpoint. Thread-safe: the bindings open a connection per call."""

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._connection = (host, port, token)
        # built once (it is reused across calls and threads); `what` arrives as the call's
        # first argument, for the log line
        policy = retry or RetryPolicy()
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=policy.max_wait),
            stop=tenacity.stop_after_delay(policy.total_seconds),
            sleep=policy.sleep,
            before_sleep=_retrying_log,
            reraise=True,
        )
        self.endpoint = f"{host}:{port}"
        self._api = spapi.Api(
            host=host, port=port, auth=token, timeout=timeout, transientRetries=0, multiCluster=True
        )
        self.space = SpaceCache(self._volumes_space_rows)

    # ---- the call wrapper -----------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T], call: str = "") -> T:
        """Run one API call with retries; `what` names the object for error messages, `call`
        the call for the metrics (by default the facade method that makes it: a bounded
        name, never an object's)."""
        call = call or sys._getframe(1).f_code.co_name
        started = time.monotonic()
        outcome = "error"
        try:
            # bound to a non-generic local: passed as is, the generic method would make
            # tenacity's return type Any
            attempt: Callable[[str, Callable[[], T], str], T] = self._attempt
            answer = self._retrying(attempt, what, fn, call)
            outcome = "ok"
            return answer
        except _Transient as failure:
            outcome = "transient"
            cause = failure.cause
            if isinstance(cause, spapi.ApiError):
                raise sp_errors.kept_transient(
                    self.endpoint, what, str(cause.name), str(cause.desc)
                ) from None
            raise errors.Unavailable(
                f"StorPool API at {self.endpoint} is unreachable for {what}: {cause}; check "
                "SP_API_HTTP_HOST/SP_API_HTTP_PORT and that the StorPool management service "
                "runs"
            ) from None
        finally:
            elapsed = time.monotonic() - started
            upstream_time.add(elapsed)
            metrics.STORPOOL_SECONDS.labels(call, outcome).observe(elapsed)

    def _attempt(self, what: str, fn: Callable[[], T], call: str) -> T:
        try:
            return fn()
        except spapi.ApiError as error:
            if error.transient:
                metrics.STORPOOL_TRANSIENT.labels(call).inc()
                raise _Transient(error) from error
            raise self._domain_error(what, error) from None
        except spcatch.InvalidArgumentError as error:
            raise errors.InvalidArgument(f"{what}: {error}") from None
        except socket.gaierror as error:
            # A name that does not resolve will not resolve on a retry either: final at once.
            host = self._connection[0]
            raise errors.Unavailable(
                f"StorPool API host {host!r} cannot be resolved for {what} "
                f"({error.strerror or 'name resolution failed'}); check the name "
                "(SP_API_HTTP_HOST, or the host in the pool URL) and the host's DNS",
                reason=UNRESOLVABLE_HOST,
            ) from None
        except (ConnectionError, TimeoutError, http.client.HTTPException, OSError) as error:
            metrics.STORPOOL_TRANSIENT.labels(call).inc()
            raise _Transient(error) from error
        except ValueError as error:  # a reply that is not JSON
            raise errors.Internal(
                f"StorPool API at {self.endpoint} sent a reply that is not JSON for {what}: {error}"
            ) from None

    def _domain_error(self, what: str, error: spapi.ApiError) -> sp_errors.StorPoolError:
        return sp_errors.answered(
            self.endpoint, what, str(error.name), str(error.desc), int(error.status or 0)
        )

    def raw(self, method: str, path: str, body: object | None = None, *, what: str) -> Any:
        """An API call the bindings do not type (fields newer than bindings 7.3.0)."""
        command = path.split("/", 1)[0]  # the API's command name, without the object's
        return self._call(what, lambda: self._api(method, True, path, body), command)

    # ---- volumes ----------------------------------------------------------------------------

    def volume(self, ref: str) -> StorPoolVolume:
        data = self._call(f"volume {ref}", lambda: self._api.volumeList(ref, returnRawAPIData=True))
        return _volume(data[0])

    def volume_or_none(self, ref: str) -> StorPoolVolume | None:
        try:
            return self.volume(ref)
        except errors.NotFound:
            return None

    def volumes(self) -> list[StorPoolVolume]:
        data = self._call("list volumes", lambda: self._api.volumesList(returnRawAPIData=True))
        return [_volume(raw) for raw in data]

    def volume_create(
        self,
        *,
        name: str,
        size: int | None = None,
        template: str | None = None,
        parent: str | None = None,
        base_on: str | None = None,
        iops: int | None = None,
        bw: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Create a named volume; returns its global id."""
        _check_size(f"create volume {name}", size)
        body = {
            "name": name,
            "size": size,
            "template": template,
            "parent": parent,
            "baseOn": base_on,
            "iops": iops,
            "bw": bw,
            "tags": dict(tags or {}) or None,
        }
        body = {k: v for k, v in body.items() if v is not None}
        data = self._call(
            f"create volume {name}", lambda: self._api.volumeCreate(body, returnRawAPIData=True)
        )
        return str(data.get("globalId") or self.volume(name).global_id)

    def volume_update(self, ref: str, **changes: Any) -> None:
        """VolumeUpdate with StorPool field names (size, shrinkOk, iops, bw, template, tags...)."""
        _check_size(f"update volume {ref}", changes.get("size"))
        body = {k: v for k, v in changes.items() if v is not None}
        self._call(
            f"update volume {ref}", lambda: self._api.volumeUpdate(ref, body, returnRawAPIData=True)
        )
        if "rename" in body:  # its row is looked up again under the new name
            self.space.change(ref, gone=True)
            return
        size, template = body.get("size"), body.get("template")
        self.space.change(
            ref,
            size=size if isinstance(size, int) else None,
            template=template if isinstance(template, str) else None,
        )

    def volume_delete(self, ref: str) -> bool:
        """Delete, detaching it from every client first; False if it did not exist."""
        try:
            self.raw(
                "POST",
                f"VolumeDelete/{names.url_ref(ref, f'delete volume {ref!r}')}",
                {"onAttached": "detachForce"},
                what=f"delete volume {ref}",
            )
        except errors.NotFound:
            self.space.change(ref, gone=True)
            return False
        self.space.change(ref, gone=True)
        return True

    def volume_revert(self, ref: str, snapshot_ref: str) -> None:
        self._call(
            f"revert volume {ref} to {snapshot_ref}",
            lambda: self._api.volumeRevert(
                ref, {"toSnapshot": snapshot_ref}, returnRawAPIData=True
            ),
        )

    # ---- snapshots --------------------------------------------------------------------------

    def snapshot(self, ref: str) -> StorPoolSnapshot:
        data = self._call(
            f"snapshot {ref}", lambda: self._api.snapshotList(ref, returnRawAPIData=True)
        )
        return _snapshot(data[0])

    def snapshot_or_none(self, ref: str) -> StorPoolSnapshot | None:
        try:
            snap = self.snapshot(ref)
        except errors.NotFound:
            return None
        return None if snap.deleted else snap

    def snapshots(self) -> list[StorPoolSnapshot]:
        data = self._call("list snapshots", lambda: self._api.snapshotsList(returnRawAPIData=True))
        return [_snapshot(raw) for raw in data]

    def snapshot_create(
        self,
        volume_ref: str,
        *,
        name: str,
        tags: Mapping[str, str] | None = None,
        delete_after: int = 0,
    ) -> str:
        """Snapshot a volume under a name; returns the snapshot's global id. `delete_after`:
        StorPool deletes the snapshot itself that many seconds from now (0: never)."""
        body: dict[str, Any] = {"name": name}
        if tags:
            body["tags"] = dict(tags)
        if delete_after:
            body["deleteAfter"] = delete_after
        data = self._call(
            f"snapshot volume {volume_ref} as {name}",
            lambda: self._api.snapshotCreate(volume_ref, body, returnRawAPIData=True),
        )
        return str(data.get("snapshotGlobalId") or self.snapshot(name).global_id)

    def snapshot_update(self, ref: str, **changes: Any) -> None:
        body = {k: v for k, v in changes.items() if v is not None}
        path = f"SnapshotUpdate/{names.url_ref(ref, f'update snapshot {ref!r}')}"
        self.raw("POST", path, body, what=f"update snapshot {ref}")

    def snapshot_delete(self, ref: str) -> bool:
        """Detach everywhere, then delete; False if it did not exist."""
        try:
            self.detach_all(ref, snapshot=True)
            self._call(
                f"delete snapshot {ref}",
                lambda: self._api.snapshotDelete(ref, returnRawAPIData=True),
            )
        except errors.NotFound:
            return False
        return True

    def group_snapshot(
        self, volumes: Iterable[tuple[str, str]], tags: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Consistent snapshots of several volumes: [(volume ref, snapshot name)]."""
        body = {
            "volumes": [{"volume": ref, "name": name} for ref, name in volumes],
            "tags": dict(tags),
        }
        data = self._call(
            "group snapshot", lambda: self._api.snapshotCreateGroup(body, returnRawAPIData=True)
        )
        return list(data.get("snapshots", []))

    # ---- other locations (multi-cluster snapshot transfer) ----------------------------------
    # Plain paths, not MultiCluster/: the calls act on the location as a whole, and the Java
    # plugin sends them so.

    def _plain(self, what: str, method: str, path: str, body: object | None = None) -> Any:
        command = path.split("/", 1)[0]
        return self._call(what, lambda: self._api(method, False, path, body), command)

    def locations(self) -> list[Location]:
        """Every location this one knows, itself included (LocationsList)."""
        data = self._plain("list StorPool locations", "GET", "LocationsList")
        return [
            Location(str(raw.get("id", "")), str(raw.get("name", "")))
            for raw in (data or {}).get("locations", [])
            if isinstance(raw, dict)
        ]

    def snapshot_export(self, ref: str, location: str) -> None:
        """Let `location` read the snapshot (SnapshotExport); exporting twice is harmless."""
        body = {"snapshot": ref, "location": location}
        self._plain(f"export snapshot {ref} to location {location}", "POST", "SnapshotExport", body)

    def snapshot_unexport(self, ref: str, location: str | None) -> None:
        """Take the export to `location` back (None: every export, even one a remote location
        still reads from); a snapshot that is not exported there is fine."""
        body: dict[str, Any] = {"snapshot": ref}
        if location is None:
            body.update({"all": True, "force": True})
        else:
            body["location"] = location
        where = f"location {location}" if location else "every location"
        self._plain(f"unexport snapshot {ref} from {where}", "POST", "SnapshotUnexport", body)

    def snapshot_from_remote(
        self, location: str, global_id: str, *, template: str, tags: Mapping[str, str]
    ) -> str:
        """Start copying snapshot `global_id` of `location` here (SnapshotFromRemote); returns
        the local snapshot's global id (StorPool keeps the remote one's)."""
        body = {
            "remoteLocation": location,
            "remoteId": global_id,
            "name": "",
            "template": template,
            "tags": dict(tags),
        }
        what = f"copy snapshot {global_id} from location {location}"
        data = self._plain(what, "POST", "SnapshotFromRemote", body)
        if isinstance(data, dict):  # the reply's shape is not documented: look, else the id
            return str(data.get("snapshotGlobalId") or data.get("globalId") or global_id)
        return global_id

    def snapshot_reconcile(self, ref: str) -> None:
        """Have StorPool (re)start fetching what the snapshot still misses from its location."""
        path = f"SnapshotReconcile/{names.url_ref(ref, f'reconcile snapshot {ref!r}')}"
        self._plain(f"reconcile snapshot {ref}", "POST", path)

    # ---- attachments ------------------------------------------------------------------------

    def attachments(self) -> list[Attachment]:
        data = self._call(
            "list attachments", lambda: self._api.attachmentsList(returnRawAPIData=True)
        )
        return [
            Attachment(
                str(a["volume"]),
                bool(a["snapshot"]),
                int(a["client"]),
                str(a["rights"]),
                str(a.get("globalId", "")),
            )
            for a in data
        ]

    def attach(
        self, ref: str, client_id: int, *, read_only: bool, snapshot: bool, timeout: int
    ) -> None:
        """Attach and wait until the client has the device (VolumesReassignWait)."""
        key = "snapshot" if snapshot else "volume"
        mode = "ro" if read_only or snapshot else "rw"
        body = {"reassign": [{key: ref, mode: [client_id]}], "attachTimeout": timeout}
        self._call(
            f"attach {key} {ref} to client {client_id}",
            lambda: self._api.volumesReassignWait(body, returnRawAPIData=True),
        )

    def detach(self, ref: str, client_id: int, *, snapshot: bool, force: bool) -> None:
        key = "snapshot" if snapshot else "volume"
        body = {"reassign": [{key: ref, "detach": [client_id], "force": force}], "attachTimeout": 0}
        self._call(
            f"detach {key} {ref} from client {client_id}",
            lambda: self._api.volumesReassignWait(body, returnRawAPIData=True),
        )

    def detach_all(self, ref: str, *, snapshot: bool) -> None:
        """Force-detach from every client (the guard against dangling attachments)."""
        key = "snapshot" if snapshot else "volume"
        self._call(
            f"detach {key} {ref} from all clients",
            lambda: self._api.volumesReassign(
                [{key: ref, "detach": "all", "force": True}], returnRawAPIData=True
            ),
        )

    # ---- templates, clients, space ----------------------------------------------------------

    def template(self, name: str) -> dict[str, Any]:
        return dict(
            self._call(
                f"template {name}",
                lambda: self._api.volumeTemplateDescribe(name, returnRawAPIData=True),
            )
        )

    def template_status(self, name: str) -> TemplateStatus:
        data = self._call(
            "template status", lambda: self._api.volumeTemplatesStatus(returnRawAPIData=True)
        )
        for raw in data:
            if raw.get("name") == name:
                stored = raw.get("stored") or {}
                return TemplateStatus(
                    name,
                    int(stored.get("capacity", 0)),
                    int(stored.get("free", 0)),
                    int(raw.get("volumesCount", 0)),
                    int(raw.get("snapshotsCount", 0)),
                )
        raise errors.NotFound(f"StorPool template {name} does not exist at {self.endpoint}")

    def volumes_space(self) -> dict[str, tuple[int, int]]:
        """name → (size, spaceUsed) for every volume (one VolumesSpace call, uncached)."""
        return {row.name: (row.size, row.used) for row in self._volumes_space_rows()}

    def snapshots_space(self) -> list[VolumeSpace]:
        """Every snapshot's row of SnapshotsSpace (one call, uncached)."""
        data = self._call("snapshot space", lambda: self._api.snapshotsSpace(returnRawAPIData=True))
        return [_space_row(r) for r in data if r.get("globalId")]

    def _volumes_space_rows(self) -> list[VolumeSpace]:
        data = self._call("volume space", lambda: self._api.volumesSpace(returnRawAPIData=True))
        return [_space_row(r) for r in data if r.get("globalId")]

    def for_probes(self) -> StorPoolApi:
        """The same endpoint with the short timeout and retries a health probe needs."""
        host, port, token = self._connection
        return StorPoolApi(host, port, token, timeout=PROBE_TIMEOUT, retry=PROBE_RETRY)

    def local_cluster_id(self) -> str | None:
        """This cluster's id (SP_CLUSTER_ID, `<location>.<subcluster>`) as StorPool shows it:
        the first two parts of the global ids of the cluster's own volumes, else snapshots.
        The plain (not MultiCluster/) listings answer for the local cluster only. None when
        the cluster holds no object yet, or its objects' ids disagree (objects moved in from
        another cluster): then only SP_CLUSTER_ID in the config can say."""
        for query in ("VolumesList", "SnapshotsList"):
            data = self._call(
                f"{query} (to learn the cluster id)",
                functools.partial(self._api, "GET", False, query),
            )
            found = {cluster_of(str(raw.get("globalId") or "")) for raw in data or []}
            found.discard(None)
            if len(found) == 1:
                return found.pop()
            if found:
                log.warning(
                    "StorPool at %s holds objects of clusters %s; the cluster id is ambiguous",
                    self.endpoint,
                    ", ".join(sorted(str(c) for c in found)),
                )
                return None
        return None

    def client_running(self, client_id: int) -> bool:
        return self.client_statuses().get(client_id) == RUNNING

    def client_statuses(self) -> dict[int, str]:
        """client id → its service's status ("running", "down", ...), from one ServicesList."""
        data = self._call("list services", lambda: self._api.servicesList(returnRawAPIData=True))
        found: dict[int, str] = {}
        for key, client in (data.get("clients") or {}).items():
            if str(key).isdigit() and isinstance(client, dict):
                found[int(key)] = str(client.get("status") or "")
        return found


_GLOBAL_ID = re.compile(r"^([a-z0-9]+\.[a-z0-9]+)\.[a-z0-9]+$")


def cluster_of(global_id: str) -> str | None:
    """The cluster id in a global id (`<location>.<subcluster>.<object>`), or None."""
    match = _GLOBAL_ID.match(global_id)
    return match.group(1) if match else None


def _check_size(what: str, size: object) -> None:
    """Never send StorPool a size above the maximum (whoever computed it: a caller, an image's
    virtual size): INVALID_ARGUMENT naming the object and the maximum."""
    if isinstance(size, int) and size > validate.MAX_SIZE:
        raise errors.InvalidArgument(
            f"{what}: size {size} is larger than the maximum StorPool volume size, "
            f"{validate.MAX_SIZE_TEXT}"
        )
