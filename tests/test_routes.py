"""Route values: the shared rules, the provider's rules (``greentic_validate_routes``), and when they run.

The shared rules are pure and checked exhaustively on hostile values plus generated ones; the
CLI tests use the recording deployer (a real installed distribution) whose route rules refuse
``*.forbidden.test``, and prove that a refused route changes nothing: no provider verb is
called, the environment's generation and audit log stay as they were.
"""

from __future__ import annotations

import json
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greentic_core import DeployerError, InvalidRoute
from greentic_core.routes import HOSTNAME_PATTERN, PATH_PATTERN, host_problem, path_prefix_problem, route_problems
from test_cli import Deployer, backend_name, gd, plugin_site, shop  # noqa: F401  (fixtures)

HOSTILE_HOSTS = [
    ("Shop.Example.com", "upper-case"),
    ("shop.example.com:8080", "has a port"),
    ("10.0.0.1", "IP address"),
    ("10.0.0.1:80", "IP address"),
    ("[::1]", "IP address"),
    ("::1", "IP address"),
    ("shop.example.com.", "ends with a dot"),
    ("shop..example.com", "not a DNS name"),
    ("-shop.example.com", "not a DNS name"),
    ("shop_1.example.com", "not a DNS name"),
    ("a.*.example.com", "wildcard"),
    ("*example.com", "wildcard"),
    ("https://shop.example.com", "not a bare host name"),
    ("shop.example.com/api", "not a bare host name"),
    (" shop.example.com", "white space"),
    ("a" * 64 + ".example.com", "label of 64"),
    (".".join(["a" * 63] * 4) + ".com", "at most 253"),
    ("", "non-empty"),
]

HOSTILE_PATHS = [
    ("api", "must start with '/'"),
    ("/a//b", "'//'"),
    ("/a/./b", "'.' or '..' segment"),
    ("/a/../b", "'.' or '..' segment"),
    ("/a/..", "'.' or '..' segment"),
    ("/a/.", "'.' or '..' segment"),
    ("/a%2fb", "encoded slash"),
    ("/a%2Fb", "encoded slash"),
    ("/a#frag", "'#'"),
    ("/a?x=1", "'?'"),
    ("/a b", "contains ' '"),
    ("/caf\u00e9", "contains"),
    ("/a%zz", "%XX"),
    ("/" + "a" * 1024, "at most 1024"),
]


@pytest.mark.parametrize(("host", "why"), HOSTILE_HOSTS)
def test_hostile_hosts_are_refused_with_the_reason(host: str, why: str) -> None:
    problem = host_problem(host)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize(("prefix", "why"), HOSTILE_PATHS)
def test_hostile_path_prefixes_are_refused_with_the_reason(prefix: str, why: str) -> None:
    problem = path_prefix_problem(prefix)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize("host", ["shop.example.com", "*.example.com", "localhost", "a-1.b-2.example",
                                  "xn--bcher-kva.example", ".".join(["a" * 63] * 3) + ".abc"])
def test_dns_names_are_accepted(host: str) -> None:
    assert host_problem(host) is None


@pytest.mark.parametrize("prefix", ["/", "/api", "/api/", "/a.b/c..d/.e", "/~user/%41;x=1@:,!$&'()*+"])
def test_normalised_paths_are_accepted(prefix: str) -> None:
    assert path_prefix_problem(prefix) is None


def test_duplicates_are_refused() -> None:
    assert route_problems(["a.example", "a.example"], ["/x", "/x"]) == [
        "host 'a.example' is listed twice", "path prefix '/x' is listed twice"]


_LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


@given(st.lists(_LABEL, min_size=1, max_size=5), st.booleans())
def test_generated_dns_names_are_accepted_unless_they_are_ip_addresses(labels: list[str], wildcard: bool) -> None:
    host = ("*." if wildcard else "") + ".".join(labels)
    problem = host_problem(host)
    if len(host) > 253:
        assert problem is not None and "at most 253" in problem
    elif re.fullmatch(r"[0-9.]+", host) and problem is not None:
        assert "IP address" in problem
    else:
        assert problem is None, problem


@given(st.text(max_size=40))
def test_every_accepted_host_matches_the_gateway_api_pattern_and_has_no_upper_case(host: str) -> None:
    if host_problem(host) is None:
        assert re.match(HOSTNAME_PATTERN, host) and len(host) <= 253 and host == host.lower()


@given(st.text(alphabet=string.printable + "\u00e9", max_size=60))
def test_every_accepted_path_meets_the_gateway_api_cel_rules(prefix: str) -> None:
    if path_prefix_problem(prefix) is None:
        # the HTTPRoute CRD's x-kubernetes-validations for PathPrefix values
        assert prefix.startswith("/") and re.match(PATH_PATTERN, prefix) and len(prefix) <= 1024
        for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
            assert bad not in prefix
        assert not prefix.endswith("/..") and not prefix.endswith("/.")


def test_invalid_route_is_a_deployer_error() -> None:
    assert issubclass(InvalidRoute, DeployerError)
    assert InvalidRoute.exit_code == 2 and InvalidRoute.kind == "validation"


# --------------------------------------------------------------------------- when the rules run


def _snapshot(gd: Deployer) -> tuple[int, int]:
    env = json.loads((gd.env_dir() / "environment.json").read_text())
    return env.get("generation", 0), len(gd.audit())


def test_deployment_add_refuses_a_shared_rule_before_the_store_or_provider(gd: Deployer) -> None:
    gd.init()
    before = _snapshot(gd)
    doc = gd.error("deployment", "add", "dev", "web", "--host", "Web.Example.com", code=2, kind="validation")
    assert doc["error"] == "InvalidRoute" and "upper-case" in doc["message"]
    assert _snapshot(gd) == before
    assert gd.calls() == []


def test_deployment_add_asks_the_provider_rules_before_recording(gd: Deployer) -> None:
    gd.init()
    before = _snapshot(gd)
    doc = gd.error("deployment", "add", "dev", "web", "--host", "web.forbidden.test", code=2, kind="validation")
    assert "refuses *.forbidden.test" in doc["message"] and "test.deployer.recording" in doc["message"]
    assert _snapshot(gd) == before
    assert gd.calls() == []
    assert gd.json("deployment", "add", "dev", "web", "--host", "web.example.com")["ok"]


def test_stage_warm_and_traffic_recheck_routes_recorded_earlier(shop: Deployer) -> None:
    rid = shop.ready()
    shop.json("traffic", "set", "dev", "shop", f"{rid}=10000")
    shop.fail("validate_routes")  # the provider's rules became stricter since the deployment was added
    before = _snapshot(shop)
    calls = len(shop.calls())
    for args in (("revision", "stage", "dev", "shop"), ("revision", "stage", "dev", "shop", "--record-only"),
                 ("revision", "warm", "dev", rid), ("traffic", "set", "dev", "shop", f"{rid}=10000"),
                 ("traffic", "set", "dev", "shop", f"{rid}=10000", "--record-only")):
        doc = shop.error(*args, code=2, kind="validation")
        assert "refuses every route" in doc["message"], doc
    assert _snapshot(shop) == before
    assert shop.calls()[calls:] == []  # no verb reached the provider
    doctor = shop.json("env", "doctor", "dev", code=1)
    assert {c["name"]: c["status"] for c in doctor["checks"]}["routes"] == "fail"


def test_env_render_prints_the_providers_dry_run(shop: Deployer) -> None:
    other = shop.add("cart")
    doc = shop.json("env", "render", "dev")
    assert [o["bundle_id"] for o in doc["objects"]] == ["shop", "cart"]
    doc = shop.json("env", "render", "dev", "cart")
    assert [o["deployment_id"] for o in doc["objects"]] == [other]
    as_yaml = shop.run("env", "render", "dev", "cart", json_mode=False).stdout
    assert as_yaml.startswith("kind: RecordedRoute\n") and other in as_yaml
    as_json = json.loads(shop.run("env", "render", "dev", "--format", "json", json_mode=False).stdout)
    assert len(as_json) == 2
    shop.error("env", "render", "dev", "nothing", code=4, kind="not_found")
