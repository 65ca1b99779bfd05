"""Identifiers and small scalar formats of the environment spec.

Every check here mirrors the upstream wire rules (upstream-spec section 1) and raises
:class:`~greentic_core.errors.SpecFormatError` with a one-line message, so a malformed id
fails while a document is read, never deep inside an engine.
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import NewType

import attrs

from .errors import SpecFormatError

EnvId = NewType("EnvId", str)
RevisionId = NewType("RevisionId", str)
DeploymentId = NewType("DeploymentId", str)
BundleId = NewType("BundleId", str)

_ENV_ID = re.compile(r"[A-Za-z0-9._-]+")
# Crockford base32 without I, L, O, U; the first character bounds the 128-bit value.
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_DESCRIPTOR_PATH = re.compile(r"[a-z0-9.-]+")
_INSTANCE_ID = re.compile(r"[a-z0-9-]+")


def parse_env_id(value: str) -> EnvId:
    if not isinstance(value, str):
        raise SpecFormatError("EnvId", f"EnvId must be a string, got {type(value).__name__}")
    if not value:
        raise SpecFormatError("EnvId", "EnvId must not be empty")
    if not _ENV_ID.fullmatch(value):
        raise SpecFormatError(
            "EnvId", f"EnvId {value[:80]!r} must contain only ASCII letters, digits, '.', '-', or '_'"
        )
    return EnvId(value)


def parse_ulid(value: str, kind: str = "ULID") -> str:
    """Accept a 26-character ULID in either case; return it in canonical upper case."""
    if type(value) is str and _ULID.fullmatch(value):  # the common, canonical case
        return value
    if not isinstance(value, str):
        raise SpecFormatError(kind, f"{kind} must be a string, got {type(value).__name__}")
    upper = value.upper()
    if len(value) != 26 or not _ULID.fullmatch(upper):
        raise SpecFormatError(kind, f"{kind} {value[:80]!r} is not a 26-character ULID")
    return upper


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MAX_RANDOMNESS = (1 << 80) - 1
_minted = [0, 0]  # the last ULID's millisecond and randomness in this process
_mint_lock = threading.Lock()


def mint_ulid() -> str:
    """A new time-ordered ULID (48-bit ms timestamp + 80 random bits), upper case.

    As python-ulid's default generator mints them (which this replaces: importing it cost about
    25 ms, most of it reading its own version from the installed metadata): fresh randomness
    from ``os.urandom`` in each new millisecond, and within one millisecond the previous
    randomness plus one, so the ULIDs of one process are strictly increasing."""
    with _mint_lock:
        now = time.time_ns() // 1_000_000
        last_ms, last_random = _minted
        if now <= last_ms and last_random < _MAX_RANDOMNESS:
            now, randomness = last_ms, last_random + 1  # same millisecond (or a clock step back)
        else:
            randomness = int.from_bytes(os.urandom(10), "big")
        _minted[:] = [now, randomness]
    value = (now << 80) | randomness
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def mint_revision_id() -> RevisionId:
    return RevisionId(mint_ulid())


def mint_deployment_id() -> DeploymentId:
    return DeploymentId(mint_ulid())


# The regular expression semver.org publishes for SemVer 2.0.0 (a compiled match is ~10x
# cheaper than semver.Version.parse, and pack lists hold many versions).
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)


def parse_semver(value: str, what: str = "version") -> str:
    if not isinstance(value, str) or not _SEMVER.fullmatch(value):
        raise SpecFormatError("InvalidSemver", f"{what} {str(value)[:80]!r} is not valid SemVer")
    return value


def check_descriptor_path(path: str) -> str:
    if not path:
        raise SpecFormatError("EmptyPath", "pack descriptor path must not be empty")
    if "." not in path:
        raise SpecFormatError("PathMissingDot", f"pack descriptor path {path!r} must contain a '.'")
    bad = next((c for c in path if not _DESCRIPTOR_PATH.fullmatch(c)), None)
    if bad is not None:
        raise SpecFormatError(
            "InvalidPathChar", f"pack descriptor path {path!r} has invalid character {bad!r} (use a-z 0-9 . -)"
        )
    return path


@attrs.frozen(order=False)
class PackDescriptor:
    """``<path>@<semver>``, e.g. ``greentic.deployer.local-process@1.0.0``."""

    path: str
    version: str

    @classmethod
    def parse(cls, text: str) -> "PackDescriptor":
        if not isinstance(text, str):
            raise SpecFormatError("PackDescriptor", "pack descriptor must be a string")
        count = text.count("@")
        if count == 0:
            raise SpecFormatError("MissingVersion", f"pack descriptor {text[:80]!r} needs '@<version>'")
        if count > 1:
            raise SpecFormatError("MultipleAt", f"pack descriptor {text[:80]!r} has more than one '@'")
        path, version = text.split("@")
        check_descriptor_path(path)
        parse_semver(version, f"pack descriptor {text!r} version")
        return cls(path, version)

    def __str__(self) -> str:
        return f"{self.path}@{self.version}"


def secret_ref_env(value: str, scheme: str = "secret://") -> str:
    """The env segment of a ``secret://<env>/...`` (or ``runtime://``) reference."""
    if not isinstance(value, str) or not value.startswith(scheme):
        raise SpecFormatError("MissingScheme", f"reference {str(value)[:80]!r} must start with {scheme!r}")
    rest = value[len(scheme):]
    if not rest:
        raise SpecFormatError("EmptyPath", f"reference {value!r} has nothing after {scheme!r}")
    env = rest.split("/", 1)[0]
    if not env:
        raise SpecFormatError("EmptyEnvSegment", f"reference {value!r} has an empty env segment")
    return env


def check_instance_id(value: str) -> str | None:
    """Return a reason when an extension instance id is invalid, else None."""
    if not isinstance(value, str) or not value:
        return "instance id must be a non-empty string"
    if not _INSTANCE_ID.fullmatch(value):
        return f"instance id {value[:80]!r} may only use a-z 0-9 -"
    return None
