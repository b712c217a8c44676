from google.longrunning import operations_pb2 as _operations_pb2
from spcs.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetDriverCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetDriverCapabilitiesResponse(_message.Message):
    __slots__ = ("capabilities",)
    class CapabilitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    capabilities: _containers.ScalarMap[str, str]
    def __init__(self, capabilities: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateVolumeRequest(_message.Message):
    __slots__ = ("pool", "volume")
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    pool: _types_pb2.PrimaryStore
    volume: _types_pb2.Volume
    def __init__(self, pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., volume: _Optional[_Union[_types_pb2.Volume, _Mapping]] = ...) -> None: ...

class DeleteDataRequest(_message.Message):
    __slots__ = ("object", "pool")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    object: _types_pb2.DataObject
    pool: _types_pb2.PrimaryStore
    def __init__(self, object: _Optional[_Union[_types_pb2.DataObject, _Mapping]] = ..., pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ...) -> None: ...

class DeleteDataResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class CanCopyRequest(_message.Message):
    __slots__ = ("source", "destination")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    source: _types_pb2.DataObject
    destination: _types_pb2.DataObject
    def __init__(self, source: _Optional[_Union[_types_pb2.DataObject, _Mapping]] = ..., destination: _Optional[_Union[_types_pb2.DataObject, _Mapping]] = ...) -> None: ...

class CanCopyResponse(_message.Message):
    __slots__ = ("can_copy", "reason")
    CAN_COPY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    can_copy: bool
    reason: str
    def __init__(self, can_copy: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class CopyOptions(_message.Message):
    __slots__ = ("format", "compression", "host_id", "vm_running")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    VM_RUNNING_FIELD_NUMBER: _ClassVar[int]
    format: _types_pb2.ImageFormat
    compression: _types_pb2.Compression
    host_id: str
    vm_running: bool
    def __init__(self, format: _Optional[_Union[_types_pb2.ImageFormat, str]] = ..., compression: _Optional[_Union[_types_pb2.Compression, str]] = ..., host_id: _Optional[str] = ..., vm_running: _Optional[bool] = ...) -> None: ...

class CopyDataRequest(_message.Message):
    __slots__ = ("operation_id", "source", "destination", "options")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    source: _types_pb2.DataObject
    destination: _types_pb2.DataObject
    options: CopyOptions
    def __init__(self, operation_id: _Optional[str] = ..., source: _Optional[_Union[_types_pb2.DataObject, _Mapping]] = ..., destination: _Optional[_Union[_types_pb2.DataObject, _Mapping]] = ..., options: _Optional[_Union[CopyOptions, _Mapping]] = ...) -> None: ...

class CopyDataResult(_message.Message):
    __slots__ = ("result", "bytes_written", "host_id", "kind")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    result: _types_pb2.DataObject
    bytes_written: int
    host_id: str
    kind: str
    def __init__(self, result: _Optional[_Union[_types_pb2.DataObject, _Mapping]] = ..., bytes_written: _Optional[int] = ..., host_id: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class TakeSnapshotRequest(_message.Message):
    __slots__ = ("pool", "snapshot")
    POOL_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    pool: _types_pb2.PrimaryStore
    snapshot: _types_pb2.Snapshot
    def __init__(self, pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., snapshot: _Optional[_Union[_types_pb2.Snapshot, _Mapping]] = ...) -> None: ...

class RevertSnapshotRequest(_message.Message):
    __slots__ = ("pool", "snapshot", "volume")
    POOL_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    pool: _types_pb2.PrimaryStore
    snapshot: _types_pb2.Snapshot
    volume: _types_pb2.Volume
    def __init__(self, pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., snapshot: _Optional[_Union[_types_pb2.Snapshot, _Mapping]] = ..., volume: _Optional[_Union[_types_pb2.Volume, _Mapping]] = ...) -> None: ...

class ResizeVolumeRequest(_message.Message):
    __slots__ = ("pool", "volume", "new_size_bytes", "shrink_ok", "host_id", "vm_name")
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHRINK_OK_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    pool: _types_pb2.PrimaryStore
    volume: _types_pb2.Volume
    new_size_bytes: int
    shrink_ok: bool
    host_id: str
    vm_name: str
    def __init__(self, pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., volume: _Optional[_Union[_types_pb2.Volume, _Mapping]] = ..., new_size_bytes: _Optional[int] = ..., shrink_ok: _Optional[bool] = ..., host_id: _Optional[str] = ..., vm_name: _Optional[str] = ...) -> None: ...

class GrantAccessRequest(_message.Message):
    __slots__ = ("object", "host_id", "mode")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    object: _types_pb2.DataObject
    host_id: str
    mode: _types_pb2.AccessMode
    def __init__(self, object: _Optional[_Union[_types_pb2.DataObject, _Mapping]] = ..., host_id: _Optional[str] = ..., mode: _Optional[_Union[_types_pb2.AccessMode, str]] = ...) -> None: ...

class GrantAccessResponse(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class RevokeAccessRequest(_message.Message):
    __slots__ = ("object", "host_id", "force", "clear_vm_tags")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    CLEAR_VM_TAGS_FIELD_NUMBER: _ClassVar[int]
    object: _types_pb2.DataObject
    host_id: str
    force: bool
    clear_vm_tags: bool
    def __init__(self, object: _Optional[_Union[_types_pb2.DataObject, _Mapping]] = ..., host_id: _Optional[str] = ..., force: _Optional[bool] = ..., clear_vm_tags: _Optional[bool] = ...) -> None: ...

class RevokeAccessResponse(_message.Message):
    __slots__ = ("detached",)
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    detached: bool
    def __init__(self, detached: _Optional[bool] = ...) -> None: ...

class GetStorageStatsRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: _types_pb2.PrimaryStore
    def __init__(self, pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ...) -> None: ...

class GetStorageStatsResponse(_message.Message):
    __slots__ = ("capacity_bytes", "used_bytes")
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    capacity_bytes: int
    used_bytes: int
    def __init__(self, capacity_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ...) -> None: ...

class GetVolumeStatsRequest(_message.Message):
    __slots__ = ("pool", "volume_path")
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_PATH_FIELD_NUMBER: _ClassVar[int]
    pool: _types_pb2.PrimaryStore
    volume_path: str
    def __init__(self, pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., volume_path: _Optional[str] = ...) -> None: ...

class GetVolumeStatsResponse(_message.Message):
    __slots__ = ("size_bytes", "used_bytes")
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    used_bytes: int
    def __init__(self, size_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ...) -> None: ...

class GetVolumesStatsRequest(_message.Message):
    __slots__ = ("pool", "volume_paths")
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_PATHS_FIELD_NUMBER: _ClassVar[int]
    pool: _types_pb2.PrimaryStore
    volume_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., volume_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class VolumeStats(_message.Message):
    __slots__ = ("volume_path", "found", "size_bytes", "used_bytes")
    VOLUME_PATH_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    volume_path: str
    found: bool
    size_bytes: int
    used_bytes: int
    def __init__(self, volume_path: _Optional[str] = ..., found: _Optional[bool] = ..., size_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ...) -> None: ...

class GetVolumesStatsResponse(_message.Message):
    __slots__ = ("volumes",)
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeStats]
    def __init__(self, volumes: _Optional[_Iterable[_Union[VolumeStats, _Mapping]]] = ...) -> None: ...

class DetachVolumeFromAllStorageNodesRequest(_message.Message):
    __slots__ = ("pool", "volume_path")
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_PATH_FIELD_NUMBER: _ClassVar[int]
    pool: _types_pb2.PrimaryStore
    volume_path: str
    def __init__(self, pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., volume_path: _Optional[str] = ...) -> None: ...

class DetachVolumeFromAllStorageNodesResponse(_message.Message):
    __slots__ = ("detached_client_ids",)
    DETACHED_CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    detached_client_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, detached_client_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ProvideVmInfoRequest(_message.Message):
    __slots__ = ("pool", "volume")
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    pool: _types_pb2.PrimaryStore
    volume: _types_pb2.Volume
    def __init__(self, pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., volume: _Optional[_Union[_types_pb2.Volume, _Mapping]] = ...) -> None: ...

class ProvideVmInfoResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProvideVmTagsRequest(_message.Message):
    __slots__ = ("pool", "vm_uuid", "volume_paths", "key", "value")
    POOL_FIELD_NUMBER: _ClassVar[int]
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_PATHS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    pool: _types_pb2.PrimaryStore
    vm_uuid: str
    volume_paths: _containers.RepeatedScalarFieldContainer[str]
    key: str
    value: str
    def __init__(self, pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., vm_uuid: _Optional[str] = ..., volume_paths: _Optional[_Iterable[str]] = ..., key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ProvideVmTagsResponse(_message.Message):
    __slots__ = ("volumes_updated",)
    VOLUMES_UPDATED_FIELD_NUMBER: _ClassVar[int]
    volumes_updated: int
    def __init__(self, volumes_updated: _Optional[int] = ...) -> None: ...

class MigrateVolumeRequest(_message.Message):
    __slots__ = ("source_pool", "volume", "destination_pool", "vm_running")
    SOURCE_POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_POOL_FIELD_NUMBER: _ClassVar[int]
    VM_RUNNING_FIELD_NUMBER: _ClassVar[int]
    source_pool: _types_pb2.PrimaryStore
    volume: _types_pb2.Volume
    destination_pool: _types_pb2.PrimaryStore
    vm_running: bool
    def __init__(self, source_pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., volume: _Optional[_Union[_types_pb2.Volume, _Mapping]] = ..., destination_pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., vm_running: _Optional[bool] = ...) -> None: ...

class ChangeVolumeOfferingRequest(_message.Message):
    __slots__ = ("pool", "volume")
    POOL_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    pool: _types_pb2.PrimaryStore
    volume: _types_pb2.Volume
    def __init__(self, pool: _Optional[_Union[_types_pb2.PrimaryStore, _Mapping]] = ..., volume: _Optional[_Union[_types_pb2.Volume, _Mapping]] = ...) -> None: ...
