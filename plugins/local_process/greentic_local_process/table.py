"""The router table: what the router serves, parsed and precomputed. Pure code, no I/O.

The provider writes ``router-table.json`` (atomically) and the router parses it with
:func:`parse_table`::

    {"generation": 7, "env_id": "dev", "listen": "127.0.0.1:8080",
     "deployments": [{"deployment_id": "...", "bundle_id": "...", "split_generation": 3,
                      "hosts": ["a.local"], "path_prefixes": ["/api"],
                      "backends": [{"revision_id": "...", "weight_bps": 9000,
                                    "address": "127.0.0.1:41234"}]}]}

Rules (each violation is a :class:`TableError` naming the field):

* ``generation`` and ``split_generation`` are integers >= 0 (``split_generation``, ``bundle_id``,
  ``hosts`` and ``path_prefixes`` may be left out); unknown keys are ignored.
* ``listen`` and every non-null ``address`` are ``host:port`` (``[v6]:port`` for IPv6).
* ``deployment_id`` is unique in the table and ``revision_id`` unique across the whole table
  (the router keys its counters by revision).
* A deployment's weights are integers 0..10000 that sum to exactly 10000, or to 0 (no split
  yet: the deployment matches but answers 503).
* ``address`` null means the revision is not running: it gets no traffic, and the remaining
  routable backends share the traffic in proportion to their weights.
* ``addresses`` (optional, a list of ``host:port``): the revision's replicas. The router
  balances within the revision (round-robin, in the revision's share); a refused connection is
  retried on another replica or revision. When given, ``address`` is its first element.

Routing (:meth:`RouterTable.route`): hosts compare case-insensitively without the port; a
path prefix matches at a segment boundary (``/api`` matches ``/api``, ``/api/x`` and
``/api?q``, not ``/apix``; a trailing ``/`` in the table is ignored, so ``/`` means "any path").
A deployment matches when its hosts are empty or contain the host, and its prefixes are empty
or one of them matches. Among matches a host-specific deployment wins over a catch-all one,
then the longest prefix, then the earlier deployment in the table (such exact ties are listed
in :attr:`RouterTable.warnings`). An environment with exactly one deployment routes everything
to it.

Balancing: :class:`SmoothWeightedRoundRobin` is nginx's smooth weighted round-robin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "TOTAL_BPS",
    "Backend",
    "Deployment",
    "RouterTable",
    "SmoothWeightedRoundRobin",
    "TableError",
    "normalize_host",
    "normalize_prefix",
    "parse_address",
    "parse_table",
]

TOTAL_BPS = 10000


class TableError(ValueError):
    """The router table is malformed; the message names the offending field."""


# --------------------------------------------------------------------------- helpers


def parse_address(value: str, where: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ``("127.0.0.1", 8080)``; ``"[::1]:80"`` -> ``("::1", 80)``."""
    if not isinstance(value, str) or not value:
        raise TableError(f"{where}: expected 'host:port', got {value!r}")
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1 : end + 2] != ":":
            raise TableError(f"{where}: expected '[ipv6]:port', got {value!r}")
        host, port_text = value[1:end], value[end + 2 :]
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or ":" in host:
            raise TableError(f"{where}: expected 'host:port', got {value!r}")
    if not host:
        raise TableError(f"{where}: missing host in {value!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise TableError(f"{where}: port must be 0..65535 in {value!r}")
    return host, int(port_text)


def normalize_host(host: str) -> str:
    """A Host header (or table host) without port, lowercase, without a trailing dot."""
    if host.startswith("["):
        end = host.find("]")
        host = host[: end + 1] if end >= 0 else host
    else:
        host = host.partition(":")[0]
    return host.rstrip(".").lower()


def normalize_prefix(prefix: str) -> str:
    """``"/api/"`` -> ``"/api"``; ``"/"`` -> ``""`` (matches every path)."""
    return prefix.rstrip("/")


def _int(data: Mapping[str, Any], key: str, where: str, *, default: int | None = None) -> int:
    if key not in data or data[key] is None:
        if default is None:
            raise TableError(f"{where}.{key}: required")
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TableError(f"{where}.{key}: expected an integer, got {value!r}")
    if value < 0:
        raise TableError(f"{where}.{key}: must be >= 0, got {value}")
    return value


def _str(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TableError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value


def _str_list(data: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TableError(f"{where}.{key}: expected a list of strings, got {value!r}")
    return value


# --------------------------------------------------------------------------- model


@attrs.frozen
class Backend:
    """One revision of a deployment: its weight and where it listens (None: not running)."""

    revision_id: str
    weight_bps: int
    address: str | None = None
    host: str | None = attrs.field(default=None, eq=False, repr=False)
    port: int | None = attrs.field(default=None, eq=False, repr=False)
    addresses: tuple[str, ...] = attrs.field(default=(), eq=False)  # every replica (address: the first)

    @property
    def routable(self) -> bool:
        return self.weight_bps > 0 and self.address is not None


@attrs.frozen
class Deployment:
    deployment_id: str
    backends: tuple[Backend, ...]
    bundle_id: str | None = None
    split_generation: int = 0
    hosts: tuple[str, ...] = ()
    path_prefixes: tuple[str, ...] = ()

    @property
    def routable_backends(self) -> tuple[Backend, ...]:
        return tuple(b for b in self.backends if b.routable)

    @property
    def weights(self) -> dict[str, int]:
        return {b.revision_id: b.weight_bps for b in self.backends}

    def enforced_weights(self) -> dict[str, int]:
        """Basis points each revision really gets: routable backends renormalised to 10000.

        Largest-remainder rounding keeps the sum at exactly 10000 (or 0 when nothing is routable).
        """
        routable = self.routable_backends
        total = sum(b.weight_bps for b in routable)
        result = {b.revision_id: 0 for b in self.backends}
        if total == 0:
            return result
        shares = [(b, b.weight_bps * TOTAL_BPS / total) for b in routable]
        floors = {b.revision_id: int(math.floor(s)) for b, s in shares}
        left = TOTAL_BPS - sum(floors.values())
        by_remainder = sorted(shares, key=lambda bs: (-(bs[1] - math.floor(bs[1])), bs[0].revision_id))
        for b, _ in by_remainder[:left]:
            floors[b.revision_id] += 1
        result.update(floors)
        return result


_Entry = tuple[str, Deployment]  # (normalized prefix, deployment), longest prefix first


def _sorted_entries(entries: list[tuple[str, int, Deployment]]) -> tuple[_Entry, ...]:
    entries.sort(key=lambda e: (-len(e[0]), e[1]))
    return tuple((prefix, dep) for prefix, _, dep in entries)


def _first_match(entries: tuple[_Entry, ...], path: str) -> Deployment | None:
    for prefix, dep in entries:
        if not prefix:
            return dep
        if path.startswith(prefix):
            n = len(prefix)
            if len(path) == n or path[n] in "/?":
                return dep
    return None


@attrs.frozen
class RouterTable:
    generation: int
    env_id: str
    listen: str
    deployments: tuple[Deployment, ...]
    warnings: tuple[str, ...] = attrs.field(default=(), eq=False)
    _single: Deployment | None = attrs.field(init=False, eq=False, repr=False)
    _by_host: dict[str, tuple[_Entry, ...]] = attrs.field(init=False, eq=False, repr=False)
    _catch_all: tuple[_Entry, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        by_host: dict[str, list[tuple[str, int, Deployment]]] = {}
        catch_all: list[tuple[str, int, Deployment]] = []
        for index, dep in enumerate(self.deployments):
            prefixes = dep.path_prefixes or ("",)
            targets = [by_host.setdefault(h, []) for h in dep.hosts] if dep.hosts else [catch_all]
            for target in targets:
                for prefix in prefixes:
                    target.append((prefix, index, dep))
        object.__setattr__(self, "_single", self.deployments[0] if len(self.deployments) == 1 else None)
        object.__setattr__(self, "_by_host", {h: _sorted_entries(e) for h, e in by_host.items()})
        object.__setattr__(self, "_catch_all", _sorted_entries(catch_all))

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_address(self.listen, "listen")

    def deployment(self, deployment_id: str) -> Deployment | None:
        for dep in self.deployments:
            if dep.deployment_id == deployment_id:
                return dep
        return None

    def route(self, host: str | None, path: str) -> Deployment | None:
        """The deployment serving ``host`` (a Host header, port allowed) and ``path``.

        ``path`` may carry a query string. None when nothing matches.
        """
        if self._single is not None:
            return self._single
        if host and self._by_host:
            entries = self._by_host.get(normalize_host(host))
            if entries is not None:
                found = _first_match(entries, path)
                if found is not None:
                    return found
        return _first_match(self._catch_all, path)


# --------------------------------------------------------------------------- parsing


def _parse_backend(data: Any, where: str) -> Backend:
    if not isinstance(data, Mapping):
        raise TableError(f"{where}: expected an object, got {data!r}")
    revision_id = _str(data, "revision_id", where)
    weight = _int(data, "weight_bps", where)
    if weight > TOTAL_BPS:
        raise TableError(f"{where}.weight_bps: must be 0..{TOTAL_BPS}, got {weight}")
    address = data.get("address")
    addresses = data.get("addresses")
    if addresses is not None:
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise TableError(f"{where}.addresses: expected a list of 'host:port', got {addresses!r}")
        if len(set(addresses)) != len(addresses):
            raise TableError(f"{where}.addresses: an address is listed twice in {addresses!r}")
        address = addresses[0] if addresses else None
    if address is None:
        return Backend(revision_id, weight, None)
    for one in addresses or [address]:
        _, port_of = parse_address(one, f"{where}.address")
        if port_of == 0:
            raise TableError(f"{where}.address: port 0 is not an address, got {one!r}")
    host, port = parse_address(address, f"{where}.address")
    return Backend(revision_id, weight, address, host, port, tuple(addresses or [address]))


def _parse_deployment(data: Any, where: str) -> Deployment:
    if not isinstance(data, Mapping):
        raise TableError(f"{where}: expected an object, got {data!r}")
    deployment_id = _str(data, "deployment_id", where)
    where = f"deployment {deployment_id}"
    bundle_id = data.get("bundle_id")
    if bundle_id is not None and not isinstance(bundle_id, str):
        raise TableError(f"{where}.bundle_id: expected a string or null, got {bundle_id!r}")
    split_generation = _int(data, "split_generation", where, default=0)
    hosts: list[str] = []
    for raw in _str_list(data, "hosts", where):
        host = normalize_host(raw.strip())
        if not host:
            raise TableError(f"{where}.hosts: empty host in {raw!r}")
        if host not in hosts:
            hosts.append(host)
    prefixes: list[str] = []
    for raw in _str_list(data, "path_prefixes", where):
        if not raw.startswith("/") or "?" in raw or "#" in raw:
            raise TableError(f"{where}.path_prefixes: {raw!r} must start with '/' and hold no '?' or '#'")
        prefix = normalize_prefix(raw)
        if prefix not in prefixes:
            prefixes.append(prefix)
    if "" in prefixes:  # "/" matches every path: same as no prefix at all
        prefixes = []
    raw_backends = data.get("backends")
    if raw_backends is None:
        raw_backends = []
    if not isinstance(raw_backends, list):
        raise TableError(f"{where}.backends: expected a list, got {raw_backends!r}")
    backends = tuple(_parse_backend(b, f"{where}.backends[{i}]") for i, b in enumerate(raw_backends))
    seen: set[str] = set()
    for b in backends:
        if b.revision_id in seen:
            raise TableError(f"{where}.backends: revision {b.revision_id} is listed twice")
        seen.add(b.revision_id)
    total = sum(b.weight_bps for b in backends)
    if total not in (0, TOTAL_BPS):
        raise TableError(f"{where}.backends: weights sum to {total}, expected {TOTAL_BPS} (or 0: no split)")
    return Deployment(
        deployment_id=deployment_id, backends=backends, bundle_id=bundle_id,
        split_generation=split_generation, hosts=tuple(hosts), path_prefixes=tuple(prefixes),
    )


def parse_table(data: Any) -> RouterTable:
    """Validate and precompute a router table from its JSON object (see the module docstring)."""
    if not isinstance(data, Mapping):
        raise TableError(f"router table: expected a JSON object, got {type(data).__name__}")
    generation = _int(data, "generation", "table")
    env_id = _str(data, "env_id", "table")
    listen = _str(data, "listen", "table")
    parse_address(listen, "table.listen")
    raw = data.get("deployments")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise TableError(f"table.deployments: expected a list, got {raw!r}")
    deployments = tuple(_parse_deployment(d, f"table.deployments[{i}]") for i, d in enumerate(raw))
    seen_deployments: set[str] = set()
    owner: dict[str, str] = {}
    for dep in deployments:
        if dep.deployment_id in seen_deployments:
            raise TableError(f"table.deployments: deployment {dep.deployment_id} is listed twice")
        seen_deployments.add(dep.deployment_id)
        for b in dep.backends:
            if b.revision_id in owner:
                raise TableError(f"table.deployments: revision {b.revision_id} appears in deployments "
                                 f"{owner[b.revision_id]} and {dep.deployment_id}")
            owner[b.revision_id] = dep.deployment_id
    return RouterTable(generation=generation, env_id=env_id, listen=listen,
                       deployments=deployments, warnings=tuple(_ambiguities(deployments)))


def _ambiguities(deployments: Sequence[Deployment]) -> list[str]:
    if len(deployments) < 2:
        return []
    claims: dict[tuple[str, str], str] = {}
    found = []
    for dep in deployments:
        for host in dep.hosts or ("*",):
            for prefix in dep.path_prefixes or ("",):
                key = (host, prefix)
                if key in claims:
                    found.append(f"deployments {claims[key]} and {dep.deployment_id} both claim host "
                                 f"{host} path {prefix or '/'}: {claims[key]} wins (listed first)")
                else:
                    claims[key] = dep.deployment_id
    return found


# --------------------------------------------------------------------------- balancing


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round-robin over the routable backends (weight > 0 and an address).

    Each pick adds every weight to that backend's current value, takes the largest current value
    (the first one on a tie) and subtracts the total weight from it. Over any ``total / gcd``
    consecutive picks every backend is chosen exactly ``weight / gcd`` times, and the choices are
    interleaved (9000/1000 gives ``A A A A A B A A A A`` ... never 1800 A in a row).

    The sequence is periodic, so it is computed once per table (when small enough) and each pick
    is then an index step; scaling all weights by their gcd does not change the sequence.
    """

    PRECOMPUTE_LIMIT = 250_000  # period * members above this: run the algorithm live instead

    __slots__ = ("members", "_weights", "_total", "_current", "_schedule", "_pos", "_excluding")

    def __init__(self, backends: Sequence[Backend], *, precompute: bool | None = None) -> None:
        self.members: tuple[Backend, ...] = tuple(b for b in backends if b.routable)
        divisor = 0
        for b in self.members:
            divisor = math.gcd(divisor, b.weight_bps)
        self._weights = [b.weight_bps // divisor for b in self.members] if divisor else []
        self._total = sum(self._weights)
        self._current = [0] * len(self._weights)
        self._pos = 0
        self._excluding: dict[int, SmoothWeightedRoundRobin] = {}
        self._schedule: list[int] | None = None
        if precompute is None:
            precompute = self._total * len(self._weights) <= self.PRECOMPUTE_LIMIT
        if precompute and self.members:
            self._schedule = [self._step() for _ in range(self._total)]
            self._current = [0] * len(self._weights)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def period(self) -> int:
        return self._total

    def _step(self) -> int:
        current = self._current
        weights = self._weights
        best = 0
        best_value = None
        for i, w in enumerate(weights):
            value = current[i] + w
            current[i] = value
            if best_value is None or value > best_value:
                best, best_value = i, value
        current[best] -= self._total
        return best

    def pick_index(self) -> int:
        """Index into :attr:`members` of the next pick; -1 when nothing is routable."""
        schedule = self._schedule
        if schedule is not None:
            pos = self._pos
            self._pos = pos + 1 if pos + 1 < len(schedule) else 0
            return schedule[pos]
        if not self._weights:
            return -1
        return self._step()

    def pick(self) -> Backend | None:
        index = self.pick_index()
        return self.members[index] if index >= 0 else None

    def pick_excluding(self, backend: Backend) -> Backend | None:
        """A pick among the other members (for a retry after ``backend`` failed), or None."""
        try:
            index = self.members.index(backend)
        except ValueError:
            return self.pick()
        other = self._excluding.get(index)
        if other is None:
            other = SmoothWeightedRoundRobin(self.members[:index] + self.members[index + 1 :])
            self._excluding[index] = other
        return other.pick()

    def pick_index_excluding(self, index: int) -> int:
        """Like :meth:`pick_excluding` but by member index; -1 when no other member exists."""
        backend = self.pick_excluding(self.members[index])
        return -1 if backend is None else self.members.index(backend)
