"""The KVM HA heartbeat: is a host's StorPool client running, asked through another host.

CloudStack's HA investigator asks about a host it cannot reach; the host's own node is then
likely gone with it, so the question goes to the node of another host of the same StorPool
cluster (the Java agent reads `storpool -j service list` on a neighbour the same way). Each
node asked gets a short deadline and the next one is tried; the answer says what StorPool
showed and who asked. Nothing here fences or reboots a host.
"""

from __future__ import annotations

import logging

from spcs.common import errors, validate
from spcs.management.nodecalls import NodeCalls
from spcs.management.nodes import NodeDirectory
from spcs.management.state import NodeRecord
from spcs.v1 import hosts_pb2, node_pb2, node_pb2_grpc

log = logging.getLogger(__name__)

# per node asked: its StorPool probe (5 s, 1 s of retries) and the call, within what an HA
# investigator waits
ASK_SECONDS = 8.0


class Heartbeats:
    def __init__(self, nodes: NodeDirectory, calls: NodeCalls) -> None:
        self.nodes = nodes
        self.calls = calls

    def check(self, host_id: str, via_host_id: str = "") -> hosts_pb2.CheckHostHeartbeatResponse:
        if via_host_id:
            validate.identifier(via_host_id, "via_host_id")
        target = self.nodes.get(host_id)
        askers = [self.nodes.get(via_host_id)] if via_host_id else self._askers(target)
        failures: list[str] = []
        for asker in askers:
            try:
                seen = self._ask(asker, target)
            except (errors.Unavailable, errors.FailedPrecondition) as error:
                failures.append(f"{asker.host_id}: {error.message}")
                continue
            reply = self._reply(target, asker, seen)
            log.info("heartbeat of host %s via %s: %s", host_id, asker.host_id, reply.message)
            return reply
        raise errors.Unavailable(
            f"cannot tell whether host {host_id}'s StorPool client (id {target.client_id}) runs: "
            + ("; ".join(failures) or "no node of its StorPool cluster is registered")
            + "; check those nodes and their hosts' StorPool API access"
        )

    def _askers(self, target: NodeRecord) -> list[NodeRecord]:
        """Healthy nodes of the target's StorPool cluster, other hosts first (most recently
        heard from first); the target's own node last, as the only one left."""
        same = [
            n
            for n in self.nodes.all()
            if not target.cluster_id or not n.cluster_id or n.cluster_id == target.cluster_id
        ]
        others = sorted(
            (n for n in same if n.host_id != target.host_id and n.healthy),
            key=lambda n: -n.last_seen,
        )
        return [*others, target]

    def _ask(self, asker: NodeRecord, target: NodeRecord) -> node_pb2.ClientHeartbeat:
        own = asker.host_id == target.host_id
        answer = self.calls.call(
            asker.host_id,
            "CheckHeartbeat",
            lambda ch: node_pb2_grpc.AgentCommandsStub(ch).CheckHeartbeat(
                node_pb2.CheckHeartbeatRequest(
                    neighbour_client_ids=[] if own else [target.client_id]
                ),
                timeout=ASK_SECONDS,
            ),
            retry_seconds=0,
        )
        return answer.own if own else answer.neighbours[0]

    @staticmethod
    def _reply(
        target: NodeRecord, asker: NodeRecord, seen: node_pb2.ClientHeartbeat
    ) -> hosts_pb2.CheckHostHeartbeatResponse:
        if seen.running:
            said = f"StorPool shows client {target.client_id} running"
        elif seen.status:
            said = f"StorPool shows client {target.client_id} {seen.status}, not running"
        else:
            said = f"StorPool lists no client {target.client_id}"
        return hosts_pb2.CheckHostHeartbeatResponse(
            host_id=target.host_id,
            storpool_client_id=target.client_id,
            alive=seen.running,
            status=seen.status,
            checked_by_host_id=asker.host_id,
            message=f"{said} (asked through host {asker.host_id}'s node)",
        )
