"""TLS for the gRPC servers and for the calls between management and nodes.

A server with `--tls-cert/--tls-key` serves TLS; with `--tls-client-auth` it also requires a
client certificate signed by `--tls-ca` (mutual TLS). Outgoing calls (node → management,
management → node) verify the peer with `--tls-ca` and present this service's own certificate,
so one certificate per host serves both directions. Under mutual TLS that certificate's role
(`spcs.common.authz`) is what the other side allows: `management` for the management service's
calls to the nodes, `node/<host id>` for a node's RegisterNode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    client_auth: bool = False

    @property
    def enabled(self) -> bool:
        return self.cert is not None or self.ca is not None


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials | None:
    if tls.cert is None or tls.key is None:
        return None
    pair = [(tls.key.read_bytes(), tls.cert.read_bytes())]
    return grpc.ssl_server_credentials(
        pair,
        root_certificates=_read(tls.ca) if tls.client_auth else None,
        require_client_auth=tls.client_auth,
    )


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials | None:
    if not tls.enabled:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca),
        private_key=_read(tls.key),
        certificate_chain=_read(tls.cert),
    )


def open_channel(
    address: str, tls: TlsFiles | None = None, server_name: str | None = None
) -> grpc.Channel:
    """A channel to another spcs service, TLS when this service has TLS configured.
    `server_name`: the name the peer's certificate must carry when `address` is one of the
    addresses that name resolves to (a management replica found through a dns:/// name)."""
    options: list[tuple[str, str | int]] = [
        ("grpc.max_receive_message_length", 16 << 20),
        # a peer that restarts is reached again within seconds (gRPC's own backoff grows to
        # two minutes, which would keep a restarted node out of the copy queue that long)
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5000),
        # a channel opened afresh connects afresh (a shared subchannel keeps its backoff)
        ("grpc.use_local_subchannel_pool", 1),
    ]
    creds = channel_credentials(tls) if tls is not None else None
    if server_name is not None and creds is not None:
        options.append(("grpc.ssl_target_name_override", server_name))
    if creds is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, creds, options=options)
