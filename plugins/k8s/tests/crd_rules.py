"""Validate an object against a CustomResourceDefinition as an API server would: its OpenAPI v3
schema (JSON Schema) after defaulting, then every ``x-kubernetes-validations`` CEL rule at its
place, evaluated with cel-python. Test-side code only; pure (the CRD is read by the caller).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import yaml

CRD_DIR = Path(__file__).parent / "data" / "gateway-api"
HTTPROUTE_CRD = CRD_DIR / "httproutes-v1.6.1-standard.yaml"


def load_schema(path: Path = HTTPROUTE_CRD, version: str = "v1") -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def with_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` with the schema's ``default``s filled in where a property is missing (API server defaulting)."""
    value = copy.deepcopy(value)
    _default(value, schema)
    return value


def _default(value: Any, schema: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _default(value[key], sub)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default(item, schema["items"])


def _rules(value: Any, schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
    for rule in schema.get("x-kubernetes-validations") or ():
        yield path, rule, value
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                yield from _rules(value[key], sub, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _rules(item, schema["items"], f"{path}[{index}]")


class CrdValidator:
    """Schema and CEL checks of one CRD version; :meth:`problems` lists what an API server would refuse."""

    def __init__(self, schema: dict[str, Any]) -> None:
        import celpy
        import jsonschema

        self.schema = schema
        self._jsonschema = jsonschema.Draft7Validator(schema)
        self._env = celpy.Environment()
        self._programs: dict[str, Any] = {}
        self._celpy = celpy

    def _program(self, rule: str) -> Any:
        if rule not in self._programs:
            self._programs[rule] = self._env.program(self._env.compile(rule))
        return self._programs[rule]

    def rule_count(self, obj: dict[str, Any]) -> int:
        return sum(1 for _ in _rules(with_defaults(obj, self.schema), self.schema, "$"))

    def problems(self, obj: dict[str, Any]) -> list[str]:
        obj = with_defaults(obj, self.schema)
        out = [f"schema: {'.'.join(map(str, e.absolute_path))}: {e.message}"
               for e in self._jsonschema.iter_errors(obj)]
        for path, rule, value in _rules(obj, self.schema, "$"):
            if "oldSelf" in rule["rule"]:
                continue  # a transition rule: there is no old object on create
            result = self._program(rule["rule"]).evaluate({"self": self._celpy.json_to_cel(value)})
            if isinstance(result, Exception) or not bool(result):
                out.append(f"cel: {path}: {rule.get('message', rule['rule'])}"
                           + (f" ({result})" if isinstance(result, Exception) else ""))
        return out
