from kvclient.pb import kv_pb2 as _kv_pb2
from kvclient.pb import raft_pb2 as _raft_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicaRead(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class ReplicaApply(_message.Message):
    __slots__ = ("key", "value", "tombstone", "context", "request_id")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    tombstone: bool
    context: bytes
    request_id: bytes
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., tombstone: bool = ..., context: _Optional[bytes] = ..., request_id: _Optional[bytes] = ...) -> None: ...

class ReplicaMerge(_message.Message):
    __slots__ = ("key", "state", "request_id", "hint_for")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HINT_FOR_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    state: bytes
    request_id: bytes
    hint_for: str
    def __init__(self, key: _Optional[bytes] = ..., state: _Optional[bytes] = ..., request_id: _Optional[bytes] = ..., hint_for: _Optional[str] = ...) -> None: ...

class ReplicaTreeHashes(_message.Message):
    __slots__ = ("partition", "level", "indices")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    partition: int
    level: int
    indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, partition: _Optional[int] = ..., level: _Optional[int] = ..., indices: _Optional[_Iterable[int]] = ...) -> None: ...

class ReplicaBucket(_message.Message):
    __slots__ = ("partition", "bucket")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    partition: int
    bucket: int
    def __init__(self, partition: _Optional[int] = ..., bucket: _Optional[int] = ...) -> None: ...

class ReplicaRepair(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: int
    def __init__(self, partition: _Optional[int] = ...) -> None: ...

class ReplicaRoots(_message.Message):
    __slots__ = ("partitions",)
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, partitions: _Optional[_Iterable[int]] = ...) -> None: ...

class ReplicaPurge(_message.Message):
    __slots__ = ("key", "digest")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    digest: bytes
    def __init__(self, key: _Optional[bytes] = ..., digest: _Optional[bytes] = ...) -> None: ...

class ReplicaHintsHeld(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: int
    def __init__(self, partition: _Optional[int] = ...) -> None: ...

class ReplicaPing(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplicaLeaderWrite(_message.Message):
    __slots__ = ("partition", "key", "value", "delete", "if_version", "request_id", "timeout_ms")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    partition: int
    key: bytes
    value: bytes
    delete: bool
    if_version: int
    request_id: bytes
    timeout_ms: int
    def __init__(self, partition: _Optional[int] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., delete: bool = ..., if_version: _Optional[int] = ..., request_id: _Optional[bytes] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class ReplicaLeaderRead(_message.Message):
    __slots__ = ("partition", "key", "stale", "timeout_ms")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    partition: int
    key: bytes
    stale: bool
    timeout_ms: int
    def __init__(self, partition: _Optional[int] = ..., key: _Optional[bytes] = ..., stale: bool = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class ReplicaOp(_message.Message):
    __slots__ = ("id", "read", "apply", "merge", "tree_hashes", "bucket", "repair", "roots", "purge", "hints_held", "ping", "raft", "leader_write", "leader_read", "trace")
    ID_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    APPLY_FIELD_NUMBER: _ClassVar[int]
    MERGE_FIELD_NUMBER: _ClassVar[int]
    TREE_HASHES_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FIELD_NUMBER: _ClassVar[int]
    ROOTS_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    HINTS_HELD_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    RAFT_FIELD_NUMBER: _ClassVar[int]
    LEADER_WRITE_FIELD_NUMBER: _ClassVar[int]
    LEADER_READ_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    id: int
    read: ReplicaRead
    apply: ReplicaApply
    merge: ReplicaMerge
    tree_hashes: ReplicaTreeHashes
    bucket: ReplicaBucket
    repair: ReplicaRepair
    roots: ReplicaRoots
    purge: ReplicaPurge
    hints_held: ReplicaHintsHeld
    ping: ReplicaPing
    raft: _raft_pb2.RaftEnvelope
    leader_write: ReplicaLeaderWrite
    leader_read: ReplicaLeaderRead
    trace: _kv_pb2.TraceContext
    def __init__(self, id: _Optional[int] = ..., read: _Optional[_Union[ReplicaRead, _Mapping]] = ..., apply: _Optional[_Union[ReplicaApply, _Mapping]] = ..., merge: _Optional[_Union[ReplicaMerge, _Mapping]] = ..., tree_hashes: _Optional[_Union[ReplicaTreeHashes, _Mapping]] = ..., bucket: _Optional[_Union[ReplicaBucket, _Mapping]] = ..., repair: _Optional[_Union[ReplicaRepair, _Mapping]] = ..., roots: _Optional[_Union[ReplicaRoots, _Mapping]] = ..., purge: _Optional[_Union[ReplicaPurge, _Mapping]] = ..., hints_held: _Optional[_Union[ReplicaHintsHeld, _Mapping]] = ..., ping: _Optional[_Union[ReplicaPing, _Mapping]] = ..., raft: _Optional[_Union[_raft_pb2.RaftEnvelope, _Mapping]] = ..., leader_write: _Optional[_Union[ReplicaLeaderWrite, _Mapping]] = ..., leader_read: _Optional[_Union[ReplicaLeaderRead, _Mapping]] = ..., trace: _Optional[_Union[_kv_pb2.TraceContext, _Mapping]] = ...) -> None: ...

class KeyDigest(_message.Message):
    __slots__ = ("key", "digest")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    digest: bytes
    def __init__(self, key: _Optional[bytes] = ..., digest: _Optional[bytes] = ...) -> None: ...

class ReplicaResult(_message.Message):
    __slots__ = ("status", "found", "state", "hashes", "entries", "repaired", "hints", "id", "version", "index", "value")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    REPAIRED_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.ItemStatus
    found: bool
    state: bytes
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    entries: _containers.RepeatedCompositeFieldContainer[KeyDigest]
    repaired: int
    hints: int
    id: int
    version: int
    index: int
    value: bytes
    def __init__(self, status: _Optional[_Union[_kv_pb2.ItemStatus, _Mapping]] = ..., found: bool = ..., state: _Optional[bytes] = ..., hashes: _Optional[_Iterable[bytes]] = ..., entries: _Optional[_Iterable[_Union[KeyDigest, _Mapping]]] = ..., repaired: _Optional[int] = ..., hints: _Optional[int] = ..., id: _Optional[int] = ..., version: _Optional[int] = ..., index: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...

class ReplicaBatchRequest(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[ReplicaOp]
    def __init__(self, ops: _Optional[_Iterable[_Union[ReplicaOp, _Mapping]]] = ...) -> None: ...

class ReplicaBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ReplicaResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ReplicaResult, _Mapping]]] = ...) -> None: ...
