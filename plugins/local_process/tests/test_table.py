"""The router table: parsing rules, routing rules and smooth weighted round-robin. Pure, no I/O."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greentic_local_process.table import (
    Backend,
    SmoothWeightedRoundRobin,
    TableError,
    normalize_host,
    parse_table,
)


def dep(deployment_id: str, backends: list[tuple[str, int, str | None]] | None = None, *,
        hosts: list[str] | None = None, path_prefixes: list[str] | None = None) -> dict[str, Any]:
    if backends is None:
        backends = [(f"{deployment_id}-r1", 10000, "127.0.0.1:40001")]
    return {"deployment_id": deployment_id, "bundle_id": f"b-{deployment_id}", "split_generation": 3,
            "hosts": hosts or [], "path_prefixes": path_prefixes or [],
            "backends": [{"revision_id": r, "weight_bps": w, "address": a} for r, w, a in backends]}


def table(*deployments: dict[str, Any], generation: int = 7) -> dict[str, Any]:
    return {"generation": generation, "env_id": "dev", "listen": "127.0.0.1:8080", "deployments": list(deployments)}


EXAMPLE = table(dep("d1", [("r-a", 9000, "127.0.0.1:41234"), ("r-b", 1000, None)],
                    hosts=["a.local"], path_prefixes=["/api"]))


# --------------------------------------------------------------------------- parsing


def test_parses_the_documented_shape() -> None:
    t = parse_table(EXAMPLE)
    assert (t.generation, t.env_id, t.listen, t.listen_address) == (7, "dev", "127.0.0.1:8080", ("127.0.0.1", 8080))
    (d,) = t.deployments
    assert (d.deployment_id, d.bundle_id, d.split_generation) == ("d1", "b-d1", 3)
    assert d.hosts == ("a.local",) and d.path_prefixes == ("/api",)
    assert d.backends == (Backend("r-a", 9000, "127.0.0.1:41234"), Backend("r-b", 1000, None))
    assert (d.backends[0].host, d.backends[0].port) == ("127.0.0.1", 41234)
    assert d.weights == {"r-a": 9000, "r-b": 1000}


def test_optional_fields_default_and_unknown_keys_are_ignored() -> None:
    t = parse_table({"generation": 0, "env_id": "e", "listen": "[::1]:0", "future": 1,
                     "deployments": [{"deployment_id": "d", "backends": [], "extra": True}]})
    (d,) = t.deployments
    assert (d.bundle_id, d.split_generation, d.hosts, d.path_prefixes, d.backends) == (None, 0, (), (), ())
    assert t.listen_address == ("::1", 0)


def test_hosts_and_prefixes_are_normalised() -> None:
    t = parse_table(table(dep("d", hosts=["A.Local:8080", "a.local", "b.local."], path_prefixes=["/api/", "/x"])))
    assert t.deployments[0].hosts == ("a.local", "b.local")
    assert t.deployments[0].path_prefixes == ("/api", "/x")
    assert parse_table(table(dep("d", path_prefixes=["/", "/api"]))).deployments[0].path_prefixes == ()


def test_weights_may_sum_to_zero_when_no_split_is_set() -> None:
    t = parse_table(table(dep("d", [("r1", 0, "127.0.0.1:1"), ("r2", 0, None)])))
    assert t.deployments[0].routable_backends == ()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda t: t.pop("generation"), "table.generation: required"),
    (lambda t: t.update(generation=-1), "table.generation: must be >= 0"),
    (lambda t: t.update(generation=True), "table.generation: expected an integer"),
    (lambda t: t.update(env_id=""), "table.env_id: expected a non-empty string"),
    (lambda t: t.update(listen="localhost"), "table.listen: expected 'host:port'"),
    (lambda t: t.update(listen="127.0.0.1:99999"), "port must be 0..65535"),
    (lambda t: t.update(deployments={}), "table.deployments: expected a list"),
    (lambda t: t["deployments"][0].update(deployment_id=None), "deployment_id: expected a non-empty string"),
    (lambda t: t["deployments"][0]["backends"][0].update(weight_bps=9999), "weights sum to 10999, expected 10000"),
    (lambda t: t["deployments"][0]["backends"][0].update(weight_bps=10001), "must be 0..10000"),
    (lambda t: t["deployments"][0]["backends"][0].update(weight_bps="9000"), "expected an integer"),
    (lambda t: t["deployments"][0]["backends"][0].update(address="nowhere"), "address: expected 'host:port'"),
    (lambda t: t["deployments"][0]["backends"][0].update(address="127.0.0.1:0"), "port 0 is not an address"),
    (lambda t: t["deployments"][0]["backends"][1].update(revision_id="r-a"), "revision r-a is listed twice"),
    (lambda t: t["deployments"][0].update(path_prefixes=["api"]), "must start with '/'"),
    (lambda t: t["deployments"][0].update(hosts="a.local"), "hosts: expected a list of strings"),
    (lambda t: t["deployments"].append(copy.deepcopy(t["deployments"][0])), "deployment d1 is listed twice"),
    (lambda t: t["deployments"].append(dep("d2", [("r-a", 10000, None)])), "revision r-a appears in deployments d1 and d2"),
])
def test_malformed_tables_are_refused_with_the_field_named(mutate: Any, message: str) -> None:
    data = copy.deepcopy(EXAMPLE)
    mutate(data)
    with pytest.raises(TableError) as info:
        parse_table(data)
    assert message in str(info.value)


def test_a_non_object_is_refused() -> None:
    with pytest.raises(TableError, match="expected a JSON object"):
        parse_table([])


def test_enforced_weights_renormalise_over_running_revisions() -> None:
    d = parse_table(table(dep("d", [("a", 5000, "127.0.0.1:1"), ("b", 3000, "127.0.0.1:2"),
                                    ("c", 2000, None)]))).deployments[0]
    assert d.enforced_weights() == {"a": 6250, "b": 3750, "c": 0}
    d = parse_table(table(dep("d", [("a", 3333, "127.0.0.1:1"), ("b", 3333, "127.0.0.1:2"),
                                    ("c", 3334, "127.0.0.1:3")]))).deployments[0]
    assert d.enforced_weights() == {"a": 3333, "b": 3333, "c": 3334}
    d = parse_table(table(dep("d", [("a", 1, "127.0.0.1:1"), ("b", 1, "127.0.0.1:2"), ("c", 9998, None)]))).deployments[0]
    assert d.enforced_weights() == {"a": 5000, "b": 5000, "c": 0}
    d = parse_table(table(dep("d", [("a", 10000, None)]))).deployments[0]
    assert d.enforced_weights() == {"a": 0}


# --------------------------------------------------------------------------- routing


ROUTED = parse_table(table(
    dep("host-a", hosts=["a.local"]),
    dep("host-a-api", hosts=["a.local"], path_prefixes=["/api"]),
    dep("api", path_prefixes=["/api"]),
    dep("api-v2", path_prefixes=["/api/v2"]),
    dep("ipv6", hosts=["[::1]"]),
))


@pytest.mark.parametrize(("host", "path", "expected"), [
    ("a.local", "/", "host-a"),
    ("A.LOCAL:8080", "/anything", "host-a"),
    ("a.local.", "/", "host-a"),
    ("a.local", "/api", "host-a-api"),
    ("a.local", "/api/v2/x", "host-a-api"),  # host-specific beats a longer catch-all prefix
    ("a.local", "/apix", "host-a"),
    ("b.local", "/api", "api"),
    ("b.local", "/api/", "api"),
    ("b.local", "/api?q=1", "api"),
    ("b.local", "/api/v2", "api-v2"),  # the longest prefix wins
    ("b.local", "/api/v2/items?x", "api-v2"),
    ("b.local", "/api/v20", "api"),  # segment boundary
    ("b.local", "/apix", None),
    (None, "/api/x", "api"),
    ("[::1]:8080", "/", "ipv6"),
    ("b.local", "/", None),
])
def test_route_prefers_host_then_longest_prefix_at_segment_boundaries(host: str | None, path: str,
                                                                       expected: str | None) -> None:
    found = ROUTED.route(host, path)
    assert (found.deployment_id if found else None) == expected


def test_one_deployment_takes_everything() -> None:
    t = parse_table(table(dep("only", hosts=["a.local"], path_prefixes=["/api"])))
    assert t.route("elsewhere", "/other").deployment_id == "only"
    assert t.route(None, "/").deployment_id == "only"


def test_no_deployment_routes_nothing() -> None:
    assert parse_table(table()).route("a", "/") is None


def test_exact_ties_go_to_the_first_listed_and_are_reported() -> None:
    t = parse_table(table(dep("first"), dep("second")))
    assert t.route("x", "/").deployment_id == "first"
    assert len(t.warnings) == 1 and "first wins" in t.warnings[0]
    assert parse_table(table(dep("a", hosts=["a"]), dep("b", hosts=["b"]))).warnings == ()


def test_normalize_host() -> None:
    assert normalize_host("Example.COM:443") == "example.com"
    assert normalize_host("[::1]:80") == "[::1]"
    assert normalize_host("example.com") == "example.com"


# --------------------------------------------------------------------------- smooth weighted round-robin


def backends(*weights: int, address: str | None = "127.0.0.1:1") -> list[Backend]:
    return [Backend(f"r{i}", w, address) for i, w in enumerate(weights)]


def picks(balancer: SmoothWeightedRoundRobin, n: int) -> list[str]:
    out = []
    for _ in range(n):
        backend = balancer.pick()
        assert backend is not None
        out.append(backend.revision_id)
    return out


def test_9000_1000_gives_exactly_1800_200_over_2000_picks_interleaved() -> None:
    seq = picks(SmoothWeightedRoundRobin(backends(9000, 1000)), 2000)
    assert Counter(seq) == {"r0": 1800, "r1": 200}
    assert seq[:10] == ["r0"] * 5 + ["r1"] + ["r0"] * 4  # one cycle: the light one sits in the middle
    assert "r1,r1" not in ",".join(seq)  # smooth: never two light picks in a row
    assert max(len(run) for run in "".join("A" if s == "r0" else "B" for s in seq).split("B")) <= 9


def test_matches_nginx_reference_sequence() -> None:
    # nginx's documented example: weights a=5, b=1, c=1 -> a a b a c a a
    seq = picks(SmoothWeightedRoundRobin(backends(5, 1, 1)), 14)
    assert seq == ["r0", "r0", "r1", "r0", "r2", "r0", "r0"] * 2


def test_zero_weight_and_stopped_revisions_get_nothing() -> None:
    members = [Backend("zero", 0, "127.0.0.1:1"), Backend("stopped", 6000, None), Backend("live", 4000, "127.0.0.1:2")]
    balancer = SmoothWeightedRoundRobin(members)
    assert [m.revision_id for m in balancer.members] == ["live"]
    assert set(picks(balancer, 50)) == {"live"}
    empty = SmoothWeightedRoundRobin([Backend("stopped", 10000, None)])
    assert empty.pick() is None and empty.pick_index() == -1 and len(empty) == 0


@pytest.mark.parametrize("weights", [(9000, 1000), (5, 1, 1), (3333, 3333, 3334), (1, 9999), (2500,) * 4])
def test_precomputed_schedule_equals_the_live_algorithm(weights: tuple[int, ...]) -> None:
    fast = SmoothWeightedRoundRobin(backends(*weights), precompute=True)
    live = SmoothWeightedRoundRobin(backends(*weights), precompute=False)
    assert picks(fast, 25000) == picks(live, 25000)


def test_pick_excluding_spreads_over_the_others() -> None:
    balancer = SmoothWeightedRoundRobin(backends(5000, 3000, 2000))
    failed = balancer.members[0]
    seq = [balancer.pick_excluding(failed).revision_id for _ in range(50)]
    assert Counter(seq) == {"r1": 30, "r2": 20}
    lonely = SmoothWeightedRoundRobin(backends(10000))
    assert lonely.pick_excluding(lonely.members[0]) is None


weight_lists = st.lists(st.integers(0, 10000), min_size=0, max_size=7).map(
    lambda cuts: [b - a for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), 10000])])


@settings(max_examples=60, deadline=None)
@given(weight_lists)
def test_any_split_is_exact_over_10000_picks(weights: list[int]) -> None:
    assert sum(weights) == 10000
    balancer = SmoothWeightedRoundRobin(backends(*weights))
    counts = Counter(picks(balancer, 10000))
    assert {f"r{i}": w for i, w in enumerate(weights) if w} == dict(counts)


@settings(max_examples=30, deadline=None)
@given(weight_lists, st.integers(0, 20000))
def test_any_window_of_10000_consecutive_picks_is_exact(weights: list[int], offset: int) -> None:
    balancer = SmoothWeightedRoundRobin(backends(*weights))
    for _ in range(offset):
        balancer.pick_index()
    counts = Counter(picks(balancer, 10000))
    assert {f"r{i}": w for i, w in enumerate(weights) if w} == dict(counts)
