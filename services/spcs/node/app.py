"""Wiring of the node service: StorPool access for this host, copy jobs, the gRPC services."""

from __future__ import annotations

import logging
import threading

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
from spcs.node.partials import TABLE as WRITING_TABLE
from spcs.node.partials import WriteJournal
from spcs.node.registration import ClusterId, Registrar, request_for
from spcs.node.secondary import SecondaryStorage
from spcs.node.servicers import AgentCommandsServicer, StorageAdaptorServicer
from spcs.node.settings import NodeSettings
from spcs.storpool.api import RetryPolicy, StorPoolApi
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
)


def build(settings: NodeSettings) -> Server:
    sp = settings.storpool
    api = StorPoolApi(
        sp.api_host,
        sp.api_port,
        sp.auth_token or "",
        retry=RetryPolicy(total_seconds=settings.storpool_retry_seconds),
    )
    client_id = sp.our_id or 0
    locks = KeyedLocks()
    db = Database(settings.state_dir / "node.db", (OPERATIONS_TABLE, WRITING_TABLE))
    registry = OperationRegistry(
        host_id=settings.host_id,
        max_running=settings.max_copies,
        journal=SqliteJournal(db),
        service_name=NAME,
        locks=locks,
    )
    devices = Devices(settings.device_root)
    adaptor = Adaptor(
        api, devices, client_id, settings.device_wait_seconds, locks, settings.detach_attempts
    )
    stores = SecondaryStorage(settings.mount_root, settings.secondary_stores)
    journal = WriteJournal(db)
    commands = AgentCommands(adaptor, stores, registry, journal)

    probe_api = api.for_probes()
    cluster_id = ClusterId(sp.cluster_id, probe_api)  # SP_CLUSTER_ID, else asked of StorPool

    def probe() -> tuple[bool, str]:
        if not settings.device_root.is_dir():
            raise errors.FailedPrecondition(f"device root {settings.device_root} is missing")
        try:
            running = probe_api.client_running(client_id)
        except (errors.Unavailable, errors.PermissionDenied) as error:
            raise errors.FailedPrecondition(f"StorPool is not usable: {error.message}") from None
        if not running:
            return False, f"StorPool client {client_id} is not running on this host"
        return True, f"StorPool API {api.endpoint} reachable, client {client_id} running"

    bindings = [
        bind(node_pb2, node_pb2_grpc, "StorageAdaptor", StorageAdaptorServicer(adaptor)),
        bind(
            node_pb2,
            node_pb2_grpc,
            "AgentCommands",
            AgentCommandsServicer(commands, settings.host_id, cluster_id),
        ),
        bind_operations(OperationsServicer(registry)),
    ]
    identity = IdentityInfo(
        name=NAME,
        services=[],
        features=FEATURES,
        host_id=settings.host_id,
        storpool_client_id=client_id,
        storpool_cluster_id=sp.cluster_id or "",
        datamover_version=_datamover.__version__,
        probe=probe,
    )
    bindings.insert(
        0, bind(identity_pb2, identity_pb2_grpc, "Identity", IdentityServicer(identity))
    )
    identity.services = [b.name for b in bindings]
    server = Server(NAME, settings.server, bindings, authz.node_policy(settings.host_id))
    # what the jobs of the last run left half-written on secondary storage goes
    server.on_start(lambda: _clean_in_background(journal, stores, locks))
    server.on_stop(stores.close)
    server.on_stop(db.close)
    if settings.management:
        tls = TlsFiles(
            settings.server.tls_cert,
            settings.server.tls_key,
            settings.server.tls_ca,
            settings.server.tls_client_auth,
        )
        registrar_box: list[Registrar] = []

        def start_registration() -> None:
            registrar = Registrar(
                settings.management,
                request_for(
                    settings.host_id,
                    settings.advertised_address(server.port),
                    client_id,
                    sp.cluster_id or "",
                    settings.max_copies,
                ),
                tls,
                cluster_id,
            )
            registrar.start()
            registrar_box.append(registrar)

        server.on_start(start_registration)
        server.on_stop(lambda: [r.stop() for r in registrar_box])
    return server


def _clean_in_background(
    journal: WriteJournal, stores: SecondaryStorage, locks: KeyedLocks
) -> None:
    # in the background: an NFS store that does not answer must not hold up the start
    threading.Thread(
        target=journal.clean, args=(stores.open, locks), name="clean-partials", daemon=True
    ).start()
