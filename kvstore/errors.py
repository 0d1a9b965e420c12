"""The store's own error types, one per way a request can fail.

Pure: no gRPC here. Each error maps to exactly one gRPC status code in
`kvstore.rpc.status` (the only table of that mapping), so core modules raise these
and the servicers translate. Every message says what went wrong and what to
change.
"""


class KVStoreError(Exception):
    """Base of every error a request can end with."""


class InvalidArgument(KVStoreError):
    """The request itself is wrong: bad key, value, option or context."""


class FailedPrecondition(KVStoreError):
    """The request is well formed but the store's state forbids it."""


class Unavailable(KVStoreError):
    """The node is starting or stopping, or too few replicas answered."""


class DeadlineExceeded(KVStoreError):
    """The request's deadline passed before it could be answered."""


class ResourceExhausted(KVStoreError):
    """A capacity limit was hit (e.g. the LMDB map is full)."""


class DataLoss(KVStoreError):
    """A stored record failed its checksum; it is reported, never returned."""
