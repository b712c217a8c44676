"""The emulator's own admin endpoints under ``/ctrl/1.0/_emulator/`` (token-protected).

Emulator-specific; nothing like them exists in StorPool:

* ``GET  _emulator/faults``: the fault configuration (see `spcs.emulator.faults`);
* ``POST _emulator/faults``: replace it (``{}`` switches every fault off);
* ``POST _emulator/open``: ``{"client": N, "volume"|"snapshot": ref, "open": bool}``
  marks an attachment open (or not), as if a process on that client held it;
* ``POST _emulator/capacity``: ``{"template": name, "capacity": bytes|null}``;
* ``POST _emulator/client``: ``{"client": N, "running": bool}`` shows that client's StorPool
  service as down (or running again) in ServicesList, as if its host had died;
* ``GET  _emulator/state``: the whole persisted state plus runtime facts (for debugging): the
  location's id and name, and the snapshots being fetched from other locations;
* ``GET  _emulator/requests``: ``{"counts": {command: n}, "total": n}``, the API requests
  answered per command (see `spcs.emulator.requests`);
* ``POST _emulator/requests``: start counting from zero; answers the counts until then.

Replies use the normal envelope. Admin changes do not bump the generation.
"""

from __future__ import annotations

from typing import Any

from spcs.emulator import attachments, templates
from spcs.emulator.cluster import Cluster
from spcs.emulator.errors import ApiError, invalid
from spcs.emulator.faults import FaultConfig, Faults
from spcs.emulator.requests import RequestCounts

PREFIX = "_emulator"


def snapshot(cluster: Cluster) -> dict[str, Any]:
    with cluster.read() as state:
        return {
            "state": state.to_json(),
            "dataDir": cluster.store.dir,
            "clients": {cid: host.root for cid, host in cluster.hosts.items()},
            "loop": cluster.loop,
            "location": {"id": cluster.location_id, "name": cluster.location_name},
            "transfersRunning": cluster.transfers.running(),
        }


def handle(
    cluster: Cluster,
    faults: Faults,
    method: str,
    args: list[str],
    body: Any,
    requests: RequestCounts | None = None,
) -> Any:
    what = "/".join(args)
    if what == "requests" and requests is not None and method in ("GET", "POST"):
        if method == "GET":
            return requests.to_json()
        before = requests.reset()
        return {"counts": before, "total": sum(before.values())}
    if (method, what) == ("GET", "faults"):
        return faults.config.to_json()
    if (method, what) == ("POST", "faults"):
        faults.configure(FaultConfig.from_json(body if body is not None else {}))
        return faults.config.to_json()
    if (method, what) == ("POST", "open"):
        with cluster.change(bump=False) as txn:
            return attachments.mark_open(cluster, txn, body)
    if (method, what) == ("POST", "capacity"):
        with cluster.change(bump=False) as txn:
            return templates.set_capacity(cluster, txn, body)
    if (method, what) == ("POST", "client"):
        return _client(cluster, body)
    if (method, what) == ("GET", "state"):
        return snapshot(cluster)
    raise _unknown(method, what)


def _client(cluster: Cluster, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("running"), bool):
        raise invalid('_emulator/client needs {"client": N, "running": true|false}')
    client = body.get("client")
    if not isinstance(client, int) or isinstance(client, bool):
        raise invalid("_emulator/client: client must be a client id (an integer)")
    cluster.set_client_running(client, body["running"])
    return {"client": client, "running": body["running"]}


def _unknown(method: str, what: str) -> ApiError:
    return invalid(f"unknown admin endpoint {method} {PREFIX}/{what}")
