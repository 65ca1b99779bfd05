"""What only the S3 store has, against a real moto server over HTTP: URLs, the conditional
writes it relies on, the pending audit event of a writer killed mid-save, the lease object kept
with growing tokens, the requests a save sends and the reads it may skip. The rules every backend keeps are in the shipped store suite, run against every backend by the
core's tests/test_store_contract.py."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import attrs
import pytest

from greentic_core import Workload, lifecycle, mint_revision_id, traffic
from greentic_core.errors import StoreError
from greentic_core.spec import Environment, HostConfig
from greentic_core.store import StoreOptions, open_store
from greentic_store_s3.store import S3Store, parse_url

EVENT = {"actor": "test", "command": "pytest", "verb": "save", "outcome": "ok"}


def env_doc(name: str = "dev") -> Environment:
    return Environment(environment_id="dev", name=name, host_config=HostConfig(env_id="dev"), packs=())


def live_env() -> Environment:
    """``dev`` with one ready revision taking all the traffic (through the core's engines)."""
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    env, deployment = lifecycle.add_deployment(env_doc(), "shop", now=now)
    staged = lifecycle.stage_revision(env, deployment.deployment_id, revision_id=mint_revision_id(),
                                      workload=Workload(command=("true",)), now=now)
    rid = staged.revision.revision_id
    env = lifecycle.warm_revision(staged.env, rid, now=now).env
    return traffic.set_traffic_split(env, deployment.deployment_id, [(rid, 10000)], idempotency_key="k",
                                     updated_by="operator://test/pytest", now=now).env


def store(url: str) -> S3Store:
    opened = open_store(url, options=StoreOptions(actor="test", command="pytest"))
    assert isinstance(opened, S3Store)
    return opened


def test_parse_url() -> None:
    assert parse_url("s3://bucket/a/b/?region=eu-west-1") == ("bucket", "a/b/", {"region": "eu-west-1"})
    assert parse_url("s3://bucket") == ("bucket", "", {})


@pytest.mark.parametrize(("url", "message"), [
    ("s3://ab/x", "must have 3 to 63 characters"),
    ("s3://AKIA:secret@bucket/x", "carries credentials"),
    ("s3://bucket/x?profile=prod", "unknown parameter 'profile'"),
])
def test_bad_urls_are_one_line_errors_without_secrets(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as caught:
        parse_url(url)
    assert "secret" not in str(caught.value)


def test_doctor_checks_that_conditional_writes_are_enforced(s3_url: str) -> None:
    checks = {name: (ok, message) for name, ok, message in store(s3_url).doctor()}
    assert checks["reachable"][0] and checks["read"][0] and checks["write"][0]
    assert checks["conditional-writes"] == (True, "If-None-Match is enforced")


def test_init_is_idempotent(s3_url: str) -> None:
    s = store(s3_url)
    assert s.init() == {"schema_version": 1, "changed": True}
    assert s.init() == {"schema_version": 1, "changed": False}


def test_a_committed_saves_audit_event_survives_a_writer_killed_before_writing_it(
        s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s = store(s3_url)
    s.create(env_doc(), audit_event=dict(EVENT))

    def killed(*args, **kwargs):
        raise SystemExit("killed between the commit and the audit object")

    with monkeypatch.context() as patch:
        patch.setattr(S3Store, "_after_commit", killed)
        with pytest.raises(SystemExit), s.transaction("dev") as tx:
            tx.save(env_doc("saved"), audit_event={**EVENT, "verb": "lost.save"})
    fresh = store(s3_url)
    assert fresh.load("dev").name == "saved" and fresh.load("dev").generation == 2
    assert [e["verb"] for e in fresh.audit_events("dev")] == ["save"]  # not yet recovered
    with fresh.transaction("dev"):
        pass  # the next transaction recovers it
    events = fresh.audit_events("dev")
    assert [(e["verb"], e["generation_before"], e["generation_after"], e.get("recovered")) for e in events] == [
        ("save", 0, 1, None), ("lost.save", 1, 2, True)]
    with fresh.transaction("dev"):
        pass  # and only once
    assert len(fresh.audit_events("dev")) == 2


def test_a_pending_event_of_a_save_that_never_committed_is_dropped(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s = store(s3_url)
    s.create(env_doc(), audit_event=dict(EVENT))
    real_put = S3Store._put

    def put(self, key, data, **kwargs):
        if key.endswith("/environment.json"):
            raise SystemExit("killed before the commit")
        return real_put(self, key, data, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(S3Store, "_put", put)
        with pytest.raises(SystemExit), s.transaction("dev") as tx:
            tx.save(env_doc("never"), audit_event={**EVENT, "verb": "never.save"})
    with s.transaction("dev") as tx:
        assert tx.env.name == "dev" and tx.env.generation == 1
    assert [e["verb"] for e in s.audit_events("dev")] == ["save"]


def test_the_lease_object_is_kept_released_and_tokens_only_grow(s3_url: str) -> None:
    s = store(s3_url)
    s.create(env_doc(), audit_event=dict(EVENT))
    tokens = []
    for _ in range(3):
        with s.transaction("dev") as tx:
            tokens.append(tx.lease.token)
    assert tokens == [1, 2, 3]
    record = json.loads(s._get(s._key("dev", "lease.json"))[0])
    assert record["released"] is True and record["token"] == 3
    assert s.lease("dev") is None


def sent_requests(s: S3Store) -> list[str]:
    """``OPERATION key-suffix`` of every HTTP request ``s`` sends from now on."""
    sent: list[str] = []

    def record(params=None, model=None, **_) -> None:
        path = (params or {}).get("url_path", "").split("?")[0]
        sent.append(f"{model.name} {path.split('/environments/dev/')[-1]}")

    s._s3.meta.events.register("before-call.s3", record)
    return sent


def test_a_save_in_a_process_that_released_the_lease_last_sends_six_or_seven_requests(s3_url: str) -> None:
    s = store(s3_url)
    s.create(env_doc(), audit_event=dict(EVENT))
    with s.transaction("dev") as tx:
        tx.save(env_doc("first"), audit_event=dict(EVENT))
    sent = sent_requests(s)
    with s.transaction("dev") as tx:
        assert tx.env.name == "first"
        tx.save(env_doc("second"), audit_event=dict(EVENT))
    assert [line.split(" ")[0] + " " + line.split(" ")[1].split("/")[0] for line in sent] == [
        "PutObject lease.json",        # take the lease released last, If-Match: no read first
        "PutObject lease.json",        # fencing + the pending audit event, If-Match: no read first
        "PutObject backups",           # the document being replaced
        "PutObject environment.json",  # compare-and-swap, If-Match on the loaded ETag
        # (no runtime-config: the released record says none is published, and none is wanted)
        "PutObject audit",
        "PutObject lease.json"]        # release, naming the document's ETag
    assert store(s3_url).load("dev").name == "second"


def test_a_document_changed_by_another_writer_is_read_again(s3_url: str) -> None:
    a, b = store(s3_url), store(s3_url)
    a.create(env_doc(), audit_event=dict(EVENT))
    with a.transaction("dev") as tx:
        tx.save(env_doc("by-a"), audit_event=dict(EVENT))
    with b.transaction("dev") as tx:
        tx.save(env_doc("by-b"), audit_event=dict(EVENT))
    with a.transaction("dev") as tx:  # a's released record was replaced: a reads the document
        assert tx.env.name == "by-b" and tx.env.generation == 3
        tx.save(env_doc("by-a-again"), audit_event=dict(EVENT))
    assert [e["generation_after"] for e in b.audit_events("dev")] == [1, 2, 3, 4]


def test_a_document_replaced_by_store_migrate_force_is_read_again(s3_url: str) -> None:
    a, b = store(s3_url), store(s3_url)
    a.create(env_doc(), audit_event=dict(EVENT))
    with a.transaction("dev") as tx:
        tx.save(env_doc("before-migrate"), audit_event=dict(EVENT))
    snapshot = b.export("dev")
    replaced = snapshot.document.replace(b'"before-migrate"', b'"migrated"')
    b.import_snapshot(attrs.evolve(snapshot, document=replaced), replace=True)
    with a.transaction("dev") as tx:  # the import rewrote the lease record: a's copy is not trusted
        assert tx.env.name == "migrated"
        tx.save(env_doc("after"), audit_event=dict(EVENT))
    assert b.load("dev").name == "after"


def test_old_backups_are_deleted_in_batches_and_only_the_newest_are_shown(s3_url: str) -> None:
    from greentic_store_s3.store import PRUNE_EVERY

    s = open_store(s3_url, options=StoreOptions(actor="test", command="pytest", max_backups=2))
    s.create(env_doc(), audit_event=dict(EVENT))
    for n in range(PRUNE_EVERY + 3):
        with s.transaction("dev") as tx:
            tx.save(env_doc(f"n{n}"), audit_event=dict(EVENT))
            stored = s._keys(s._key("dev", "backups/"))
            assert len(stored) <= 2 + PRUNE_EVERY  # bounded, if by a little more than max_backups
    assert [g for g, _ in s.backups("dev")] == [PRUNE_EVERY + 2, PRUNE_EVERY + 3]
    assert len(s._keys(s._key("dev", "backups/"))) < PRUNE_EVERY + 3  # the batch delete ran


def test_the_runtime_config_is_written_only_when_it_differs_from_the_one_the_release_named(
        s3_url: str) -> None:
    live = live_env()  # a revision with weight: a runtime-config
    s = store(s3_url)
    s.create(live, audit_event=dict(EVENT))
    with s.transaction("dev") as tx:  # the first lease names nothing: written
        tx.save(live, audit_event=dict(EVENT))
    published = s._read_runtime_config("dev")
    assert published is not None
    other = store(s3_url)  # another process
    sent = sent_requests(other)
    with other.transaction("dev") as tx:  # the same config: not written again
        tx.save(attrs.evolve(live, name="renamed"), audit_event=dict(EVENT))
    assert not any("runtime-config" in line for line in sent) and len(sent) == 8  # 6 + the lease's and document's GETs
    with other.transaction("dev") as tx:  # nothing live any more: removed
        tx.save(attrs.evolve(env_doc("dev"), host_config=live.host_config), audit_event=dict(EVENT))
    assert s.load_runtime_config("dev") is None and "DeleteObject runtime-config.json" in sent
    # store migrate --force puts a runtime-config back without the lease: the next save that
    # wants none removes it again (the import made the released record name nothing)
    s.import_snapshot(attrs.evolve(s.export("dev"), runtime_config=published), replace=True)
    assert s._read_runtime_config("dev") == published
    with other.transaction("dev") as tx:
        tx.save(tx.env, audit_event=dict(EVENT))
    assert s._read_runtime_config("dev") is None
