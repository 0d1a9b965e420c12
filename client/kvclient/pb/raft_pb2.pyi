from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RaftEntry(_message.Message):
    __slots__ = ("index", "term", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    data: bytes
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class RaftSnapshot(_message.Message):
    __slots__ = ("index", "term", "data", "chunked")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CHUNKED_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    data: bytes
    chunked: bool
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., data: _Optional[bytes] = ..., chunked: bool = ...) -> None: ...

class RaftSnapshotChunk(_message.Message):
    __slots__ = ("group", "index", "term", "offset", "total_bytes", "data")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    group: int
    index: int
    term: int
    offset: int
    total_bytes: int
    data: bytes
    def __init__(self, group: _Optional[int] = ..., index: _Optional[int] = ..., term: _Optional[int] = ..., offset: _Optional[int] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class RaftVote(_message.Message):
    __slots__ = ("last_index", "last_term", "pre_vote", "transfer")
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    last_index: int
    last_term: int
    pre_vote: bool
    transfer: bool
    def __init__(self, last_index: _Optional[int] = ..., last_term: _Optional[int] = ..., pre_vote: bool = ..., transfer: bool = ...) -> None: ...

class RaftVoteResponse(_message.Message):
    __slots__ = ("granted", "pre_vote")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    pre_vote: bool
    def __init__(self, granted: bool = ..., pre_vote: bool = ...) -> None: ...

class RaftAppend(_message.Message):
    __slots__ = ("prev_index", "prev_term", "entries", "commit")
    PREV_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREV_TERM_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    prev_index: int
    prev_term: int
    entries: _containers.RepeatedCompositeFieldContainer[RaftEntry]
    commit: int
    def __init__(self, prev_index: _Optional[int] = ..., prev_term: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[RaftEntry, _Mapping]]] = ..., commit: _Optional[int] = ...) -> None: ...

class RaftAppendResponse(_message.Message):
    __slots__ = ("index", "rejected", "hint_index", "hint_term")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    HINT_INDEX_FIELD_NUMBER: _ClassVar[int]
    HINT_TERM_FIELD_NUMBER: _ClassVar[int]
    index: int
    rejected: bool
    hint_index: int
    hint_term: int
    def __init__(self, index: _Optional[int] = ..., rejected: bool = ..., hint_index: _Optional[int] = ..., hint_term: _Optional[int] = ...) -> None: ...

class RaftHeartbeat(_message.Message):
    __slots__ = ("commit", "round")
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    commit: int
    round: int
    def __init__(self, commit: _Optional[int] = ..., round: _Optional[int] = ...) -> None: ...

class RaftHeartbeatResponse(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class RaftInstallSnapshot(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: RaftSnapshot
    def __init__(self, snapshot: _Optional[_Union[RaftSnapshot, _Mapping]] = ...) -> None: ...

class RaftTimeoutNow(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RaftReadIndex(_message.Message):
    __slots__ = ("context",)
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    context: bytes
    def __init__(self, context: _Optional[bytes] = ...) -> None: ...

class RaftReadIndexResponse(_message.Message):
    __slots__ = ("context", "index")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    context: bytes
    index: int
    def __init__(self, context: _Optional[bytes] = ..., index: _Optional[int] = ...) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("group", "term", "vote", "vote_response", "append", "append_response", "heartbeat", "heartbeat_response", "install_snapshot", "timeout_now", "read_index", "read_index_response")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    VOTE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    APPEND_FIELD_NUMBER: _ClassVar[int]
    APPEND_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    INSTALL_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_NOW_FIELD_NUMBER: _ClassVar[int]
    READ_INDEX_FIELD_NUMBER: _ClassVar[int]
    READ_INDEX_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    group: int
    term: int
    vote: RaftVote
    vote_response: RaftVoteResponse
    append: RaftAppend
    append_response: RaftAppendResponse
    heartbeat: RaftHeartbeat
    heartbeat_response: RaftHeartbeatResponse
    install_snapshot: RaftInstallSnapshot
    timeout_now: RaftTimeoutNow
    read_index: RaftReadIndex
    read_index_response: RaftReadIndexResponse
    def __init__(self, group: _Optional[int] = ..., term: _Optional[int] = ..., vote: _Optional[_Union[RaftVote, _Mapping]] = ..., vote_response: _Optional[_Union[RaftVoteResponse, _Mapping]] = ..., append: _Optional[_Union[RaftAppend, _Mapping]] = ..., append_response: _Optional[_Union[RaftAppendResponse, _Mapping]] = ..., heartbeat: _Optional[_Union[RaftHeartbeat, _Mapping]] = ..., heartbeat_response: _Optional[_Union[RaftHeartbeatResponse, _Mapping]] = ..., install_snapshot: _Optional[_Union[RaftInstallSnapshot, _Mapping]] = ..., timeout_now: _Optional[_Union[RaftTimeoutNow, _Mapping]] = ..., read_index: _Optional[_Union[RaftReadIndex, _Mapping]] = ..., read_index_response: _Optional[_Union[RaftReadIndexResponse, _Mapping]] = ...) -> None: ...

class RaftGroupHeartbeat(_message.Message):
    __slots__ = ("group", "term", "commit", "round")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    group: int
    term: int
    commit: int
    round: int
    def __init__(self, group: _Optional[int] = ..., term: _Optional[int] = ..., commit: _Optional[int] = ..., round: _Optional[int] = ...) -> None: ...

class RaftGroupHeartbeatResponse(_message.Message):
    __slots__ = ("group", "term", "round")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    group: int
    term: int
    round: int
    def __init__(self, group: _Optional[int] = ..., term: _Optional[int] = ..., round: _Optional[int] = ...) -> None: ...

class RaftQuiesce(_message.Message):
    __slots__ = ("group", "term", "commit")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    group: int
    term: int
    commit: int
    def __init__(self, group: _Optional[int] = ..., term: _Optional[int] = ..., commit: _Optional[int] = ...) -> None: ...

class RaftEnvelope(_message.Message):
    __slots__ = ("format", "sender", "to", "messages", "heartbeats", "heartbeat_responses", "quiesce", "snapshot_chunk")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEATS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_RESPONSES_FIELD_NUMBER: _ClassVar[int]
    QUIESCE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    format: int
    sender: str
    to: str
    messages: _containers.RepeatedCompositeFieldContainer[RaftMessage]
    heartbeats: _containers.RepeatedCompositeFieldContainer[RaftGroupHeartbeat]
    heartbeat_responses: _containers.RepeatedCompositeFieldContainer[RaftGroupHeartbeatResponse]
    quiesce: _containers.RepeatedCompositeFieldContainer[RaftQuiesce]
    snapshot_chunk: RaftSnapshotChunk
    def __init__(self, format: _Optional[int] = ..., sender: _Optional[str] = ..., to: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[RaftMessage, _Mapping]]] = ..., heartbeats: _Optional[_Iterable[_Union[RaftGroupHeartbeat, _Mapping]]] = ..., heartbeat_responses: _Optional[_Iterable[_Union[RaftGroupHeartbeatResponse, _Mapping]]] = ..., quiesce: _Optional[_Iterable[_Union[RaftQuiesce, _Mapping]]] = ..., snapshot_chunk: _Optional[_Union[RaftSnapshotChunk, _Mapping]] = ...) -> None: ...
