from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicaRecord(_message.Message):
    __slots__ = ("key", "version", "timestamp", "tombstone", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    version: bytes
    timestamp: int
    tombstone: bool
    value: bytes
    def __init__(self, key: _Optional[bytes] = ..., version: _Optional[bytes] = ..., timestamp: _Optional[int] = ..., tombstone: _Optional[bool] = ..., value: _Optional[bytes] = ...) -> None: ...

class ReplicaReadRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class ReplicaReadResponse(_message.Message):
    __slots__ = ("found", "record")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    found: bool
    record: ReplicaRecord
    def __init__(self, found: _Optional[bool] = ..., record: _Optional[_Union[ReplicaRecord, _Mapping]] = ...) -> None: ...

class ReplicaWriteRequest(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: ReplicaRecord
    def __init__(self, record: _Optional[_Union[ReplicaRecord, _Mapping]] = ...) -> None: ...

class ReplicaWriteResponse(_message.Message):
    __slots__ = ("applied",)
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    def __init__(self, applied: _Optional[bool] = ...) -> None: ...
