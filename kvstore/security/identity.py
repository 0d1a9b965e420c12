"""Who a caller is and what it may call (DESIGN.md, "Identities").

A *peer* (a node or a coordinator) may call the internal Replica service;
an *admin* (operator tools, the chaos suite's checkers) may call it too,
and the admin-only operations; a *client* reaches the KV service (and
Admin.Status, which tells what a client needs to find the cluster). Health
and reflection answer anyone.

With TLS the identity comes from the certificate the cluster's CA issued:
its common name or a DNS name matching one of `peer_names` or
`admin_names` (shell-style patterns); any other certificate of that CA is a
client. A bearer token (the cluster secret of a plaintext cluster) names
an identity too, compared in constant time. Pure: no gRPC, no I/O; never
puts a token in a message.
"""

from __future__ import annotations

import enum
import fnmatch
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


class Role(enum.Enum):
    READ = "read"  # KV reads, Admin.Status
    WRITE = "write"  # KV writes
    PEER = "peer"  # the internal Replica service
    ADMIN = "admin"  # operator-only operations (Admin.Snapshot)


CLIENT_ROLES = frozenset({Role.READ, Role.WRITE})
PEER_ROLES = CLIENT_ROLES | {Role.PEER}
ADMIN_ROLES = PEER_ROLES | {Role.ADMIN}


@dataclass(frozen=True)
class Identity:
    """A caller: how it is known (`name`, shown in refusals and logs: never a
    secret) and what it may do."""

    name: str
    roles: frozenset[Role]

    @property
    def kind(self) -> str:
        if Role.ADMIN in self.roles:
            return "admin"
        if Role.PEER in self.roles:
            return "peer"
        return "client"


ANONYMOUS = Identity("an anonymous client", CLIENT_ROLES)

_KV = "/kvstore.v1.KV/"
# Every other KV method (Get, GetMany, Ping, Topology, Session, and any
# added later) needs the read role. A Session carries writes too: every
# identity there is today holds both roles.
_WRITES = {"Put", "Delete", "PutMany"}


def required_role(method: str) -> Role | None:
    """The role a call to `method` ("/package.Service/Method") needs; None:
    anyone may call it (health, reflection, and methods no service has,
    which gRPC answers UNIMPLEMENTED)."""
    if method.startswith("/kvstore.v1.Replica/"):
        return Role.PEER
    if method == "/kvstore.v1.Admin/Status":
        return Role.READ
    if method.startswith("/kvstore.v1.Admin/"):  # Snapshot, TransferLeader and any later one
        return Role.ADMIN
    if method.startswith(_KV):
        return Role.WRITE if method[len(_KV):] in _WRITES else Role.READ
    return None


_WHAT_NEEDS = {
    Role.PEER: "the internal Replica service is for the cluster's own nodes and coordinators "
               "(a peer) and its operators (an admin)",
    Role.ADMIN: "this operation is for the cluster's operators (an admin)",
    Role.WRITE: "writing needs the write role",
    Role.READ: "reading needs the read role",
}


@dataclass(frozen=True)
class Refusal:
    """Why a call is refused: `unauthenticated` (no or unknown credentials:
    UNAUTHENTICATED) or not (the caller is known but may not: PERMISSION_DENIED);
    `reason` labels the refusal in the metrics."""

    reason: str
    message: str
    unauthenticated: bool = False


class TokenTable:
    """The bearer tokens a process accepts and whom each names. Lookups
    compare against every token in constant time, so the time an answer
    takes says nothing about how close a guess was."""

    def __init__(self, tokens: Mapping[str, Identity] = {}) -> None:
        self._tokens = [(token.encode(), identity) for token, identity in tokens.items()]

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def lookup(self, token: str) -> Identity | None:
        offered = token.encode()
        found = None
        for known, identity in self._tokens:
            if hmac.compare_digest(known, offered):
                found = identity
        return found


@dataclass(frozen=True)
class NamePatterns:
    """Which certificate names make a peer or an admin (shell-style patterns,
    e.g. "*.peer.kvstore")."""

    peer: tuple[str, ...] = ("*.peer.kvstore",)
    admin: tuple[str, ...] = ("*.admin.kvstore",)

    def identity(self, names: Sequence[str]) -> Identity:
        """The identity of a certificate with these names (common name first)."""
        shown = names[0] if names else "a certificate without a name"
        if _matches(names, self.admin):
            return Identity(f"admin certificate {shown!r}", ADMIN_ROLES)
        if _matches(names, self.peer):
            return Identity(f"peer certificate {shown!r}", PEER_ROLES)
        return Identity(f"client certificate {shown!r}", CLIENT_ROLES)


def _matches(names: Iterable[str], patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for name in names for pattern in patterns)


class AccessPolicy:
    """Who the caller is, from what it presented, and whether it may call a
    method. `anonymous`: the identity of a caller that presents nothing
    (None: such a caller is refused UNAUTHENTICATED)."""

    def __init__(self, tokens: TokenTable | None = None,
                 names: NamePatterns = NamePatterns(),
                 anonymous: Identity | None = ANONYMOUS) -> None:
        self.tokens = tokens if tokens is not None else TokenTable()
        self.names = names
        self.anonymous = anonymous

    def identify(self, token: str | None,
                 certificate_names: Sequence[str] | None) -> Identity | Refusal:
        """A token, if given, decides (a wrong one is refused, never taken as
        anonymous); else the certificate; else `anonymous`."""
        if token is not None:
            identity = self.tokens.lookup(token)
            if identity is None:
                return Refusal("bad_token", "the bearer token is not one this process accepts; "
                               "check the token (or the cluster secret) the caller uses",
                               unauthenticated=True)
            return identity
        if certificate_names is not None:
            return self.names.identity(certificate_names)
        if self.anonymous is None:
            return Refusal("no_credentials", "this process requires credentials: a client "
                           "certificate or an `authorization: Bearer TOKEN` header",
                           unauthenticated=True)
        return self.anonymous

    def authorize(self, identity: Identity, needed: Role) -> Refusal | None:
        if needed in identity.roles:
            return None
        hint = ""
        if needed in (Role.PEER, Role.ADMIN) and identity is self.anonymous:
            hint = ("; without TLS, peers and admins carry the cluster secret "
                    "(DATA_DIR/cluster.secret, or --token)")
        return Refusal("not_permitted",
                       f"{_WHAT_NEEDS[needed]}; the caller is {identity.name} ({identity.kind})"
                       + hint)

    def check(self, method: str, token: str | None,
              certificate_names: Sequence[str] | None) -> Identity | Refusal:
        """The caller's identity if it may call `method`, else why not. A
        method that needs no role answers anyone, whatever it presents."""
        needed = required_role(method)
        if needed is None:
            return ANONYMOUS
        identity = self.identify(token, certificate_names)
        if isinstance(identity, Refusal):
            return identity
        refusal = self.authorize(identity, needed)
        return identity if refusal is None else refusal
