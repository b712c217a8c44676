"""Thin gRPC handlers of the node: validate, call the adaptor / agent commands, build replies."""

from __future__ import annotations

from collections.abc import Callable

from spcs import __version__
from spcs.common import validate
from spcs.node import resize_notify
from spcs.node.adaptor import Adaptor
from spcs.node.commands import AgentCommands
from spcs.v1 import node_pb2, node_pb2_grpc


class StorageAdaptorServicer(node_pb2_grpc.StorageAdaptorServicer):
    def __init__(self, adaptor: Adaptor) -> None:
        self._adaptor = adaptor

    def ConnectPhysicalDisk(self, request, context):
        validate.require(request, "disk.path")
        timeout = request.wait_timeout_ms / 1000 if request.wait_timeout_ms else None
        disk = self._adaptor.connect(request.disk.path, request.disk.kind, request.mode, timeout)
        return disk.message(self._adaptor.devices.size(disk.device))

    def DisconnectPhysicalDisk(self, request, context):
        validate.require(request, "disk.path")
        detached = self._adaptor.disconnect(
            request.disk.path, request.disk.kind, request.force_allowed
        )
        return node_pb2.DisconnectPhysicalDiskResponse(detached=detached)

    def DisconnectPhysicalDiskByPath(self, request, context):
        validate.require(request, "path")
        handled, detached = self._adaptor.disconnect_by_path(request.path, request.force_allowed)
        return node_pb2.DisconnectPhysicalDiskByPathResponse(handled=handled, detached=detached)

    def GetPhysicalDisk(self, request, context):
        validate.require(request, "disk.path")
        return self._adaptor.disk(request.disk.path, request.disk.kind).message()

    def DeletePhysicalDisk(self, request, context):
        validate.require(request, "disk.path")
        deleted = self._adaptor.delete(request.disk.path, request.disk.kind)
        return node_pb2.DeletePhysicalDiskResponse(deleted=deleted)

    def ResizePhysicalDisk(self, request, context):
        validate.require(request, "disk.path")
        validate.size(request.new_size_bytes, "new_size_bytes")
        disk = self._adaptor.resize(request.disk.path, request.new_size_bytes, request.shrink_ok)
        return disk.message()


class AgentCommandsServicer(node_pb2_grpc.AgentCommandsServicer):
    def __init__(
        self, commands: AgentCommands, host_id: str, cluster_id: str | Callable[[], str]
    ) -> None:
        self._commands = commands
        self._host_id = host_id
        self._cluster_id = cluster_id

    def DownloadTemplate(self, request, context):
        return self._commands.download_template(request)

    def BackupSnapshot(self, request, context):
        return self._commands.backup_snapshot(request)

    def BackupTemplate(self, request, context):
        return self._commands.backup_template(request)

    def CopyVolumeToSecondary(self, request, context):
        return self._commands.copy_volume_to_secondary(request)

    def DownloadVolume(self, request, context):
        return self._commands.download_volume(request)

    def ResizeNotify(self, request, context):
        validate.require(request, "vm_name", "path", "new_size_bytes")
        resize_notify.notify(request.vm_name, request.path, request.new_size_bytes)
        return node_pb2.ResizeNotifyResponse()

    def ModifyStoragePool(self, request, context):
        validate.require(request, "pool_uuid")
        adaptor = self._commands.adaptor
        # SP_CLUSTER_ID, or (a callable) the id StorPool shows when the config lacks it
        cluster = self._cluster_id() if callable(self._cluster_id) else self._cluster_id
        return node_pb2.ModifyStoragePoolResponse(
            storpool_client_id=adaptor.client_id,
            storpool_cluster_id=cluster,
            client_running=adaptor.api.client_running(adaptor.client_id),
            version=__version__,
            host_id=self._host_id,
        )
