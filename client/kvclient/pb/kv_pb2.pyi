from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Consistency(_message.Message):
    __slots__ = ("level", "count")
    class Level(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LEVEL_UNSPECIFIED: _ClassVar[Consistency.Level]
        ONE: _ClassVar[Consistency.Level]
        QUORUM: _ClassVar[Consistency.Level]
        ALL: _ClassVar[Consistency.Level]
    LEVEL_UNSPECIFIED: Consistency.Level
    ONE: Consistency.Level
    QUORUM: Consistency.Level
    ALL: Consistency.Level
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    level: Consistency.Level
    count: int
    def __init__(self, level: _Optional[_Union[Consistency.Level, str]] = ..., count: _Optional[int] = ...) -> None: ...

class Dot(_message.Message):
    __slots__ = ("node_id", "counter")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    counter: int
    def __init__(self, node_id: _Optional[str] = ..., counter: _Optional[int] = ...) -> None: ...

class CausalContext(_message.Message):
    __slots__ = ("version_vector", "issued")
    VERSION_VECTOR_FIELD_NUMBER: _ClassVar[int]
    ISSUED_FIELD_NUMBER: _ClassVar[int]
    version_vector: _containers.RepeatedCompositeFieldContainer[Dot]
    issued: bool
    def __init__(self, version_vector: _Optional[_Iterable[_Union[Dot, _Mapping]]] = ..., issued: bool = ...) -> None: ...

class ItemStatus(_message.Message):
    __slots__ = ("code", "message", "reason", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    reason: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key", "r", "stale")
    KEY_FIELD_NUMBER: _ClassVar[int]
    R_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    r: Consistency
    stale: bool
    def __init__(self, key: _Optional[bytes] = ..., r: _Optional[_Union[Consistency, _Mapping]] = ..., stale: bool = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("found", "siblings", "context", "timestamp", "version", "leader")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    SIBLINGS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    found: bool
    siblings: _containers.RepeatedScalarFieldContainer[bytes]
    context: bytes
    timestamp: int
    version: int
    leader: str
    def __init__(self, found: bool = ..., siblings: _Optional[_Iterable[bytes]] = ..., context: _Optional[bytes] = ..., timestamp: _Optional[int] = ..., version: _Optional[int] = ..., leader: _Optional[str] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("key", "value", "context", "w", "request_id", "strict_quorum", "if_version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STRICT_QUORUM_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    context: bytes
    w: Consistency
    request_id: bytes
    strict_quorum: bool
    if_version: int
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., context: _Optional[bytes] = ..., w: _Optional[_Union[Consistency, _Mapping]] = ..., request_id: _Optional[bytes] = ..., strict_quorum: bool = ..., if_version: _Optional[int] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("context", "timestamp", "version", "leader")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    context: bytes
    timestamp: int
    version: int
    leader: str
    def __init__(self, context: _Optional[bytes] = ..., timestamp: _Optional[int] = ..., version: _Optional[int] = ..., leader: _Optional[str] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("key", "context", "w", "request_id", "strict_quorum", "if_version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STRICT_QUORUM_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    context: bytes
    w: Consistency
    request_id: bytes
    strict_quorum: bool
    if_version: int
    def __init__(self, key: _Optional[bytes] = ..., context: _Optional[bytes] = ..., w: _Optional[_Union[Consistency, _Mapping]] = ..., request_id: _Optional[bytes] = ..., strict_quorum: bool = ..., if_version: _Optional[int] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("context", "version", "leader")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    context: bytes
    version: int
    leader: str
    def __init__(self, context: _Optional[bytes] = ..., version: _Optional[int] = ..., leader: _Optional[str] = ...) -> None: ...

class GetManyRequest(_message.Message):
    __slots__ = ("keys", "r", "stale")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    R_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    r: Consistency
    stale: bool
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., r: _Optional[_Union[Consistency, _Mapping]] = ..., stale: bool = ...) -> None: ...

class GetManyResponse(_message.Message):
    __slots__ = ("items",)
    class Item(_message.Message):
        __slots__ = ("status", "result")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        RESULT_FIELD_NUMBER: _ClassVar[int]
        status: ItemStatus
        result: GetResponse
        def __init__(self, status: _Optional[_Union[ItemStatus, _Mapping]] = ..., result: _Optional[_Union[GetResponse, _Mapping]] = ...) -> None: ...
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[GetManyResponse.Item]
    def __init__(self, items: _Optional[_Iterable[_Union[GetManyResponse.Item, _Mapping]]] = ...) -> None: ...

class PutManyRequest(_message.Message):
    __slots__ = ("puts", "w")
    PUTS_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    puts: _containers.RepeatedCompositeFieldContainer[PutRequest]
    w: Consistency
    def __init__(self, puts: _Optional[_Iterable[_Union[PutRequest, _Mapping]]] = ..., w: _Optional[_Union[Consistency, _Mapping]] = ...) -> None: ...

class PutManyResponse(_message.Message):
    __slots__ = ("items",)
    class Item(_message.Message):
        __slots__ = ("status", "result")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        RESULT_FIELD_NUMBER: _ClassVar[int]
        status: ItemStatus
        result: PutResponse
        def __init__(self, status: _Optional[_Union[ItemStatus, _Mapping]] = ..., result: _Optional[_Union[PutResponse, _Mapping]] = ...) -> None: ...
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PutManyResponse.Item]
    def __init__(self, items: _Optional[_Iterable[_Union[PutManyResponse.Item, _Mapping]]] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class TraceContext(_message.Message):
    __slots__ = ("traceparent", "tracestate")
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    traceparent: str
    tracestate: str
    def __init__(self, traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ...) -> None: ...

class SessionOperation(_message.Message):
    __slots__ = ("id", "timeout_ms", "get", "put", "delete", "get_many", "put_many", "ping", "trace")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    GET_MANY_FIELD_NUMBER: _ClassVar[int]
    PUT_MANY_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    id: int
    timeout_ms: int
    get: GetRequest
    put: PutRequest
    delete: DeleteRequest
    get_many: GetManyRequest
    put_many: PutManyRequest
    ping: PingRequest
    trace: TraceContext
    def __init__(self, id: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., get: _Optional[_Union[GetRequest, _Mapping]] = ..., put: _Optional[_Union[PutRequest, _Mapping]] = ..., delete: _Optional[_Union[DeleteRequest, _Mapping]] = ..., get_many: _Optional[_Union[GetManyRequest, _Mapping]] = ..., put_many: _Optional[_Union[PutManyRequest, _Mapping]] = ..., ping: _Optional[_Union[PingRequest, _Mapping]] = ..., trace: _Optional[_Union[TraceContext, _Mapping]] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("operations", "cancel")
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    operations: _containers.RepeatedCompositeFieldContainer[SessionOperation]
    cancel: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, operations: _Optional[_Iterable[_Union[SessionOperation, _Mapping]]] = ..., cancel: _Optional[_Iterable[int]] = ...) -> None: ...

class SessionResult(_message.Message):
    __slots__ = ("id", "error", "get", "put", "delete", "get_many", "put_many", "ping")
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    GET_MANY_FIELD_NUMBER: _ClassVar[int]
    PUT_MANY_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    id: int
    error: _status_pb2.Status
    get: GetResponse
    put: PutResponse
    delete: DeleteResponse
    get_many: GetManyResponse
    put_many: PutManyResponse
    ping: PingResponse
    def __init__(self, id: _Optional[int] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., get: _Optional[_Union[GetResponse, _Mapping]] = ..., put: _Optional[_Union[PutResponse, _Mapping]] = ..., delete: _Optional[_Union[DeleteResponse, _Mapping]] = ..., get_many: _Optional[_Union[GetManyResponse, _Mapping]] = ..., put_many: _Optional[_Union[PutManyResponse, _Mapping]] = ..., ping: _Optional[_Union[PingResponse, _Mapping]] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SessionResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SessionResult, _Mapping]]] = ...) -> None: ...

class TopologyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TopologyMember(_message.Message):
    __slots__ = ("id", "address")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class TopologyPartition(_message.Message):
    __slots__ = ("replicas", "leader", "term")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.RepeatedScalarFieldContainer[str]
    leader: str
    term: int
    def __init__(self, replicas: _Optional[_Iterable[str]] = ..., leader: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...

class TopologyResponse(_message.Message):
    __slots__ = ("version", "mode", "role", "id", "hash", "replicas", "members", "partitions")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    version: int
    mode: str
    role: str
    id: str
    hash: str
    replicas: int
    members: _containers.RepeatedCompositeFieldContainer[TopologyMember]
    partitions: _containers.RepeatedCompositeFieldContainer[TopologyPartition]
    def __init__(self, version: _Optional[int] = ..., mode: _Optional[str] = ..., role: _Optional[str] = ..., id: _Optional[str] = ..., hash: _Optional[str] = ..., replicas: _Optional[int] = ..., members: _Optional[_Iterable[_Union[TopologyMember, _Mapping]]] = ..., partitions: _Optional[_Iterable[_Union[TopologyPartition, _Mapping]]] = ...) -> None: ...
