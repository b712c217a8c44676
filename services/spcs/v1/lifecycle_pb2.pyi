from spcs.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PoolScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOL_SCOPE_UNSPECIFIED: _ClassVar[PoolScope]
    POOL_SCOPE_ZONE: _ClassVar[PoolScope]
    POOL_SCOPE_CLUSTER: _ClassVar[PoolScope]
    POOL_SCOPE_HOST: _ClassVar[PoolScope]

class PoolState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOL_STATE_UNSPECIFIED: _ClassVar[PoolState]
    POOL_STATE_INITIALIZED: _ClassVar[PoolState]
    POOL_STATE_UP: _ClassVar[PoolState]
    POOL_STATE_MAINTENANCE: _ClassVar[PoolState]
    POOL_STATE_DISABLED: _ClassVar[PoolState]
POOL_SCOPE_UNSPECIFIED: PoolScope
POOL_SCOPE_ZONE: PoolScope
POOL_SCOPE_CLUSTER: PoolScope
POOL_SCOPE_HOST: PoolScope
POOL_STATE_UNSPECIFIED: PoolState
POOL_STATE_INITIALIZED: PoolState
POOL_STATE_UP: PoolState
POOL_STATE_MAINTENANCE: PoolState
POOL_STATE_DISABLED: PoolState

class InitializePoolRequest(_message.Message):
    __slots__ = ("pool_uuid", "name", "url", "zone_id", "scope", "hypervisor", "capacity_bytes", "capacity_iops", "tags", "cluster_id", "pod_id", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    POOL_UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    HYPERVISOR_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_IOPS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    POD_ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    pool_uuid: str
    name: str
    url: str
    zone_id: str
    scope: PoolScope
    hypervisor: str
    capacity_bytes: int
    capacity_iops: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    cluster_id: str
    pod_id: str
    details: _containers.ScalarMap[str, str]
    def __init__(self, pool_uuid: _Optional[str] = ..., name: _Optional[str] = ..., url: _Optional[str] = ..., zone_id: _Optional[str] = ..., scope: _Optional[_Union[PoolScope, str]] = ..., hypervisor: _Optional[str] = ..., capacity_bytes: _Optional[int] = ..., capacity_iops: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., cluster_id: _Optional[str] = ..., pod_id: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PoolRef(_message.Message):
    __slots__ = ("pool_uuid",)
    POOL_UUID_FIELD_NUMBER: _ClassVar[int]
    pool_uuid: str
    def __init__(self, pool_uuid: _Optional[str] = ...) -> None: ...

class AttachZoneRequest(_message.Message):
    __slots__ = ("pool_uuid", "zone_id", "hypervisor")
    POOL_UUID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    HYPERVISOR_FIELD_NUMBER: _ClassVar[int]
    pool_uuid: str
    zone_id: str
    hypervisor: str
    def __init__(self, pool_uuid: _Optional[str] = ..., zone_id: _Optional[str] = ..., hypervisor: _Optional[str] = ...) -> None: ...

class AttachClusterRequest(_message.Message):
    __slots__ = ("pool_uuid", "cluster_id")
    POOL_UUID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    pool_uuid: str
    cluster_id: str
    def __init__(self, pool_uuid: _Optional[str] = ..., cluster_id: _Optional[str] = ...) -> None: ...

class DeletePoolRequest(_message.Message):
    __slots__ = ("pool_uuid",)
    POOL_UUID_FIELD_NUMBER: _ClassVar[int]
    pool_uuid: str
    def __init__(self, pool_uuid: _Optional[str] = ...) -> None: ...

class DeletePoolResponse(_message.Message):
    __slots__ = ("deleted", "template_snapshots_removed")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_SNAPSHOTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    template_snapshots_removed: int
    def __init__(self, deleted: _Optional[bool] = ..., template_snapshots_removed: _Optional[int] = ...) -> None: ...

class UpdatePoolRequest(_message.Message):
    __slots__ = ("pool_uuid", "capacity_bytes", "capacity_iops", "tags", "update_tags", "url", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    POOL_UUID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_IOPS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TAGS_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    pool_uuid: str
    capacity_bytes: int
    capacity_iops: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    update_tags: bool
    url: str
    details: _containers.ScalarMap[str, str]
    def __init__(self, pool_uuid: _Optional[str] = ..., capacity_bytes: _Optional[int] = ..., capacity_iops: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., update_tags: _Optional[bool] = ..., url: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Pool(_message.Message):
    __slots__ = ("uuid", "name", "zone_id", "scope", "state", "sp_template", "api_endpoint", "url_form", "capacity_bytes", "capacity_iops", "used_bytes", "tags", "details", "connected_host_ids", "path")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SP_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    API_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    URL_FORM_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_IOPS_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_HOST_IDS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    name: str
    zone_id: str
    scope: PoolScope
    state: PoolState
    sp_template: str
    api_endpoint: str
    url_form: str
    capacity_bytes: int
    capacity_iops: int
    used_bytes: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    details: _containers.ScalarMap[str, str]
    connected_host_ids: _containers.RepeatedScalarFieldContainer[str]
    path: str
    def __init__(self, uuid: _Optional[str] = ..., name: _Optional[str] = ..., zone_id: _Optional[str] = ..., scope: _Optional[_Union[PoolScope, str]] = ..., state: _Optional[_Union[PoolState, str]] = ..., sp_template: _Optional[str] = ..., api_endpoint: _Optional[str] = ..., url_form: _Optional[str] = ..., capacity_bytes: _Optional[int] = ..., capacity_iops: _Optional[int] = ..., used_bytes: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., details: _Optional[_Mapping[str, str]] = ..., connected_host_ids: _Optional[_Iterable[str]] = ..., path: _Optional[str] = ...) -> None: ...

class ListPoolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoolsResponse(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[Pool]
    def __init__(self, pools: _Optional[_Iterable[_Union[Pool, _Mapping]]] = ...) -> None: ...
