"""The OpenAPI 3.0 document of the dashboard's JSON API (served at ``/api/openapi.json``).

The pages are built from the same functions as these answers, so a script or another
dashboard reads exactly what a person sees. ``ui/tests/test_api_openapi.py`` checks every
answer of the running server against this document (schemathesis).
"""

from __future__ import annotations

from typing import Any

STRING_OR_NULL = {"type": "string", "nullable": True}
INT_OR_NULL = {"type": "integer", "nullable": True}

ERROR = {
    "type": "object",
    "required": ["ok", "kind", "message"],
    "properties": {"ok": {"type": "boolean", "enum": [False]}, "kind": {"type": "string"},
                   "message": {"type": "string"}, "hint": {"type": "string"}},
}

LEASE = {
    "type": "object", "nullable": True,
    "required": ["holder", "pid", "command", "acquired"],
    "properties": {"holder": {"type": "string"}, "pid": {"type": "integer"}, "command": {"type": "string"},
                   "acquired": {"type": "string"}, "expires": STRING_OR_NULL},
}

HEALTH = {
    "type": "object", "required": ["state", "message"],
    "properties": {"state": {"type": "string", "enum": ["healthy", "degraded", "unknown"]},
                   "message": {"type": "string"}, "serving": {"type": "integer"}, "ready": {"type": "integer"}},
}

ENVIRONMENT_SUMMARY = {
    "type": "object",
    "required": ["environment_id", "name", "deployer", "generation", "deployments", "revisions", "lifecycles",
                 "rollouts", "health", "lease", "error"],
    "properties": {
        "environment_id": {"type": "string"}, "name": {"type": "string"}, "deployer": STRING_OR_NULL,
        "generation": INT_OR_NULL, "deployments": {"type": "integer"}, "revisions": {"type": "integer"},
        "lifecycles": {"type": "object", "additionalProperties": {"type": "integer"}},
        "rollouts": {"type": "array", "items": {
            "type": "object", "required": ["deployment_id", "bundle_id", "phase", "passed_steps", "steps"],
            "properties": {"deployment_id": {"type": "string"}, "bundle_id": {"type": "string"},
                           "phase": {"type": "string"}, "passed_steps": {"type": "integer"},
                           "steps": {"type": "integer"}}}},
        "health": HEALTH, "lease": LEASE, "error": STRING_OR_NULL,
    },
}

OBSERVED_REVISION = {
    "type": "object", "nullable": True, "required": ["present", "serving"],
    "properties": {"present": {"type": "boolean"}, "serving": {"type": "boolean"},
                   "ready_replicas": INT_OR_NULL, "desired_replicas": INT_OR_NULL, "detail": {"type": "string"},
                   "restarts": {"type": "object", "nullable": True}},
}

REVISION = {
    "type": "object",
    "required": ["revision_id", "deployment_id", "bundle_id", "sequence", "lifecycle", "name", "created_at",
                 "staged_at", "warmed_at", "drain_seconds", "weight_bps", "workload", "observed"],
    "properties": {
        "revision_id": {"type": "string"}, "deployment_id": {"type": "string"}, "bundle_id": {"type": "string"},
        "sequence": {"type": "integer"},
        "lifecycle": {"type": "string", "enum": ["inactive", "staged", "warming", "ready", "draining", "failed",
                                                 "archived"]},
        "name": STRING_OR_NULL, "created_at": {"type": "string"}, "staged_at": STRING_OR_NULL,
        "warmed_at": STRING_OR_NULL, "drain_seconds": {"type": "integer"}, "weight_bps": INT_OR_NULL,
        "workload": {"type": "object", "nullable": True, "properties": {
            "image": STRING_OR_NULL, "command": {"type": "array", "nullable": True, "items": {"type": "string"}},
            "port": {"type": "integer"}, "health_path": {"type": "string"}, "replicas": {"type": "integer"},
            "working_dir": STRING_OR_NULL,
            "env_keys": {"type": "array", "items": {"type": "string"},
                         "description": "names of the workload's variables; their values are never shown"}}},
        "observed": OBSERVED_REVISION,
    },
}

WEIGHT_ENTRY = {"type": "object", "required": ["revision_id", "weight_bps"],
                "properties": {"revision_id": {"type": "string"},
                               "weight_bps": {"type": "integer", "minimum": 0, "maximum": 10000},
                               "name": STRING_OR_NULL}}

DEPLOYMENT = {
    "type": "object",
    "required": ["deployment_id", "bundle_id", "status", "hosts", "path_prefixes", "split", "observed", "drift",
                 "rollout", "revision_ids"],
    "properties": {
        "deployment_id": {"type": "string"}, "bundle_id": {"type": "string"}, "status": {"type": "string"},
        "hosts": {"type": "array", "items": {"type": "string"}},
        "path_prefixes": {"type": "array", "items": {"type": "string"}},
        "split": {"type": "object", "nullable": True,
                  "required": ["generation", "updated_at", "updated_by", "rollback_depth", "entries"],
                  "properties": {"generation": {"type": "integer"}, "updated_at": {"type": "string"},
                                 "updated_by": {"type": "string"}, "rollback_depth": {"type": "integer"},
                                 "entries": {"type": "array", "items": WEIGHT_ENTRY}}},
        "observed": {"type": "object", "nullable": True, "required": ["weights"],
                     "properties": {"weights": {"type": "object", "additionalProperties": {"type": "integer"}},
                                    "generation": INT_OR_NULL, "detail": {"type": "string"}}},
        "drift": {"type": "boolean", "nullable": True,
                  "description": "true when the provider enforces other weights than recorded; null when unknown"},
        "rollout": {"type": "object", "nullable": True},
        "revision_ids": {"type": "array", "items": {"type": "string"}},
    },
}

ENVIRONMENT = {
    "type": "object",
    "required": ["environment_id", "name", "generation", "deployer", "listen_addr", "answers", "lease", "store",
                 "health", "observation", "deployments", "revisions", "runtime_config"],
    "properties": {
        "environment_id": {"type": "string"}, "name": {"type": "string"}, "generation": {"type": "integer"},
        "deployer": STRING_OR_NULL, "listen_addr": STRING_OR_NULL,
        "answers": {"type": "object", "description": "the deployer answers, secret ones replaced by ***"},
        "lease": LEASE, "store": {"type": "string"}, "health": HEALTH,
        "observation": {"type": "object", "required": ["ok"],
                        "properties": {"ok": {"type": "boolean"}, "error": STRING_OR_NULL, "at": STRING_OR_NULL}},
        "deployments": {"type": "array", "items": DEPLOYMENT},
        "revisions": {"type": "array", "items": REVISION},
        "runtime_config": {"type": "object", "nullable": True},
    },
}

ROLLOUT = {
    "type": "object",
    "required": ["env_id", "deployment_id", "bundle_id", "phase", "baseline", "target", "steps", "passed_steps",
                 "analyses", "current_split", "timeline", "next_due_at", "labels"],
    "properties": {
        "env_id": {"type": "string"}, "deployment_id": {"type": "string"}, "bundle_id": {"type": "string"},
        "phase": {"type": "string"}, "reason": {"type": "string"},
        "baseline": {"type": "array", "items": {"type": "array"}}, "target": {"type": "array", "items": {"type": "array"}},
        "current_split": {"type": "array", "items": {"type": "array"}},
        "steps": {"type": "array", "items": {"type": "object"}}, "passed_steps": {"type": "integer"},
        "current_step": {"type": "integer"}, "analyses": {"type": "array", "items": {"type": "object"}},
        "driver": {"type": "object", "nullable": True}, "driver_alive": {"type": "boolean"},
        "notify": {"description": "the notify configuration with its secrets redacted"},
        "next_due_at": STRING_OR_NULL,
        "timeline": {"type": "array", "items": {
            "type": "object", "required": ["index", "number", "state", "weights"],
            "properties": {"index": {"type": "integer"}, "number": {"type": "integer"},
                           "state": {"type": "string",
                                     "enum": ["passed", "current", "failed", "inconclusive", "pending"]},
                           "weights": {"type": "array"}, "result": {"type": "object", "nullable": True}}}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

HISTORY = {
    "type": "object",
    "required": ["ok", "environment_id", "total", "events", "actors", "verbs", "outcomes"],
    "properties": {
        "ok": {"type": "boolean"}, "environment_id": {"type": "string"}, "total": {"type": "integer"},
        "events": {"type": "array", "items": {"type": "object", "properties": {
            "time": {"type": "string"}, "actor": {"type": "string"}, "command": {"type": "string"},
            "verb": {"type": "string"}, "outcome": {"type": "string"}}}},
        "actors": {"type": "array", "items": {"type": "string"}},
        "verbs": {"type": "array", "items": {"type": "string"}},
        "outcomes": {"type": "array", "items": {"type": "string"}},
    },
}

PLUGINS = {
    "type": "object", "required": ["ok", "deployers", "stores"],
    "properties": {
        "ok": {"type": "boolean"},
        "deployers": {"type": "array", "items": {"type": "object", "required": ["name", "status"],
                                                  "properties": {"name": {"type": "string"},
                                                                 "status": {"type": "string"},
                                                                 "distribution": STRING_OR_NULL,
                                                                 "version": STRING_OR_NULL,
                                                                 "reason": STRING_OR_NULL}}},
        "stores": {"type": "array", "items": {"type": "object"}},
    },
}

SPLIT_CHANGE = {
    "type": "object", "required": ["ok", "changed", "generation", "split", "provider"],
    "properties": {"ok": {"type": "boolean"}, "changed": {"type": "boolean"}, "generation": {"type": "integer"},
                   "split": {"type": "object"}, "provider": {"type": "object"}},
}


def _ok(schema: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    if key is None:
        return schema
    return {"type": "object", "required": ["ok", key], "properties": {"ok": {"type": "boolean"}, key: schema}}


def _responses(ok: dict[str, Any], *codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}}}
    texts = {400: "invalid input", 401: "no or wrong token", 403: "actions off, or CSRF / origin refused",
             404: "environment, deployment, revision or rollout not found",
             409: "refused by a lifecycle, traffic or rollout rule, or the lease is held",
             415: "the body is not application/json", 421: "not a loopback Host header",
             500: "plugin error", 502: "the provider failed", 503: "the store failed", 504: "the provider timed out"}
    for code in (401, 421, *codes):
        out[str(code)] = {"description": texts[code], "content": {"application/json": {"schema": ERROR}}}
    return out


#: an environment id: ASCII letters, digits, '.', '-', '_'; not '.' or '..' (a directory name)
ENV_ID_PATTERN = r"^([A-Za-z0-9_-][A-Za-z0-9._-]*|\.[A-Za-z0-9_-][A-Za-z0-9._-]*|\.\.[A-Za-z0-9._-]+)$"
ENV_PARAM = {"name": "env", "in": "path", "required": True, "schema": {"type": "string", "pattern": ENV_ID_PATTERN}}
DEP_PARAM = {"name": "deployment", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "deployment id, unique prefix or bundle id"}
ACTION_BODY = {"action_id": {"type": "string", "description": "echoed in the progress events of /api/events"}}
READ_ERRORS = (400, 404, 409, 500, 502, 503, 504)
ACTION_ERRORS = (400, 403, 404, 409, 415, 500, 502, 503, 504)


def _action(summary: str, body: dict[str, Any], ok: dict[str, Any], params: list[dict[str, Any]],
            required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": {**body, **ACTION_BODY}}
    if required:
        schema["required"] = required
    return {"post": {"summary": summary, "parameters": params,
                     "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
                     "responses": _responses(ok, *ACTION_ERRORS)}}


def openapi_document(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "greentic-deployer dashboard API", "version": version,
                 "description": "What `greentic-deployer ui` shows, as JSON. Authenticate with "
                                "`Authorization: Bearer TOKEN` (the token printed at start). Actions need "
                                "--allow-actions; with the session cookie they also need X-CSRF-Token."},
        "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
                       "schemas": {"Error": ERROR, "Environment": ENVIRONMENT, "Rollout": ROLLOUT}},
        "security": [{"token": []}],
        "paths": {
            "/api/environments": {"get": {"summary": "Environments with deployer, generation, health and rollouts",
                                          "responses": _responses(_ok({"type": "array", "items": ENVIRONMENT_SUMMARY},
                                                                      "environments"), 500, 503)}},
            "/api/environments/{env}": {"get": {"summary": "One environment: splits (recorded and observed), "
                                                           "revisions, runtime config",
                                                "parameters": [ENV_PARAM],
                                                "responses": _responses(_ok(ENVIRONMENT, "environment"),
                                                                        *READ_ERRORS)}},
            "/api/environments/{env}/history": {"get": {
                "summary": "The audit log, newest first, filtered",
                "parameters": [ENV_PARAM,
                               {"name": "actor", "in": "query", "schema": {"type": "string"}},
                               {"name": "verb", "in": "query", "schema": {"type": "string"},
                                "description": "events whose verb starts with this (traffic, revision.warm)"},
                               {"name": "outcome", "in": "query", "schema": {"type": "string"}},
                               {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}],
                "responses": _responses(HISTORY, *READ_ERRORS)}},
            "/api/environments/{env}/runtime-config": {"get": {
                "summary": "The published runtime config (null when nothing is live)",
                "parameters": [ENV_PARAM],
                "responses": _responses(_ok({"type": "object", "nullable": True}, "runtime_config"), *READ_ERRORS)}},
            "/api/environments/{env}/rollouts/{deployment}": {"get": {
                "summary": "A canary rollout: steps, current step, analyses, next due time",
                "parameters": [ENV_PARAM, DEP_PARAM],
                "responses": _responses(_ok(ROLLOUT, "rollout"), *READ_ERRORS)}},
            "/api/plugins": {"get": {"summary": "Installed deployer and store plugins with their status",
                                     "responses": _responses(PLUGINS, 500)}},
            "/api/events": {"get": {
                "summary": "Server-Sent Events: `change` when an environment changes, `progress` of actions",
                "parameters": [{"name": "env", "in": "query", "schema": {"type": "string"},
                                "description": "only this environment's changes"}],
                "responses": {"200": {"description": "an event stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              "401": {"description": "no or wrong token",
                                      "content": {"application/json": {"schema": ERROR}}}}}},
            "/api/environments/{env}/deployments/{deployment}/traffic": _action(
                "Set the split (basis points, total 10000)",
                {"weights": {"type": "object", "minProperties": 1,
                             "description": "revision (id, unique prefix or `latest`) -> basis points; the "
                                            "weights must total exactly 10000 (else 400)",
                             "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 10000}}},
                SPLIT_CHANGE, [ENV_PARAM, DEP_PARAM], ["weights"]),
            "/api/environments/{env}/deployments/{deployment}/rollback": _action(
                "Restore the split as it was STEPS changes ago", {"steps": {"type": "integer", "minimum": 1}},
                SPLIT_CHANGE, [ENV_PARAM, DEP_PARAM]),
            "/api/environments/{env}/deployments/{deployment}/rollout/{action}": _action(
                "Pause, resume, abort or promote the deployment's rollout", {"reason": {"type": "string"}},
                {"type": "object", "required": ["ok", "phase"],
                 "properties": {"ok": {"type": "boolean"}, "phase": {"type": "string"},
                                "reason": {"type": "string"}, "passed_steps": {"type": "integer"},
                                "steps": {"type": "integer"}}},
                [ENV_PARAM, DEP_PARAM, {"name": "action", "in": "path", "required": True,
                                        "schema": {"type": "string", "enum": ["pause", "resume", "abort", "promote"]}}]),
            "/api/environments/{env}/revisions/{revision}/{action}": _action(
                "Drain or archive a revision", {},
                {"type": "object", "required": ["ok", "revision_id", "from", "lifecycle"],
                 "properties": {"ok": {"type": "boolean"}, "revision_id": {"type": "string"},
                                "from": {"type": "string"}, "lifecycle": {"type": "string"},
                                "generation": {"type": "integer"}, "provider": {"type": "object"}}},
                [ENV_PARAM, {"name": "revision", "in": "path", "required": True, "schema": {"type": "string"}},
                 {"name": "action", "in": "path", "required": True,
                  "schema": {"type": "string", "enum": ["drain", "archive"]}}]),
        },
    }
