"""Thin gRPC handlers of the node: declare (`@rpc`), call the adaptor / agent commands, reply."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.longrunning import operations_pb2

from spcs import __version__
from spcs.common.contract import rpc
from spcs.node import resize_notify
from spcs.node.adaptor import Adaptor
from spcs.node.commands import AgentCommands
from spcs.storpool.records import RUNNING
from spcs.v1 import node_pb2, node_pb2_grpc

_DISK = ("disk.path",)
_OP = "operation_id"
_DOWNLOAD = ("source.url", "source_path", "destination_path")


class StorageAdaptorServicer(node_pb2_grpc.StorageAdaptorServicer):
    def __init__(self, adaptor: Adaptor) -> None:
        self._adaptor = adaptor

    @rpc(required=_DISK, holds="ConnectPhysicalDisk")
    def ConnectPhysicalDisk(
        self, request: node_pb2.ConnectPhysicalDiskRequest, context: grpc.ServicerContext
    ) -> node_pb2.PhysicalDisk:
        timeout = request.wait_timeout_ms / 1000 if request.wait_timeout_ms else None
        disk = self._adaptor.connect(request.disk.path, request.disk.kind, request.mode, timeout)
        return disk.message(self._adaptor.device_size(disk))

    @rpc(required=_DISK, holds="DisconnectPhysicalDisk")
    def DisconnectPhysicalDisk(
        self, request: node_pb2.DisconnectPhysicalDiskRequest, context: grpc.ServicerContext
    ) -> node_pb2.DisconnectPhysicalDiskResponse:
        detached = self._adaptor.disconnect(
            request.disk.path, request.disk.kind, request.force_allowed
        )
        return node_pb2.DisconnectPhysicalDiskResponse(detached=detached)

    @rpc(required=("path",), holds="DisconnectPhysicalDisk")
    def DisconnectPhysicalDiskByPath(
        self, request: node_pb2.DisconnectPhysicalDiskByPathRequest, context: grpc.ServicerContext
    ) -> node_pb2.DisconnectPhysicalDiskByPathResponse:
        handled, detached = self._adaptor.disconnect_by_path(request.path, request.force_allowed)
        return node_pb2.DisconnectPhysicalDiskByPathResponse(handled=handled, detached=detached)

    @rpc(required=_DISK)
    def GetPhysicalDisk(
        self, request: node_pb2.GetPhysicalDiskRequest, context: grpc.ServicerContext
    ) -> node_pb2.PhysicalDisk:
        return self._adaptor.disk(request.disk.path, request.disk.kind).message()

    @rpc(required=_DISK, holds="DeletePhysicalDisk")
    def DeletePhysicalDisk(
        self, request: node_pb2.DeletePhysicalDiskRequest, context: grpc.ServicerContext
    ) -> node_pb2.DeletePhysicalDiskResponse:
        deleted = self._adaptor.delete(request.disk.path, request.disk.kind)
        return node_pb2.DeletePhysicalDiskResponse(deleted=deleted)

    @rpc(required=_DISK, sizes=("new_size_bytes",), holds="ResizePhysicalDisk")
    def ResizePhysicalDisk(
        self, request: node_pb2.ResizePhysicalDiskRequest, context: grpc.ServicerContext
    ) -> node_pb2.PhysicalDisk:
        disk = self._adaptor.resize(request.disk.path, request.new_size_bytes, request.shrink_ok)
        return disk.message()


class AgentCommandsServicer(node_pb2_grpc.AgentCommandsServicer):
    def __init__(
        self, commands: AgentCommands, host_id: str, cluster_id: str | Callable[[], str]
    ) -> None:
        self._commands = commands
        self._host_id = host_id
        self._cluster_id = cluster_id

    @rpc(key=_OP, required=_DOWNLOAD, holds="DownloadTemplate")
    def DownloadTemplate(
        self, request: node_pb2.DownloadTemplateRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        return self._commands.download_template(request)

    @rpc(
        key=_OP,
        required=("snapshot_path", "destination.url", "destination_path"),
        holds="BackupSnapshot",
    )
    def BackupSnapshot(
        self, request: node_pb2.NodeBackupSnapshotRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        return self._commands.backup_snapshot(request)

    @rpc(
        key=_OP,
        required=("source.path", "destination.url", "destination_dir"),
        ids=("template.uuid",),
        holds="BackupTemplate",
    )
    def BackupTemplate(
        self, request: node_pb2.BackupTemplateRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        return self._commands.backup_template(request)

    @rpc(
        key=_OP,
        required=("source.path", "destination.url", "destination_dir"),
        ids=("volume_uuid",),
        holds="CopyVolumeToSecondary",
    )
    def CopyVolumeToSecondary(
        self, request: node_pb2.CopyVolumeToSecondaryRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        return self._commands.copy_volume_to_secondary(request)

    @rpc(key=_OP, required=_DOWNLOAD, holds="DownloadVolume")
    def DownloadVolume(
        self, request: node_pb2.DownloadVolumeRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        return self._commands.download_volume(request)

    @rpc(
        key=_OP,
        required=("source.url", "destination_path"),
        holds="DirectDownloadTemplate",
    )
    def DirectDownloadTemplate(
        self, request: node_pb2.DirectDownloadTemplateRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        return self._commands.direct_download_template(request)

    @rpc(
        required=("volume_path", "encryption.format", "encryption.passphrase"),
        holds="FormatVolume",
    )
    def FormatVolume(
        self, request: node_pb2.FormatVolumeRequest, context: grpc.ServicerContext
    ) -> node_pb2.FormatVolumeResponse:
        return self._commands.format_volume(request)

    @rpc(
        key=_OP,
        required=(
            "source.path",
            "destination_path",
            "encryption.format",
            "encryption.passphrase",
        ),
        holds="EncryptVolume",
    )
    def EncryptVolume(
        self, request: node_pb2.EncryptVolumeRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        return self._commands.encrypt_volume(request)

    @rpc(required=("vm_name", "path", "new_size_bytes"))
    def ResizeNotify(
        self, request: node_pb2.ResizeNotifyRequest, context: grpc.ServicerContext
    ) -> node_pb2.ResizeNotifyResponse:
        resize_notify.notify(request.vm_name, request.path, request.new_size_bytes)
        return node_pb2.ResizeNotifyResponse()

    @rpc(required=("pool_uuid",))
    def ModifyStoragePool(
        self, request: node_pb2.ModifyStoragePoolRequest, context: grpc.ServicerContext
    ) -> node_pb2.ModifyStoragePoolResponse:
        adaptor = self._commands.adaptor
        # SP_CLUSTER_ID, or (a callable) the id StorPool shows when the config lacks it
        cluster = self._cluster_id() if callable(self._cluster_id) else self._cluster_id
        return node_pb2.ModifyStoragePoolResponse(
            storpool_client_id=adaptor.client_id,
            storpool_cluster_id=cluster,
            client_running=adaptor.client_running(),
            version=__version__,
            host_id=self._host_id,
        )

    @rpc()
    def CheckHeartbeat(
        self, request: node_pb2.CheckHeartbeatRequest, context: grpc.ServicerContext
    ) -> node_pb2.CheckHeartbeatResponse:
        own, *neighbours = [
            node_pb2.ClientHeartbeat(client_id=cid, status=status, running=status == RUNNING)
            for cid, status in self._commands.adaptor.heartbeat(request.neighbour_client_ids)
        ]
        return node_pb2.CheckHeartbeatResponse(own=own, neighbours=neighbours)
