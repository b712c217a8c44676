import datetime

from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_RAW: _ClassVar[ImageFormat]
    IMAGE_FORMAT_QCOW2: _ClassVar[ImageFormat]

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSION_NONE: _ClassVar[Compression]
    COMPRESSION_ZLIB: _ClassVar[Compression]
    COMPRESSION_ZSTD: _ClassVar[Compression]

class VolumeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOLUME_TYPE_UNSPECIFIED: _ClassVar[VolumeType]
    VOLUME_TYPE_ROOT: _ClassVar[VolumeType]
    VOLUME_TYPE_DATA: _ClassVar[VolumeType]

class AccessMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_MODE_UNSPECIFIED: _ClassVar[AccessMode]
    ACCESS_MODE_READ_WRITE: _ClassVar[AccessMode]
    ACCESS_MODE_READ_ONLY: _ClassVar[AccessMode]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_RAW: ImageFormat
IMAGE_FORMAT_QCOW2: ImageFormat
COMPRESSION_NONE: Compression
COMPRESSION_ZLIB: Compression
COMPRESSION_ZSTD: Compression
VOLUME_TYPE_UNSPECIFIED: VolumeType
VOLUME_TYPE_ROOT: VolumeType
VOLUME_TYPE_DATA: VolumeType
ACCESS_MODE_UNSPECIFIED: AccessMode
ACCESS_MODE_READ_WRITE: AccessMode
ACCESS_MODE_READ_ONLY: AccessMode
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
SECRET_FIELD_NUMBER: _ClassVar[int]
secret: _descriptor.FieldDescriptor

class PrimaryStore(_message.Message):
    __slots__ = ("pool_uuid",)
    POOL_UUID_FIELD_NUMBER: _ClassVar[int]
    pool_uuid: str
    def __init__(self, pool_uuid: _Optional[str] = ...) -> None: ...

class SecondaryStore(_message.Message):
    __slots__ = ("url",)
    URL_FIELD_NUMBER: _ClassVar[int]
    url: str
    def __init__(self, url: _Optional[str] = ...) -> None: ...

class DataStore(_message.Message):
    __slots__ = ("primary", "secondary")
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    SECONDARY_FIELD_NUMBER: _ClassVar[int]
    primary: PrimaryStore
    secondary: SecondaryStore
    def __init__(self, primary: _Optional[_Union[PrimaryStore, _Mapping]] = ..., secondary: _Optional[_Union[SecondaryStore, _Mapping]] = ...) -> None: ...

class Volume(_message.Message):
    __slots__ = ("uuid", "name", "type", "size_bytes", "path", "store", "format", "vm_uuid", "device_id", "max_iops", "max_bandwidth_bytes_per_second", "sp_template", "qos_class", "vc_policy", "global_id", "used_bytes")
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_IOPS_FIELD_NUMBER: _ClassVar[int]
    MAX_BANDWIDTH_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SP_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    QOS_CLASS_FIELD_NUMBER: _ClassVar[int]
    VC_POLICY_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_ID_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    name: str
    type: VolumeType
    size_bytes: int
    path: str
    store: DataStore
    format: ImageFormat
    vm_uuid: str
    device_id: int
    max_iops: int
    max_bandwidth_bytes_per_second: int
    sp_template: str
    qos_class: str
    vc_policy: str
    global_id: str
    used_bytes: int
    def __init__(self, uuid: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[_Union[VolumeType, str]] = ..., size_bytes: _Optional[int] = ..., path: _Optional[str] = ..., store: _Optional[_Union[DataStore, _Mapping]] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., vm_uuid: _Optional[str] = ..., device_id: _Optional[int] = ..., max_iops: _Optional[int] = ..., max_bandwidth_bytes_per_second: _Optional[int] = ..., sp_template: _Optional[str] = ..., qos_class: _Optional[str] = ..., vc_policy: _Optional[str] = ..., global_id: _Optional[str] = ..., used_bytes: _Optional[int] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("uuid", "name", "volume_uuid", "volume_path", "vm_uuid", "path", "store", "format", "size_bytes", "physical_size_bytes", "global_id")
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VOLUME_UUID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_PATH_FIELD_NUMBER: _ClassVar[int]
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PHYSICAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_ID_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    name: str
    volume_uuid: str
    volume_path: str
    vm_uuid: str
    path: str
    store: DataStore
    format: ImageFormat
    size_bytes: int
    physical_size_bytes: int
    global_id: str
    def __init__(self, uuid: _Optional[str] = ..., name: _Optional[str] = ..., volume_uuid: _Optional[str] = ..., volume_path: _Optional[str] = ..., vm_uuid: _Optional[str] = ..., path: _Optional[str] = ..., store: _Optional[_Union[DataStore, _Mapping]] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., size_bytes: _Optional[int] = ..., physical_size_bytes: _Optional[int] = ..., global_id: _Optional[str] = ...) -> None: ...

class Template(_message.Message):
    __slots__ = ("uuid", "name", "id", "path", "file_name", "store", "format", "size_bytes", "physical_size_bytes", "checksum", "description", "global_id")
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PHYSICAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_ID_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    name: str
    id: int
    path: str
    file_name: str
    store: DataStore
    format: ImageFormat
    size_bytes: int
    physical_size_bytes: int
    checksum: str
    description: str
    global_id: str
    def __init__(self, uuid: _Optional[str] = ..., name: _Optional[str] = ..., id: _Optional[int] = ..., path: _Optional[str] = ..., file_name: _Optional[str] = ..., store: _Optional[_Union[DataStore, _Mapping]] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., size_bytes: _Optional[int] = ..., physical_size_bytes: _Optional[int] = ..., checksum: _Optional[str] = ..., description: _Optional[str] = ..., global_id: _Optional[str] = ...) -> None: ...

class DataObject(_message.Message):
    __slots__ = ("volume", "snapshot", "template")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    volume: Volume
    snapshot: Snapshot
    template: Template
    def __init__(self, volume: _Optional[_Union[Volume, _Mapping]] = ..., snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., template: _Optional[_Union[Template, _Mapping]] = ...) -> None: ...

class OperationMetadata(_message.Message):
    __slots__ = ("kind", "state", "bytes_done", "bytes_total", "rate_bytes_per_second", "create_time", "update_time", "end_time", "host_id", "stage", "target", "bytes_written", "waiting_for")
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RATE_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    kind: str
    state: JobState
    bytes_done: int
    bytes_total: int
    rate_bytes_per_second: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    host_id: str
    stage: str
    target: str
    bytes_written: int
    waiting_for: str
    def __init__(self, kind: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., rate_bytes_per_second: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., host_id: _Optional[str] = ..., stage: _Optional[str] = ..., target: _Optional[str] = ..., bytes_written: _Optional[int] = ..., waiting_for: _Optional[str] = ...) -> None: ...
