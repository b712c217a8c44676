"""The Identity service both servers register: who they are, what they serve, are they ready."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import timestamp_pb2

from spcs import __version__
from spcs.common import errors
from spcs.common.contract import rpc
from spcs.v1 import identity_pb2, identity_pb2_grpc

# A probe answers (ready, message); it raises FailedPrecondition for a missing dependency.
Probe = Callable[[], tuple[bool, str]]


@dataclass
class IdentityInfo:
    name: str
    services: Sequence[str]
    features: Sequence[str] = ()
    host_id: str = ""
    storpool_client_id: int = 0
    storpool_cluster_id: str = ""
    datamover_version: str = ""
    probe: Probe = field(default=lambda: (True, "ok"))


class IdentityServicer(identity_pb2_grpc.IdentityServicer):
    def __init__(self, info: IdentityInfo) -> None:
        self._info = info

    @rpc()
    def GetInfo(
        self, request: identity_pb2.GetInfoRequest, context: grpc.ServicerContext
    ) -> identity_pb2.GetInfoResponse:
        info = self._info
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        return identity_pb2.GetInfoResponse(
            time=now,
            name=info.name,
            version=__version__,
            api="spcs.v1",
            host_id=info.host_id,
            storpool_client_id=info.storpool_client_id,
            storpool_cluster_id=info.storpool_cluster_id,
            datamover_version=info.datamover_version,
        )

    @rpc()
    def GetServerCapabilities(
        self, request: identity_pb2.GetServerCapabilitiesRequest, context: grpc.ServicerContext
    ) -> identity_pb2.GetServerCapabilitiesResponse:
        return identity_pb2.GetServerCapabilitiesResponse(
            services=list(self._info.services), features=list(self._info.features)
        )

    @rpc()
    def Probe(
        self, request: identity_pb2.ProbeRequest, context: grpc.ServicerContext
    ) -> identity_pb2.ProbeResponse:
        try:
            ready, message = self._info.probe()
        except errors.SpcsError:
            raise
        except Exception as error:  # a probe must not crash the RPC; report the dependency
            raise errors.FailedPrecondition(f"probe failed: {error}") from error
        return identity_pb2.ProbeResponse(ready=ready, message=message)
