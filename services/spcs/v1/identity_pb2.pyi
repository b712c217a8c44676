from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("name", "version", "api", "host_id", "storpool_client_id", "storpool_cluster_id", "datamover_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    STORPOOL_CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STORPOOL_CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    DATAMOVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    api: str
    host_id: str
    storpool_client_id: int
    storpool_cluster_id: str
    datamover_version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., api: _Optional[str] = ..., host_id: _Optional[str] = ..., storpool_client_id: _Optional[int] = ..., storpool_cluster_id: _Optional[str] = ..., datamover_version: _Optional[str] = ...) -> None: ...

class GetServerCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServerCapabilitiesResponse(_message.Message):
    __slots__ = ("services", "features")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedScalarFieldContainer[str]
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, services: _Optional[_Iterable[str]] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("ready", "message")
    READY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    message: str
    def __init__(self, ready: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...
