from google.longrunning import operations_pb2 as _operations_pb2
from spcs.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StrategyPriority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_PRIORITY_CANT_HANDLE: _ClassVar[StrategyPriority]
    STRATEGY_PRIORITY_DEFAULT: _ClassVar[StrategyPriority]
    STRATEGY_PRIORITY_HYPERVISOR: _ClassVar[StrategyPriority]
    STRATEGY_PRIORITY_PLUGIN: _ClassVar[StrategyPriority]
    STRATEGY_PRIORITY_HIGHEST: _ClassVar[StrategyPriority]

class SnapshotOperation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SNAPSHOT_OPERATION_UNSPECIFIED: _ClassVar[SnapshotOperation]
    SNAPSHOT_OPERATION_TAKE: _ClassVar[SnapshotOperation]
    SNAPSHOT_OPERATION_BACKUP: _ClassVar[SnapshotOperation]
    SNAPSHOT_OPERATION_REVERT: _ClassVar[SnapshotOperation]
    SNAPSHOT_OPERATION_DELETE: _ClassVar[SnapshotOperation]
    SNAPSHOT_OPERATION_COPY: _ClassVar[SnapshotOperation]
STRATEGY_PRIORITY_CANT_HANDLE: StrategyPriority
STRATEGY_PRIORITY_DEFAULT: StrategyPriority
STRATEGY_PRIORITY_HYPERVISOR: StrategyPriority
STRATEGY_PRIORITY_PLUGIN: StrategyPriority
STRATEGY_PRIORITY_HIGHEST: StrategyPriority
SNAPSHOT_OPERATION_UNSPECIFIED: SnapshotOperation
SNAPSHOT_OPERATION_TAKE: SnapshotOperation
SNAPSHOT_OPERATION_BACKUP: SnapshotOperation
SNAPSHOT_OPERATION_REVERT: SnapshotOperation
SNAPSHOT_OPERATION_DELETE: SnapshotOperation
SNAPSHOT_OPERATION_COPY: SnapshotOperation

class CanHandleSnapshotRequest(_message.Message):
    __slots__ = ("snapshot", "operation", "pool")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    snapshot: _types_pb2.Snapshot
    operation: SnapshotOperation
    pool: _types_pb2.PrimaryStore
    def __init__(self, snapshot: _Optional[_Union[_types_pb2.Snapshot, _Mapping]] = ..., operation: _Optional[_Union[SnapshotOperation, str]] = ..., pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ...) -> None: ...

class CanHandleResponse(_message.Message):
    __slots__ = ("priority", "reason")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    priority: StrategyPriority
    reason: str
    def __init__(self, priority: _Optional[_Union[StrategyPriority, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class DeleteSnapshotRequest(_message.Message):
    __slots__ = ("snapshot", "pool")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    snapshot: _types_pb2.Snapshot
    pool: _types_pb2.PrimaryStore
    def __init__(self, snapshot: _Optional[_Union[_types_pb2.Snapshot, _Mapping]] = ..., pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ...) -> None: ...

class DeleteSnapshotResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class BackupSnapshotRequest(_message.Message):
    __slots__ = ("operation_id", "snapshot", "pool", "destination", "destination_path", "format", "compression")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    snapshot: _types_pb2.Snapshot
    pool: _types_pb2.PrimaryStore
    destination: _types_pb2.SecondaryStore
    destination_path: str
    format: _types_pb2.ImageFormat
    compression: _types_pb2.Compression
    def __init__(self, operation_id: _Optional[str] = ..., snapshot: _Optional[_Union[_types_pb2.Snapshot, _Mapping]] = ..., pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., destination: _Optional[_Union[_types_pb2.SecondaryStore, _Mapping]] = ..., destination_path: _Optional[str] = ..., format: _Optional[_Union[_types_pb2.ImageFormat, str]] = ..., compression: _Optional[_Union[_types_pb2.Compression, str]] = ...) -> None: ...

class VolumeSnapshotRef(_message.Message):
    __slots__ = ("volume_uuid", "volume_path", "snapshot_path", "size_bytes", "max_iops")
    VOLUME_UUID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_PATH_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IOPS_FIELD_NUMBER: _ClassVar[int]
    volume_uuid: str
    volume_path: str
    snapshot_path: str
    size_bytes: int
    max_iops: int
    def __init__(self, volume_uuid: _Optional[str] = ..., volume_path: _Optional[str] = ..., snapshot_path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., max_iops: _Optional[int] = ...) -> None: ...

class CanHandleVMSnapshotRequest(_message.Message):
    __slots__ = ("vm_uuid", "volume_paths", "with_memory")
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_PATHS_FIELD_NUMBER: _ClassVar[int]
    WITH_MEMORY_FIELD_NUMBER: _ClassVar[int]
    vm_uuid: str
    volume_paths: _containers.RepeatedScalarFieldContainer[str]
    with_memory: bool
    def __init__(self, vm_uuid: _Optional[str] = ..., volume_paths: _Optional[_Iterable[str]] = ..., with_memory: _Optional[bool] = ...) -> None: ...

class TakeVMSnapshotRequest(_message.Message):
    __slots__ = ("vm_snapshot_uuid", "vm_uuid", "volumes", "pool")
    VM_SNAPSHOT_UUID_FIELD_NUMBER: _ClassVar[int]
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    vm_snapshot_uuid: str
    vm_uuid: str
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeSnapshotRef]
    pool: _types_pb2.PrimaryStore
    def __init__(self, vm_snapshot_uuid: _Optional[str] = ..., vm_uuid: _Optional[str] = ..., volumes: _Optional[_Iterable[_Union[VolumeSnapshotRef, _Mapping]]] = ..., pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ...) -> None: ...

class VMSnapshot(_message.Message):
    __slots__ = ("vm_snapshot_uuid", "vm_uuid", "volumes")
    VM_SNAPSHOT_UUID_FIELD_NUMBER: _ClassVar[int]
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    vm_snapshot_uuid: str
    vm_uuid: str
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeSnapshotRef]
    def __init__(self, vm_snapshot_uuid: _Optional[str] = ..., vm_uuid: _Optional[str] = ..., volumes: _Optional[_Iterable[_Union[VolumeSnapshotRef, _Mapping]]] = ...) -> None: ...

class RevertVMSnapshotRequest(_message.Message):
    __slots__ = ("vm_snapshot_uuid", "vm_uuid", "volumes", "pool", "vm_running")
    VM_SNAPSHOT_UUID_FIELD_NUMBER: _ClassVar[int]
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    VM_RUNNING_FIELD_NUMBER: _ClassVar[int]
    vm_snapshot_uuid: str
    vm_uuid: str
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeSnapshotRef]
    pool: _types_pb2.PrimaryStore
    vm_running: bool
    def __init__(self, vm_snapshot_uuid: _Optional[str] = ..., vm_uuid: _Optional[str] = ..., volumes: _Optional[_Iterable[_Union[VolumeSnapshotRef, _Mapping]]] = ..., pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., vm_running: _Optional[bool] = ...) -> None: ...

class RevertVMSnapshotResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteVMSnapshotRequest(_message.Message):
    __slots__ = ("vm_snapshot_uuid", "volumes", "pool")
    VM_SNAPSHOT_UUID_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    vm_snapshot_uuid: str
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeSnapshotRef]
    pool: _types_pb2.PrimaryStore
    def __init__(self, vm_snapshot_uuid: _Optional[str] = ..., volumes: _Optional[_Iterable[_Union[VolumeSnapshotRef, _Mapping]]] = ..., pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ...) -> None: ...

class DeleteVMSnapshotResponse(_message.Message):
    __slots__ = ("snapshots_deleted",)
    SNAPSHOTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    snapshots_deleted: int
    def __init__(self, snapshots_deleted: _Optional[int] = ...) -> None: ...
