"""The store's own error types, one per way a request can fail.

Pure: no gRPC here. Each error maps to exactly one gRPC status code in
`kvstore.rpc.status` (the only table of that mapping), so core modules raise these
and the servicers translate. Every message says what went wrong and what to
change.
"""


# What a failed write did, in an error's `outcome` (DESIGN.md, "Errors on
# the wire"): nothing was applied anywhere, or it may have been applied and
# may still appear (so the client cannot tell a failure from a success).
NOT_APPLIED = "not_applied"
UNKNOWN = "unknown"

# ErrorInfo reason of a request refused by admission control: nothing was
# done, and the same request may succeed after `retry_after`.
OVERLOADED = "OVERLOADED"


class KVStoreError(Exception):
    """Base of every error a request can end with.

    `reason` names the case for machines (an ErrorInfo reason on the wire,
    e.g. QUORUM_NOT_REACHED) and `metadata` carries its fields as strings
    (e.g. `outcome`, `required`, `acknowledged`); both are optional.
    `retry_after` (seconds), where set, says that retrying after that long
    may succeed (a RetryInfo on the wire).
    """

    def __init__(self, message: str = "", *, reason: str | None = None,
                 metadata: dict[str, str] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after

    @property
    def outcome(self) -> str | None:
        """NOT_APPLIED or UNKNOWN for a failed write that says which; else None."""
        return self.metadata.get("outcome")


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


class Overloaded(ResourceExhausted):
    """Refused at once by admission control: too many requests (or bytes of
    them) in flight. Nothing was applied; retry after `retry_after`."""

    def __init__(self, message: str, *, bound: str, retry_after: float,
                 expected_latency: float = 0.0) -> None:
        # expected_latency_ms: how long a request admitted now would need,
        # as far as the process can tell; a client retries only with at
        # least that much of its deadline left.
        super().__init__(message, reason=OVERLOADED,
                         metadata={"outcome": NOT_APPLIED, "bound": bound,
                                   "expected_latency_ms": f"{expected_latency * 1000:.0f}"},
                         retry_after=retry_after)


class DataLoss(KVStoreError):
    """A stored record failed its checksum; it is reported, never returned."""
