"""Wiring of the node service: StorPool access for this host, copy jobs, the gRPC services."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from spcs import _datamover
from spcs.common import authz, errors
from spcs.common.identity import IdentityInfo, IdentityServicer
from spcs.common.journal import SqliteJournal
from spcs.common.locks import KeyedLocks
from spcs.common.operations import OperationRegistry, OperationsServicer
from spcs.common.server import Server, bind, bind_operations
from spcs.common.sqlite import OPERATIONS_TABLE, Database
from spcs.common.tls import TlsFiles
from spcs.node.adaptor import Adaptor
from spcs.node.commands import AgentCommands
from spcs.node.devices import Devices
from spcs.node.mover import Fetch
from spcs.node.partials import TABLE as WRITING_TABLE
from spcs.node.partials import WriteJournal
from spcs.node.registration import ClusterId, Registrar, request_for
from spcs.node.secondary import SecondaryStorage
from spcs.node.servicers import AgentCommandsServicer, StorageAdaptorServicer
from spcs.node.settings import NodeSettings
from spcs.node.targets import Target
from spcs.storpool.api import RetryPolicy, StorPoolApi
from spcs.storpool.client import StorPoolClient
from spcs.v1 import identity_pb2, identity_pb2_grpc, node_pb2, node_pb2_grpc

log = logging.getLogger(__name__)
NAME = "spcs-node"
FEATURES = (
    "qcow2",
    "qcow2-zlib",
    "qcow2-zstd",
    "nfs-secondary",
    "file-secondary",
    "resize-notify-libvirt",
    "copy-cancel",
    "host-heartbeat",
)


@dataclass(frozen=True)
class NodeDomain:
    """The node's domain objects, wired (no gRPC): what its servicers call."""

    api: StorPoolClient
    db: Database
    locks: KeyedLocks
    registry: OperationRegistry
    adaptor: Adaptor
    stores: SecondaryStorage
    journal: WriteJournal
    commands: AgentCommands
    cluster_id: ClusterId


def build_domain(settings: NodeSettings, api: StorPoolClient) -> NodeDomain:
    locks = KeyedLocks()
    db = Database(settings.state_dir / "node.db", (OPERATIONS_TABLE, WRITING_TABLE))
    registry = OperationRegistry(
        host_id=settings.host_id,
        max_running=settings.max_copies,
        journal=SqliteJournal(db),
        service_name=NAME,
        locks=locks,
    )
    adaptor = Adaptor(
        api,
        Devices(settings.device_root),
        settings.storpool.our_id or 0,
        settings.device_wait_seconds,
        locks,
        settings.detach_attempts,
    )
    stores = SecondaryStorage(settings.mount_root, settings.secondary_stores)
    journal = WriteJournal(db)
    commands = AgentCommands(
        adaptor,
        stores,
        registry,
        journal,
        settings.luks_iter_time_ms,
        settings.direct_download_urls,
        Fetch(
            ca_file=settings.direct_download_ca_file, max_bytes=settings.direct_download_max_bytes
        ),
    )
    # SP_CLUSTER_ID, else asked of StorPool
    cluster_id = ClusterId(settings.storpool.cluster_id, api.for_probes())
    return NodeDomain(api, db, locks, registry, adaptor, stores, journal, commands, cluster_id)


def _probe(settings: NodeSettings, d: NodeDomain) -> Callable[[], tuple[bool, str]]:
    probe_api = d.api.for_probes()
    client_id = d.adaptor.client_id

    def probe() -> tuple[bool, str]:
        if not settings.device_root.is_dir():
            raise errors.FailedPrecondition(f"device root {settings.device_root} is missing")
        try:
            running = probe_api.client_running(client_id)
        except (errors.Unavailable, errors.PermissionDenied) as error:
            raise errors.FailedPrecondition(f"StorPool is not usable: {error.message}") from None
        if not running:
            return False, f"StorPool client {client_id} is not running on this host"
        return True, f"StorPool API {d.api.endpoint} reachable, client {client_id} running"

    return probe


def build(settings: NodeSettings) -> Server:
    sp = settings.storpool
    api = StorPoolApi(
        sp.api_host,
        sp.api_port,
        sp.auth_token or "",
        retry=RetryPolicy(total_seconds=settings.storpool_retry_seconds),
    )
    d = build_domain(settings, api)
    bindings = [
        bind(node_pb2, node_pb2_grpc, "StorageAdaptor", StorageAdaptorServicer(d.adaptor)),
        bind(
            node_pb2,
            node_pb2_grpc,
            "AgentCommands",
            AgentCommandsServicer(d.commands, settings.host_id, d.cluster_id),
        ),
        bind_operations(OperationsServicer(d.registry)),
    ]
    identity = IdentityInfo(
        name=NAME,
        services=[],
        features=FEATURES,
        host_id=settings.host_id,
        storpool_client_id=d.adaptor.client_id,
        storpool_cluster_id=sp.cluster_id or "",
        datamover_version=_datamover.__version__,
        probe=_probe(settings, d),
    )
    bindings.insert(
        0, bind(identity_pb2, identity_pb2_grpc, "Identity", IdentityServicer(identity))
    )
    identity.services = [b.name for b in bindings]
    server = Server(NAME, settings.server, bindings, authz.node_policy(settings.host_id))
    # what the jobs of the last run left half-written on secondary storage goes
    server.on_start(lambda: _clean_in_background(d.journal, d.stores, d.locks))
    server.on_stop(d.stores.close)
    server.on_stop(d.db.close)
    if settings.management:
        _register_with_management(settings, settings.management, server, d)
    return server


def _register_with_management(
    settings: NodeSettings, management: Sequence[Target], server: Server, d: NodeDomain
) -> None:
    """Announce this node to every management replica once the server listens; stop with the
    server."""
    tls = TlsFiles(
        settings.server.tls_cert,
        settings.server.tls_key,
        settings.server.tls_ca,
        settings.server.tls_client_auth,
    )
    registrar_box: list[Registrar] = []

    def start_registration() -> None:
        registrar = Registrar(
            management,
            request_for(
                settings.host_id,
                settings.advertised_address(server.port),
                d.adaptor.client_id,
                settings.storpool.cluster_id or "",
                settings.max_copies,
            ),
            tls,
            d.cluster_id,
        )
        registrar.start()
        registrar_box.append(registrar)

    def stop_registration() -> None:
        for registrar in registrar_box:
            registrar.stop()

    server.on_start(start_registration)
    server.on_stop(stop_registration)


def _clean_in_background(
    journal: WriteJournal, stores: SecondaryStorage, locks: KeyedLocks
) -> None:
    # in the background: an NFS store that does not answer must not hold up the start
    threading.Thread(
        target=journal.clean, args=(stores.open, locks), name="clean-partials", daemon=True
    ).start()
