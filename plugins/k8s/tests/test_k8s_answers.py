"""The answers: schema, parsed form, defaults (including the namespace derived from the env id)."""

from __future__ import annotations

import pytest

from greentic_core import InvalidAnswers
from greentic_k8s.answers import ANSWERS_SCHEMA, DEFAULT_RESOURCES, Answers
from greentic_k8s.render import namespace_for_env

from k8s_world import KIND


def test_only_the_gateway_name_is_required_and_defaults_are_sensible():
    parsed = Answers.parse({"gateway_name": "public"})
    assert parsed.field_manager == "greentic-deployer"
    assert parsed.warm_timeout_seconds == 300
    assert parsed.resources == DEFAULT_RESOURCES
    assert parsed.kubeconfig is None and parsed.context is None
    assert parsed.namespace_for("shop") == "gt-shop"
    assert parsed.gateway_namespace_for("shop") == "gt-shop"


def test_unknown_key_is_refused_with_its_name():
    with pytest.raises(InvalidAnswers, match="unknown key.*'namepsace'"):
        Answers.parse({"gateway_name": "public", "namepsace": "shop"})


@pytest.mark.parametrize("bad", [
    {},  # gateway_name missing
    {"gateway_name": "Public_GW"},  # not DNS-1123
    {"gateway_name": "gw", "namespace": "Shop"},
    {"gateway_name": "gw", "replicas": 0},
    {"gateway_name": "gw", "replicas": "2"},
    {"gateway_name": "gw", "warm_timeout_seconds": 0},
    {"gateway_name": "gw", "resources": {"requests": {"cpu": "lots"}}},
    {"gateway_name": "gw", "resources": {"requests": {"gpu": "1"}}},
    {"gateway_name": "gw", "field_manager": ""},
])
def test_malformed_answers_are_refused(bad):
    with pytest.raises(InvalidAnswers):
        Answers.parse(bad)


def test_quantities_are_kept_as_strings_as_the_api_server_returns_them():
    parsed = Answers.parse({"gateway_name": "gw", "resources": {"requests": {"cpu": 1, "memory": "64Mi"}}})
    assert parsed.resources == {"requests": {"cpu": "1", "memory": "64Mi"}}


def test_explicit_namespaces_win():
    parsed = Answers.parse({"gateway_name": "gw", "namespace": "team-a", "gateway_namespace": "edge"})
    assert parsed.namespace_for("shop") == "team-a"
    assert parsed.gateway_namespace_for("shop") == "edge"


@pytest.mark.parametrize("env_id, expected", [
    ("shop", "gt-shop"),
    ("prod-eu-1", "gt-prod-eu-1"),
])
def test_clean_env_ids_give_readable_namespaces(env_id, expected):
    assert namespace_for_env(env_id) == expected


@pytest.mark.parametrize("env_id", ["Prod", "prod_eu", "a.b", "-x", "x" * 70, "___", "UPPER.case_mix"])
def test_other_env_ids_give_valid_distinct_namespaces(env_id):
    import re

    name = namespace_for_env(env_id)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    assert name != namespace_for_env(env_id.lower() + "-")  # a hash keeps near-collisions apart
    assert namespace_for_env(env_id) == name  # deterministic


def test_case_variants_of_an_env_id_do_not_share_a_namespace():
    assert namespace_for_env("Prod") != namespace_for_env("prod")


def test_the_core_checks_the_same_schema_when_binding(registry, answers):
    with pytest.raises(InvalidAnswers, match="replicas"):
        registry.bind(KIND, {**answers, "replicas": -1})
    with pytest.raises(InvalidAnswers):
        registry.bind(KIND, {**answers, "surprise": True})


def test_every_property_is_described():
    for name, spec in ANSWERS_SCHEMA["properties"].items():
        assert spec.get("description"), name
    assert ANSWERS_SCHEMA["additionalProperties"] is False


def test_the_readme_documents_every_answer():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in ANSWERS_SCHEMA["properties"]:
        assert f"| `{name}` |" in readme, name


@pytest.mark.parametrize("bad", [
    {"requests": {"cpu": -1}},  # a number escapes the schema's pattern: the API server answers 422
    {"requests": {"cpu": -0.5}},
    {"limits": {"memory": "-1Gi"}},
])
def test_negative_quantities_are_refused_before_any_call(bad):
    with pytest.raises(InvalidAnswers, match="resources"):
        Answers.parse({"gateway_name": "gw", "resources": bad})


def test_numbers_become_quantity_strings_without_an_exponent():
    parsed = Answers.parse({"gateway_name": "gw", "resources": {"requests": {"cpu": 0.00001, "memory": 1e9}}})
    assert parsed.resources == {"requests": {"cpu": "0.00001", "memory": "1000000000"}}


@pytest.mark.parametrize("section", ["https", "listener.example.com", "a" * 253])
def test_gateway_section_is_a_dns_subdomain_up_to_253_characters(section):
    assert Answers.parse({"gateway_name": "gw", "gateway_section": section}).gateway_section == section


@pytest.mark.parametrize("section", ["HTTPS", "a" * 254, "", "-x"])
def test_gateway_section_outside_the_crd_rules_is_refused(section):
    with pytest.raises(InvalidAnswers, match="gateway_section"):
        Answers.parse({"gateway_name": "gw", "gateway_section": section})
