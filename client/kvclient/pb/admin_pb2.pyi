from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MemberStatus(_message.Message):
    __slots__ = ("id", "address", "up", "phi", "self")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    PHI_FIELD_NUMBER: _ClassVar[int]
    SELF_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    up: bool
    phi: float
    self: bool
    def __init__(self_, id: _Optional[str] = ..., address: _Optional[str] = ..., up: bool = ..., phi: _Optional[float] = ..., self: bool = ...) -> None: ...

class PartitionReplicas(_message.Message):
    __slots__ = ("partition", "replicas")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    partition: int
    replicas: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, partition: _Optional[int] = ..., replicas: _Optional[_Iterable[str]] = ...) -> None: ...

class NodeStats(_message.Message):
    __slots__ = ("keys", "db_bytes", "map_size_bytes", "map_used_ratio", "hints_pending", "hints_pending_bytes")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    DB_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAP_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAP_USED_RATIO_FIELD_NUMBER: _ClassVar[int]
    HINTS_PENDING_FIELD_NUMBER: _ClassVar[int]
    HINTS_PENDING_BYTES_FIELD_NUMBER: _ClassVar[int]
    keys: int
    db_bytes: int
    map_size_bytes: int
    map_used_ratio: float
    hints_pending: int
    hints_pending_bytes: int
    def __init__(self, keys: _Optional[int] = ..., db_bytes: _Optional[int] = ..., map_size_bytes: _Optional[int] = ..., map_used_ratio: _Optional[float] = ..., hints_pending: _Optional[int] = ..., hints_pending_bytes: _Optional[int] = ...) -> None: ...

class CoordinatorStats(_message.Message):
    __slots__ = ("cache_entries", "cache_bytes", "cache_hits", "cache_misses")
    CACHE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CACHE_MISSES_FIELD_NUMBER: _ClassVar[int]
    cache_entries: int
    cache_bytes: int
    cache_hits: int
    cache_misses: int
    def __init__(self, cache_entries: _Optional[int] = ..., cache_bytes: _Optional[int] = ..., cache_hits: _Optional[int] = ..., cache_misses: _Optional[int] = ...) -> None: ...

class RaftGroupStatus(_message.Message):
    __slots__ = ("partition", "role", "leader", "term", "commit", "applied", "last_index", "quiesced", "halted", "fenced")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    QUIESCED_FIELD_NUMBER: _ClassVar[int]
    HALTED_FIELD_NUMBER: _ClassVar[int]
    FENCED_FIELD_NUMBER: _ClassVar[int]
    partition: int
    role: str
    leader: str
    term: int
    commit: int
    applied: int
    last_index: int
    quiesced: bool
    halted: str
    fenced: bool
    def __init__(self, partition: _Optional[int] = ..., role: _Optional[str] = ..., leader: _Optional[str] = ..., term: _Optional[int] = ..., commit: _Optional[int] = ..., applied: _Optional[int] = ..., last_index: _Optional[int] = ..., quiesced: bool = ..., halted: _Optional[str] = ..., fenced: bool = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("id", "role", "version", "address", "uptime_seconds", "mode", "replicas", "partitions", "members", "ring", "node", "coordinator", "raft")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    RING_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    RAFT_FIELD_NUMBER: _ClassVar[int]
    id: str
    role: str
    version: str
    address: str
    uptime_seconds: float
    mode: str
    replicas: int
    partitions: int
    members: _containers.RepeatedCompositeFieldContainer[MemberStatus]
    ring: _containers.RepeatedCompositeFieldContainer[PartitionReplicas]
    node: NodeStats
    coordinator: CoordinatorStats
    raft: _containers.RepeatedCompositeFieldContainer[RaftGroupStatus]
    def __init__(self, id: _Optional[str] = ..., role: _Optional[str] = ..., version: _Optional[str] = ..., address: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., mode: _Optional[str] = ..., replicas: _Optional[int] = ..., partitions: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MemberStatus, _Mapping]]] = ..., ring: _Optional[_Iterable[_Union[PartitionReplicas, _Mapping]]] = ..., node: _Optional[_Union[NodeStats, _Mapping]] = ..., coordinator: _Optional[_Union[CoordinatorStats, _Mapping]] = ..., raft: _Optional[_Iterable[_Union[RaftGroupStatus, _Mapping]]] = ...) -> None: ...

class TransferLeaderRequest(_message.Message):
    __slots__ = ("partition", "to")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    partition: int
    to: str
    def __init__(self, partition: _Optional[int] = ..., to: _Optional[str] = ...) -> None: ...

class TransferLeaderResponse(_message.Message):
    __slots__ = ("leader", "term")
    LEADER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    leader: str
    term: int
    def __init__(self, leader: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("data", "node_id", "total_bytes", "sha256")
    DATA_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    node_id: str
    total_bytes: int
    sha256: bytes
    def __init__(self, data: _Optional[bytes] = ..., node_id: _Optional[str] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...
