"""The token file: the bearer tokens a process accepts from clients and
operators, each with its role (`read`, `write` or `admin`) and a name.

    [[tokens]]
    name = "reporting"      # shown in refusals, logs and metrics; never the token
    role = "read"           # read | write (read and write) | admin
    token = "..."           # 16 to 256 visible ASCII characters

Owns reading and checking that file (it must not be readable by others) and
making one (`kvstore cluster up --auth-tokens`); never shows a token.
"""

from __future__ import annotations

import secrets
import stat
import tomllib
from pathlib import Path

from kvstore.security.certificates import write_private
from kvstore.security.identity import ADMIN_ROLES, CLIENT_ROLES, Identity, Role

TOKEN_FILE = "tokens.toml"
ROLES = {"read": frozenset({Role.READ}), "write": CLIENT_ROLES, "admin": ADMIN_ROLES}


class TokenFileError(ValueError):
    """The token file is unusable; the message says why (never a token)."""


def read_token_file(path: Path) -> dict[str, Identity]:
    """token -> the identity it names."""
    try:
        mode = path.stat().st_mode
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise TokenFileError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TokenFileError(f"the token file {path} is not valid TOML: {exc}") from None
    if mode & stat.S_IRWXO:
        raise TokenFileError(f"the token file {path} is readable by others; chmod 600 {path}")
    entries = document.get("tokens")
    if not isinstance(entries, list) or not entries:
        raise TokenFileError(f"the token file {path} needs [[tokens]] entries with "
                             "name, role and token")
    found: dict[str, Identity] = {}
    names: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{path}: tokens[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"name", "role", "token"}:
            raise TokenFileError(f"{where} takes name, role and token only")
        name, role, token = entry.get("name"), entry.get("role"), entry.get("token")
        if not isinstance(name, str) or not name or not name.isprintable() or name in names:
            raise TokenFileError(f"{where}: name must be a unique, non-empty printable text")
        if role not in ROLES:
            raise TokenFileError(f"{where} ({name}): role must be read, write or admin")
        if (not isinstance(token, str) or not 16 <= len(token) <= 256
                or not all(33 <= ord(c) <= 126 for c in token)):
            raise TokenFileError(f"{where} ({name}): token must be 16 to 256 visible ASCII "
                                 "characters")
        if token in found:
            raise TokenFileError(f"{where} ({name}): the same token is listed twice")
        names.add(name)
        found[token] = Identity(f"token {name!r} ({role})", ROLES[role])
    return found


def write_token_file(path: Path) -> dict[str, str]:
    """A new token file with one token of each role; role -> token."""
    tokens = {role: secrets.token_urlsafe(32) for role in ROLES}
    text = "# Written by `kvstore cluster up --auth-tokens`: keep it secret.\n" + "".join(
        f'\n[[tokens]]\nname = "{role}"\nrole = "{role}"\ntoken = "{token}"\n'
        for role, token in tokens.items())
    write_private(path, text.encode())
    return tokens


def tokens_by_role(path: Path) -> dict[str, str]:
    """role -> token of a file `write_token_file` wrote (the first of each role)."""
    document = tomllib.loads(path.read_text())
    found: dict[str, str] = {}
    for entry in document.get("tokens", []):
        found.setdefault(entry["role"], entry["token"])
    return found
