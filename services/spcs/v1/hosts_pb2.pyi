import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HostConnectRequest(_message.Message):
    __slots__ = ("host_id", "pool_uuid", "cluster_id")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_UUID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    pool_uuid: str
    cluster_id: str
    def __init__(self, host_id: _Optional[str] = ..., pool_uuid: _Optional[str] = ..., cluster_id: _Optional[str] = ...) -> None: ...

class HostConnectResponse(_message.Message):
    __slots__ = ("connected", "reason", "node")
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    connected: bool
    reason: str
    node: Node
    def __init__(self, connected: _Optional[bool] = ..., reason: _Optional[str] = ..., node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class HostEventRequest(_message.Message):
    __slots__ = ("host_id", "pool_uuid", "cluster_id")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_UUID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    pool_uuid: str
    cluster_id: str
    def __init__(self, host_id: _Optional[str] = ..., pool_uuid: _Optional[str] = ..., cluster_id: _Optional[str] = ...) -> None: ...

class HostEventResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class RegisterNodeRequest(_message.Message):
    __slots__ = ("host_id", "address", "storpool_client_id", "storpool_cluster_id", "version", "max_copies")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STORPOOL_CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STORPOOL_CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_COPIES_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    address: str
    storpool_client_id: int
    storpool_cluster_id: str
    version: str
    max_copies: int
    def __init__(self, host_id: _Optional[str] = ..., address: _Optional[str] = ..., storpool_client_id: _Optional[int] = ..., storpool_cluster_id: _Optional[str] = ..., version: _Optional[str] = ..., max_copies: _Optional[int] = ...) -> None: ...

class RegisterNodeResponse(_message.Message):
    __slots__ = ("refresh_seconds",)
    REFRESH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    refresh_seconds: int
    def __init__(self, refresh_seconds: _Optional[int] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("host_id", "address", "storpool_client_id", "storpool_cluster_id", "version", "last_seen", "healthy", "storpool_client_running", "pool_uuids", "max_copies", "copies_running")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STORPOOL_CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STORPOOL_CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    STORPOOL_CLIENT_RUNNING_FIELD_NUMBER: _ClassVar[int]
    POOL_UUIDS_FIELD_NUMBER: _ClassVar[int]
    MAX_COPIES_FIELD_NUMBER: _ClassVar[int]
    COPIES_RUNNING_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    address: str
    storpool_client_id: int
    storpool_cluster_id: str
    version: str
    last_seen: _timestamp_pb2.Timestamp
    healthy: bool
    storpool_client_running: bool
    pool_uuids: _containers.RepeatedScalarFieldContainer[str]
    max_copies: int
    copies_running: int
    def __init__(self, host_id: _Optional[str] = ..., address: _Optional[str] = ..., storpool_client_id: _Optional[int] = ..., storpool_cluster_id: _Optional[str] = ..., version: _Optional[str] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., healthy: _Optional[bool] = ..., storpool_client_running: _Optional[bool] = ..., pool_uuids: _Optional[_Iterable[str]] = ..., max_copies: _Optional[int] = ..., copies_running: _Optional[int] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...
