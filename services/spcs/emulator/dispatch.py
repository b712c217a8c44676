"""From a raw HTTP request to a StorPool reply: path parsing, auth, bodies, faults, envelope.

Paths are parsed from the raw request target, because StorPool names carry
``#``, ``*``, ``@``, ``~`` and ``:`` unescaped (a URL parser would take ``#`` for
a fragment); each segment is also percent-decoded, to be tolerant.

Accepted forms (after ``/ctrl/1.0/``)::

    [RemoteCommand/<this cluster>/][MultiCluster/][AllClusters/]<Command>[/<arg>]

Emulator-specific choices:

* HTTP status of errors: 401 for a missing/wrong token (error ``notAuthorized``),
  404 for an unknown path or command (``invalidParam``), otherwise
  ``error_status`` (default 500). Clients key on the body's ``error``, not the status.
* An unexpected failure answers ``internalError`` (and is logged with its traceback).
* ``RemoteCommand/<x>/`` runs the command on cluster ``x``: this one (its id, ``~<id>``, or
  its configured name) or another location's on the same bridge (its cluster id, ``~<id>``, or
  its location name), so one API reaches every cluster, as StorPool's multi-cluster API
  forwards commands. A known cluster whose emulator is stopped answers ``busy``; an unknown
  one ``invalidParam``. Faults and request counts are this emulator's (the one asked).
* ``AllClusters/<Command>`` (GET only) wraps the reply as
  ``{"clusters": [{"clusterId": id, "response": {"generation": G, "data": ...}}]}``.
* A body that is a JSON *string* holding JSON is unwrapped (os-brick's retry
  path double-encodes bodies).
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

from spcs.emulator import admin
from spcs.emulator.cluster import Cluster
from spcs.emulator.devices import DeviceError
from spcs.emulator.errors import (
    INTERNAL_ERROR,
    NOT_AUTHORIZED,
    ApiError,
    busy,
    invalid,
    no_space,
)
from spcs.emulator.faults import Faults
from spcs.emulator.requests import RequestCounts
from spcs.emulator.routes import ROUTES, Request

log = logging.getLogger(__name__)

API_PREFIX = "/ctrl/1.0/"
MAX_BODY = 8 << 20


class Headers(Protocol):
    """A request's headers: the HTTP server's message, or a plain dict in tests."""

    def get(self, name: str, /) -> str | None: ...


@dataclass
class Reply:
    status: int
    payload: dict[str, Any]
    outcome: str  # "ok" or the error name, for the request log


class _HttpError(Exception):
    def __init__(self, status: int, error: ApiError) -> None:
        super().__init__(error.descr)
        self.status = status
        self.error = error


class Dispatcher:
    def __init__(
        self,
        cluster: Cluster,
        token: str,
        faults: Faults,
        *,
        error_status: int = 500,
        cluster_name: str | None = None,
        stopping: threading.Event | None = None,
        requests: RequestCounts | None = None,
    ) -> None:
        self.cluster = cluster
        self.faults = faults
        self.requests = requests if requests is not None else RequestCounts()
        self.error_status = error_status
        self._auth = f"Storpool v1:{token}".encode()
        cid = cluster.state.cluster_id
        self._names = {cid, f"~{cid}"} | ({cluster_name} if cluster_name else set())
        self._stopping = stopping or threading.Event()

    def handle(self, method: str, target: str, headers: Headers, body: bytes) -> Reply:
        try:
            return self._handle(method, target, headers, body)
        except _HttpError as exc:
            return Reply(exc.status, exc.error.envelope(), exc.error.name)
        except ApiError as exc:
            return Reply(self.error_status, exc.envelope(), exc.name)
        except DeviceError as exc:
            log.error("request %s %s: device operation failed: %s", method, target, exc)
            return self._internal(method, target, "a device operation failed")
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                log.error("request %s %s: %s", method, target, exc)
                err = no_space("the emulator's data filesystem is full; free space there")
                return Reply(self.error_status, err.envelope(), err.name)
            log.exception("request %s %s failed", method, target)
            return self._internal(method, target, "a file operation failed")
        except Exception:
            log.exception("request %s %s failed", method, target)
            return self._internal(method, target, "an unexpected error")

    def _internal(self, method: str, target: str, what: str) -> Reply:
        """A bug or an OS failure: the log has the details; the reply carries no exception
        text (no Python type names, paths or errno strings)."""
        path = target.partition("?")[0]
        err = ApiError(
            INTERNAL_ERROR,
            f"the emulator failed on {method} {path}: {what}; its log has the details",
        )
        return Reply(500, err.envelope(), err.name)

    def _handle(self, method: str, target: str, headers: Headers, body: bytes) -> Reply:
        path, _, query = target.partition("?")
        if not path.startswith(API_PREFIX):
            raise _HttpError(404, invalid(f"unknown path {path}"))
        self._check_auth(headers)
        segs = [unquote(s) for s in path[len(API_PREFIX) :].split("/")]
        while segs and segs[-1] == "":
            segs.pop()
        if segs and segs[0] == admin.PREFIX:
            data = admin.handle(
                self.cluster, self.faults, method, segs[1:], _parse(body, query), self.requests
            )
            return self._ok(data)
        cluster, segs = self._target(segs)
        mc, all_clusters, segs = self._prefixes(segs)
        if not segs:
            raise _HttpError(404, invalid("no command in the path"))
        command, args = segs[0], segs[1:]
        route = ROUTES.get(command)
        if route is None:
            raise _HttpError(404, invalid(f"unknown command {command}"))
        self.requests.add(command)
        if method != route.method:
            raise invalid(f"{command} is a {route.method} request")
        if len(args) != route.nargs:
            raise invalid(f"{command} takes {route.nargs} path argument(s), got {len(args)}")
        if all_clusters and method != "GET":
            raise invalid("AllClusters/ is for GET requests only")
        req = Request(command, method, args, _parse(body, query), mc)
        return self._run(route.handler, req, all_clusters, cluster)

    def _check_auth(self, headers: Headers) -> None:
        given = (headers.get("Authorization") or "").strip().encode("utf-8", "replace")
        if not hmac.compare_digest(given, self._auth):
            err = ApiError(NOT_AUTHORIZED, "missing or wrong Authorization: Storpool v1:<token>")
            raise _HttpError(401, err)

    def _target(self, segs: list[str]) -> tuple[Cluster, list[str]]:
        """The cluster a ``RemoteCommand/<x>/`` prefix names (else this one), and the rest."""
        if not segs or segs[0] != "RemoteCommand":
            return self.cluster, segs
        where = segs[1] if len(segs) > 1 else ""
        if where in self._names:
            return self.cluster, segs[2:]
        for loc in self.cluster.bridge.locations():
            other = loc.cluster
            ids = {loc.name} | (
                {other.state.cluster_id, f"~{other.state.cluster_id}"} if other else set()
            )
            if where in ids:
                if other is None:
                    raise busy(f"cluster {where} (location {loc.name}) is not reachable")
                return other, segs[2:]
        known = ", ".join(loc.name for loc in self.cluster.bridge.locations())
        raise invalid(f"unknown cluster {where!r}; the locations on this bridge: {known}")

    def _prefixes(self, segs: list[str]) -> tuple[bool, bool, list[str]]:
        mc = all_clusters = False
        if segs and segs[0] == "MultiCluster":
            mc, segs = True, segs[1:]
        if segs and segs[0] == "AllClusters":
            all_clusters, segs = True, segs[1:]
        return mc, all_clusters, segs

    def _run(self, handler: Any, req: Request, all_clusters: bool, cluster: Cluster) -> Reply:
        delay = self.faults.delay(req.command)
        if delay:
            self._stopping.wait(delay)  # outside the state lock; stop() cuts it short
        fault = self.faults.before(req.command)
        if fault is not None:
            raise fault
        cluster.expire_snapshots()
        data = handler(cluster, req)
        if all_clusters:
            data = {
                "clusters": [
                    {
                        "clusterId": cluster.state.cluster_id,
                        "response": {"generation": cluster.state.generation, "data": data},
                    }
                ]
            }
        fault = self.faults.after(req.command)
        if fault is not None:
            raise fault
        return self._ok(data, cluster)

    def _ok(self, data: Any, cluster: Cluster | None = None) -> Reply:
        generation = (cluster or self.cluster).state.generation
        return Reply(200, {"generation": generation, "data": data}, "ok")


def _parse(body: bytes, query: str) -> Any:
    """The request's JSON: the body, else ``?json=`` (GET), else None."""
    raw: bytes | str = body
    if not body.strip():
        values = parse_qs(query, keep_blank_values=True).get("json") if query else None
        if not values:
            return None
        raw = values[-1]
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise invalid(
            f"malformed JSON in the request at line {exc.lineno}, column {exc.colno}; "
            "send a JSON object or array"
        ) from None
    except UnicodeDecodeError:
        raise invalid("the request body is not UTF-8 text; send a JSON object or array") from None
    except (ValueError, RecursionError):  # a number too long, nesting too deep
        raise invalid(
            "malformed JSON in the request (a number too long or nesting too deep); send "
            "a JSON object or array"
        ) from None
    if isinstance(data, str):
        try:
            inner = json.loads(data)
        except (ValueError, RecursionError):
            inner = None
        if isinstance(inner, dict | list):
            data = inner
    return data
