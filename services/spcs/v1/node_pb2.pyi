from google.longrunning import operations_pb2 as _operations_pb2
from spcs.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DiskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISK_KIND_UNSPECIFIED: _ClassVar[DiskKind]
    DISK_KIND_VOLUME: _ClassVar[DiskKind]
    DISK_KIND_SNAPSHOT: _ClassVar[DiskKind]
DISK_KIND_UNSPECIFIED: DiskKind
DISK_KIND_VOLUME: DiskKind
DISK_KIND_SNAPSHOT: DiskKind

class DiskRef(_message.Message):
    __slots__ = ("path", "kind")
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    path: str
    kind: DiskKind
    def __init__(self, path: _Optional[str] = ..., kind: _Optional[_Union[DiskKind, str]] = ...) -> None: ...

class ConnectPhysicalDiskRequest(_message.Message):
    __slots__ = ("disk", "mode", "wait_timeout_ms")
    DISK_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    disk: DiskRef
    mode: _types_pb2.AccessMode
    wait_timeout_ms: int
    def __init__(self, disk: _Optional[_Union[DiskRef, _Mapping]] = ..., mode: _Optional[_Union[_types_pb2.AccessMode, str]] = ..., wait_timeout_ms: _Optional[int] = ...) -> None: ...

class PhysicalDisk(_message.Message):
    __slots__ = ("path", "name", "global_id", "size_bytes", "format", "attached", "mode", "kind")
    PATH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    ATTACHED_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    path: str
    name: str
    global_id: str
    size_bytes: int
    format: _types_pb2.ImageFormat
    attached: bool
    mode: _types_pb2.AccessMode
    kind: DiskKind
    def __init__(self, path: _Optional[str] = ..., name: _Optional[str] = ..., global_id: _Optional[str] = ..., size_bytes: _Optional[int] = ..., format: _Optional[_Union[_types_pb2.ImageFormat, str]] = ..., attached: _Optional[bool] = ..., mode: _Optional[_Union[_types_pb2.AccessMode, str]] = ..., kind: _Optional[_Union[DiskKind, str]] = ...) -> None: ...

class DisconnectPhysicalDiskRequest(_message.Message):
    __slots__ = ("disk", "force_allowed")
    DISK_FIELD_NUMBER: _ClassVar[int]
    FORCE_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    disk: DiskRef
    force_allowed: bool
    def __init__(self, disk: _Optional[_Union[DiskRef, _Mapping]] = ..., force_allowed: _Optional[bool] = ...) -> None: ...

class DisconnectPhysicalDiskResponse(_message.Message):
    __slots__ = ("detached",)
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    detached: bool
    def __init__(self, detached: _Optional[bool] = ...) -> None: ...

class DisconnectPhysicalDiskByPathRequest(_message.Message):
    __slots__ = ("path", "force_allowed")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORCE_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    path: str
    force_allowed: bool
    def __init__(self, path: _Optional[str] = ..., force_allowed: _Optional[bool] = ...) -> None: ...

class DisconnectPhysicalDiskByPathResponse(_message.Message):
    __slots__ = ("handled", "detached")
    HANDLED_FIELD_NUMBER: _ClassVar[int]
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    handled: bool
    detached: bool
    def __init__(self, handled: _Optional[bool] = ..., detached: _Optional[bool] = ...) -> None: ...

class GetPhysicalDiskRequest(_message.Message):
    __slots__ = ("disk",)
    DISK_FIELD_NUMBER: _ClassVar[int]
    disk: DiskRef
    def __init__(self, disk: _Optional[_Union[DiskRef, _Mapping]] = ...) -> None: ...

class DeletePhysicalDiskRequest(_message.Message):
    __slots__ = ("disk",)
    DISK_FIELD_NUMBER: _ClassVar[int]
    disk: DiskRef
    def __init__(self, disk: _Optional[_Union[DiskRef, _Mapping]] = ...) -> None: ...

class DeletePhysicalDiskResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ResizePhysicalDiskRequest(_message.Message):
    __slots__ = ("disk", "new_size_bytes", "shrink_ok")
    DISK_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHRINK_OK_FIELD_NUMBER: _ClassVar[int]
    disk: DiskRef
    new_size_bytes: int
    shrink_ok: bool
    def __init__(self, disk: _Optional[_Union[DiskRef, _Mapping]] = ..., new_size_bytes: _Optional[int] = ..., shrink_ok: _Optional[bool] = ...) -> None: ...

class DownloadTemplateRequest(_message.Message):
    __slots__ = ("operation_id", "source", "source_path", "source_file_name", "source_format", "destination_path", "resize_to_virtual_size", "target_is_zero")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PATH_FIELD_NUMBER: _ClassVar[int]
    RESIZE_TO_VIRTUAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TARGET_IS_ZERO_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    source: _types_pb2.SecondaryStore
    source_path: str
    source_file_name: str
    source_format: _types_pb2.ImageFormat
    destination_path: str
    resize_to_virtual_size: bool
    target_is_zero: bool
    def __init__(self, operation_id: _Optional[str] = ..., source: _Optional[_Union[_types_pb2.SecondaryStore, _Mapping]] = ..., source_path: _Optional[str] = ..., source_file_name: _Optional[str] = ..., source_format: _Optional[_Union[_types_pb2.ImageFormat, str]] = ..., destination_path: _Optional[str] = ..., resize_to_virtual_size: _Optional[bool] = ..., target_is_zero: _Optional[bool] = ...) -> None: ...

class DownloadResult(_message.Message):
    __slots__ = ("destination_path", "virtual_size_bytes", "bytes_written", "volume_size_bytes")
    DESTINATION_PATH_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    VOLUME_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    destination_path: str
    virtual_size_bytes: int
    bytes_written: int
    volume_size_bytes: int
    def __init__(self, destination_path: _Optional[str] = ..., virtual_size_bytes: _Optional[int] = ..., bytes_written: _Optional[int] = ..., volume_size_bytes: _Optional[int] = ...) -> None: ...

class NodeBackupSnapshotRequest(_message.Message):
    __slots__ = ("operation_id", "snapshot_path", "destination", "destination_path", "format", "compression")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_PATH_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    snapshot_path: str
    destination: _types_pb2.SecondaryStore
    destination_path: str
    format: _types_pb2.ImageFormat
    compression: _types_pb2.Compression
    def __init__(self, operation_id: _Optional[str] = ..., snapshot_path: _Optional[str] = ..., destination: _Optional[_Union[_types_pb2.SecondaryStore, _Mapping]] = ..., destination_path: _Optional[str] = ..., format: _Optional[_Union[_types_pb2.ImageFormat, str]] = ..., compression: _Optional[_Union[_types_pb2.Compression, str]] = ...) -> None: ...

class BackupResult(_message.Message):
    __slots__ = ("path", "format", "virtual_size_bytes", "physical_size_bytes", "bytes_written")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PHYSICAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    path: str
    format: _types_pb2.ImageFormat
    virtual_size_bytes: int
    physical_size_bytes: int
    bytes_written: int
    def __init__(self, path: _Optional[str] = ..., format: _Optional[_Union[_types_pb2.ImageFormat, str]] = ..., virtual_size_bytes: _Optional[int] = ..., physical_size_bytes: _Optional[int] = ..., bytes_written: _Optional[int] = ...) -> None: ...

class BackupTemplateRequest(_message.Message):
    __slots__ = ("operation_id", "source", "destination", "destination_dir", "template", "format", "compression")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_DIR_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    source: DiskRef
    destination: _types_pb2.SecondaryStore
    destination_dir: str
    template: _types_pb2.Template
    format: _types_pb2.ImageFormat
    compression: _types_pb2.Compression
    def __init__(self, operation_id: _Optional[str] = ..., source: _Optional[_Union[DiskRef, _Mapping]] = ..., destination: _Optional[_Union[_types_pb2.SecondaryStore, _Mapping]] = ..., destination_dir: _Optional[str] = ..., template: _Optional[_Union[_types_pb2.Template, _Mapping]] = ..., format: _Optional[_Union[_types_pb2.ImageFormat, str]] = ..., compression: _Optional[_Union[_types_pb2.Compression, str]] = ...) -> None: ...

class TemplateResult(_message.Message):
    __slots__ = ("install_path", "file_name", "format", "virtual_size_bytes", "physical_size_bytes", "checksum", "bytes_written")
    INSTALL_PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PHYSICAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    install_path: str
    file_name: str
    format: _types_pb2.ImageFormat
    virtual_size_bytes: int
    physical_size_bytes: int
    checksum: str
    bytes_written: int
    def __init__(self, install_path: _Optional[str] = ..., file_name: _Optional[str] = ..., format: _Optional[_Union[_types_pb2.ImageFormat, str]] = ..., virtual_size_bytes: _Optional[int] = ..., physical_size_bytes: _Optional[int] = ..., checksum: _Optional[str] = ..., bytes_written: _Optional[int] = ...) -> None: ...

class CopyVolumeToSecondaryRequest(_message.Message):
    __slots__ = ("operation_id", "source", "volume_uuid", "destination", "destination_dir", "format", "compression")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_UUID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_DIR_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    source: DiskRef
    volume_uuid: str
    destination: _types_pb2.SecondaryStore
    destination_dir: str
    format: _types_pb2.ImageFormat
    compression: _types_pb2.Compression
    def __init__(self, operation_id: _Optional[str] = ..., source: _Optional[_Union[DiskRef, _Mapping]] = ..., volume_uuid: _Optional[str] = ..., destination: _Optional[_Union[_types_pb2.SecondaryStore, _Mapping]] = ..., destination_dir: _Optional[str] = ..., format: _Optional[_Union[_types_pb2.ImageFormat, str]] = ..., compression: _Optional[_Union[_types_pb2.Compression, str]] = ...) -> None: ...

class DownloadVolumeRequest(_message.Message):
    __slots__ = ("operation_id", "source", "source_path", "source_format", "destination_path", "resize_to_virtual_size", "target_is_zero")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PATH_FIELD_NUMBER: _ClassVar[int]
    RESIZE_TO_VIRTUAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TARGET_IS_ZERO_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    source: _types_pb2.SecondaryStore
    source_path: str
    source_format: _types_pb2.ImageFormat
    destination_path: str
    resize_to_virtual_size: bool
    target_is_zero: bool
    def __init__(self, operation_id: _Optional[str] = ..., source: _Optional[_Union[_types_pb2.SecondaryStore, _Mapping]] = ..., source_path: _Optional[str] = ..., source_format: _Optional[_Union[_types_pb2.ImageFormat, str]] = ..., destination_path: _Optional[str] = ..., resize_to_virtual_size: _Optional[bool] = ..., target_is_zero: _Optional[bool] = ...) -> None: ...

class ResizeNotifyRequest(_message.Message):
    __slots__ = ("vm_name", "path", "new_size_bytes")
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    vm_name: str
    path: str
    new_size_bytes: int
    def __init__(self, vm_name: _Optional[str] = ..., path: _Optional[str] = ..., new_size_bytes: _Optional[int] = ...) -> None: ...

class ResizeNotifyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModifyStoragePoolRequest(_message.Message):
    __slots__ = ("pool_uuid", "add")
    POOL_UUID_FIELD_NUMBER: _ClassVar[int]
    ADD_FIELD_NUMBER: _ClassVar[int]
    pool_uuid: str
    add: bool
    def __init__(self, pool_uuid: _Optional[str] = ..., add: _Optional[bool] = ...) -> None: ...

class ModifyStoragePoolResponse(_message.Message):
    __slots__ = ("storpool_client_id", "storpool_cluster_id", "client_running", "version", "host_id")
    STORPOOL_CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STORPOOL_CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_RUNNING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    storpool_client_id: int
    storpool_cluster_id: str
    client_running: bool
    version: str
    host_id: str
    def __init__(self, storpool_client_id: _Optional[int] = ..., storpool_cluster_id: _Optional[str] = ..., client_running: _Optional[bool] = ..., version: _Optional[str] = ..., host_id: _Optional[str] = ...) -> None: ...
