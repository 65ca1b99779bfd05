"""Route values (a deployment's hosts and path prefixes): the rules every provider shares.

Pure functions, no I/O. A deployment's route binding is checked at the earliest point, before
any provider call and before anything is recorded: when the deployment is added, and again
before ``stage``, ``warm`` and ``apply_traffic_split`` (and by ``env doctor``) for routes
recorded earlier. Two layers:

1. :func:`route_problems`: what no HTTP router accepts, for every provider: host names are
   lower-case DNS names (an optional leading ``*.`` wildcard label), at most 253 characters,
   labels of 1..63 characters, no port, no trailing dot, no IP address; path prefixes are
   absolute paths of at most 1024 characters made of RFC 3986 path characters, with no empty,
   ``.`` or ``..`` segment, no encoded slash, no query and no fragment. These are the rules of
   the Gateway API ``HTTPRoute`` schema, which are also the RFC 1123 / RFC 3986 rules. At
   most 16 hosts and 64 path prefixes per deployment (the HTTPRoute's limits).
2. The provider's own rules, through the optional ``greentic_validate_routes`` hook (for
   example at most 16 host names on an HTTPRoute, or an ALB's host-header character set after
   the answers' placeholders are filled). See :mod:`greentic_core.hookspecs`.

Either layer's refusal is an :class:`InvalidRoute`, which is a :class:`DeployerError`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterable, Sequence

from .errors import DeployerError

#: RFC 1123 host name as Gateway API writes it (lower case; an optional leading ``*.`` label).
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MAX_HOSTNAME_CHARS = 253
MAX_LABEL_CHARS = 63
#: RFC 3986 path characters (pchar and '/'), percent-encoded octets allowed.
PATH_PATTERN = r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$"
MAX_PATH_CHARS = 1024
#: At most this many hosts and path prefixes per deployment (the Gateway API HTTPRoute's limits:
#: 16 hostnames, 64 matches in a rule); a provider may allow fewer, never more.
MAX_HOSTS = 16
MAX_PATH_PREFIXES = 64

_HOSTNAME = re.compile(HOSTNAME_PATTERN)
_PATH = re.compile(PATH_PATTERN)


class InvalidRoute(DeployerError):
    """A deployment's hosts or path prefixes break a routing rule (raised before any provider call)."""

    kind = "validation"
    exit_code = 2


def _show(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:60] + "..." + value[-10:])


def host_problem(host: Any) -> str | None:
    """Why ``host`` is not a routable host name, or ``None`` when it is."""
    if not isinstance(host, str) or not host:
        return "a host name must be a non-empty string"
    shown = _show(host)
    if host != host.strip() or any(c.isspace() for c in host):
        return f"host {shown} contains white space"
    if "://" in host or "/" in host:
        return f"host {shown} is not a bare host name (no scheme and no path; put paths in --path-prefix)"
    if host.startswith("[") or _is_ip(host) or _is_ip(host.rpartition(":")[0]):
        return f"host {shown} is an IP address; routes match host names only"
    if ":" in host:
        return f"host {shown} has a port; routes match the host name alone (drop ':{host.rpartition(':')[2]}')"
    if host.endswith("."):
        return f"host {shown} ends with a dot; write it without the trailing dot"
    if host != host.lower():
        return f"host {shown} has upper-case letters; host names are matched in lower case (use {_show(host.lower())})"
    if len(host) > MAX_HOSTNAME_CHARS:
        return f"host {shown} has {len(host)} characters; at most {MAX_HOSTNAME_CHARS} are allowed"
    labels = host.split(".")
    if "*" in host and not (host.startswith("*.") and "*" not in host[1:]):
        return f"host {shown}: a wildcard must be the whole first label ('*.example.com')"
    long = next((label for label in labels if len(label) > MAX_LABEL_CHARS), None)
    if long is not None:
        return f"host {shown} has a label of {len(long)} characters; at most {MAX_LABEL_CHARS} are allowed"
    if not _HOSTNAME.match(host):
        return (f"host {shown} is not a DNS name: labels of a-z, 0-9 and '-', not starting or ending with '-', "
                "separated by single dots")
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def path_prefix_problem(prefix: Any) -> str | None:
    """Why ``prefix`` is not a routable path prefix, or ``None`` when it is."""
    if not isinstance(prefix, str) or not prefix:
        return "a path prefix must be a non-empty string"
    shown = _show(prefix)
    if not prefix.startswith("/"):
        return f"path prefix {shown} must start with '/'"
    if len(prefix) > MAX_PATH_CHARS:
        return f"path prefix {shown} has {len(prefix)} characters; at most {MAX_PATH_CHARS} are allowed"
    if "?" in prefix or "#" in prefix:
        return f"path prefix {shown} contains '?' or '#'; a path prefix has no query and no fragment"
    if "//" in prefix:
        return f"path prefix {shown} contains '//' (an empty segment)"
    segments = prefix.split("/")
    if "." in segments or ".." in segments:
        return f"path prefix {shown} contains a '.' or '..' segment; write the normalised path"
    if "%2f" in prefix.lower():
        return f"path prefix {shown} contains an encoded slash (%2F)"
    if not _PATH.match(prefix):
        bad = next((c for c in prefix if not _PATH.match(c) and c != "%"), "%")
        return (f"path prefix {shown} contains {bad!r}; allowed are letters, digits, -._~!$&'()*+,;=:@/ "
                "and %XX escapes")
    return None


def route_problems(hosts: Sequence[Any], path_prefixes: Sequence[Any]) -> list[str]:
    """Every shared-rule problem of a route binding (empty when it is fine)."""
    problems = []
    if len(hosts) > MAX_HOSTS:
        problems.append(f"{len(hosts)} hosts; a deployment routes at most {MAX_HOSTS} host names")
    if len(path_prefixes) > MAX_PATH_PREFIXES:
        problems.append(f"{len(path_prefixes)} path prefixes; a deployment routes at most {MAX_PATH_PREFIXES}")
    problems += [p for p in (host_problem(h) for h in hosts) if p]
    problems += [p for p in (path_prefix_problem(p) for p in path_prefixes) if p]
    for what, values in (("host", hosts), ("path prefix", path_prefixes)):
        seen: set[Any] = set()
        for value in values:
            if value in seen:
                problems.append(f"{what} {_show(str(value))} is listed twice")
            seen.add(value)
    return problems


def invalid_route(deployment_id: str, problems: Iterable[str], *, source: str | None = None) -> InvalidRoute:
    """One :class:`InvalidRoute` for the first problem (and how many more there are)."""
    problems = list(problems)
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    by = f" for {source}" if source else ""
    return InvalidRoute(
        f"deployment {deployment_id}: {problems[0]}{more}{by}",
        hint="routes are fixed when a deployment is added: add a new deployment with valid --host / "
             "--path-prefix values (lower-case DNS names without port; normalised absolute paths)",
        deployment_id=deployment_id, problems=problems)


def check_route_values(deployment_id: str, hosts: Sequence[Any], path_prefixes: Sequence[Any]) -> None:
    """Raise :class:`InvalidRoute` unless the values meet the shared rules."""
    problems = route_problems(hosts, path_prefixes)
    if problems:
        raise invalid_route(deployment_id, problems)
