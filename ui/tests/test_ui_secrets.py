"""Secrets never reach a page or an API answer.

A deployer whose ``api_key`` answer is secret (the local-process descriptor with that key
marked secret, and a provider that quotes the key in its error, as a careless plugin would),
a workload with a password in its environment, and a rollout whose webhook has a signing
secret and credentials in its URL: every page and every API answer of the dashboard is read,
and none holds any of the secrets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from pathlib import Path
from typing import Any

import attrs
import pytest

from greentic_core.errors import ProviderError
from greentic_core.spec import Workload

from ui_helpers import SAMPLE_APP, TOKEN, LocalEnv

API_KEY = "sk-live-0123456789-very-secret"
DB_PASSWORD = "hunter2-workload-password"
WEBHOOK_SECRET = "whsec-notify-signing-secret"
URL_PASSWORD = "url-password-in-webhook"
SECRETS = (API_KEY, DB_PASSWORD, WEBHOOK_SECRET, URL_PASSWORD)


class SecretMarkingRegistry:
    """The real registry, but the deployer's ``api_key`` answer is secret and binding it fails
    with an error that quotes the key."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def record(self, name: str) -> Any:
        record = self._registry.record(name)
        descriptor = attrs.evolve(record.descriptor, secret_answers=(*record.descriptor.secret_answers, "api_key"))
        return attrs.evolve(record, descriptor=descriptor)

    def records(self) -> list[Any]:
        return self._registry.records()

    def bind(self, kind: Any, answers: Any, state_dir: Any = None) -> Any:
        raise ProviderError(f"the provider API refused the key {answers.get('api_key')}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)


@pytest.fixture
def vault(tmp_path: Path) -> LocalEnv:
    env = LocalEnv(tmp_path, "vault")
    env.op.add_deployment(env.env_id, "web")
    rid = env.op.stage(env.env_id, "web", record_only=True, drain_seconds=1,
                       workload=Workload(command=SAMPLE_APP, env={"DB_PASSWORD": DB_PASSWORD})).revision.revision_id
    env.op.warm(env.env_id, rid, record_only=True)
    env.op.traffic_set(env.env_id, "web", [(rid, 10_000)], record_only=True)
    answers = json.loads(env.store.read_attachment(env.env_id, "env-packs/deployer/answers.json"))
    env.store.write_attachment(env.env_id, "env-packs/deployer/answers.json",
                               json.dumps({**answers, "api_key": API_KEY}).encode())
    did = env.deployment_id("web")
    from greentic_core import rollout

    env.store.write_attachment(env.env_id, rollout.attachment_name(did), json.dumps({
        "schema": "greentic.rollout.v1", "env_id": env.env_id, "deployment_id": did, "bundle_id": "web",
        "phase": "paused", "reason": "paused by tester", "baseline": [[rid, 10_000]], "target": [[rid, 10_000]],
        "canary": [], "steps": [{"index": 0, "fraction_bps": 10_000, "weights": [[rid, 10_000]],
                                 "pause_seconds": 5, "analysis": None}],
        "notify": [{"url": f"https://bot:{URL_PASSWORD}@hooks.example.com/greentic?sig={URL_PASSWORD}",
                    "secret": WEBHOOK_SECRET}],
    }).encode())
    env.rid, env.did = rid, did
    return env


def test_no_page_and_no_api_answer_holds_a_secret(vault: LocalEnv) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from greentic_core.registry import Registry
    from greentic_core.store import Store
    from greentic_ui.app import make_app
    from greentic_ui.backend import Backend

    backend = Backend(lambda: Store(vault.home / "environments"), SecretMarkingRegistry(Registry(use_cache=False)),
                      actor="ui:tester", allow_actions=True)
    paths = ["/", "/env/vault", "/env/vault/history", f"/env/vault/rollout/{vault.did}", "/plugins",
             "/api/environments", "/api/environments/vault", "/api/environments/vault/history",
             f"/api/environments/vault/rollouts/{vault.did}", "/api/plugins"]

    async def read_all() -> dict[str, str]:
        client = TestClient(TestServer(make_app(backend, token=TOKEN, allow_actions=True)))
        await client.start_server()
        try:
            answers = {}
            for path in paths:
                response = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
                assert response.status == 200, (path, await response.text())
                answers[path] = await response.text()
            return answers
        finally:
            await client.close()

    try:
        # in a thread of its own: Playwright's sync API (other modules) keeps a loop in this one
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answers = pool.submit(lambda: asyncio.run(read_all())).result(60)
    finally:
        backend.close()
    for path, text in answers.items():
        for secret in SECRETS:
            assert secret not in text, (path, secret)
    env = json.loads(answers["/api/environments/vault"])["environment"]
    assert env["answers"]["api_key"] == "***"  # shown as redacted, not hidden
    assert "the provider API refused the key ***" in env["observation"]["error"]  # scrubbed, not dropped
    assert env["revisions"][0]["workload"]["env_keys"] == ["DB_PASSWORD"]  # the name, never the value
    notify = json.loads(answers[f"/api/environments/vault/rollouts/{vault.did}"])["rollout"].get("notify")
    if notify:  # a core that records webhooks shows them redacted
        assert notify[0]["secret"] == "***" and "hooks.example.com" in notify[0]["url"]
