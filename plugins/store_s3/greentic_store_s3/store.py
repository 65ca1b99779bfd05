"""The S3 store backend (URL ``s3://bucket[/prefix][?endpoint_url=...&region=...]``).

Built on :class:`greentic_core.store.leased.LeasedStore`; S3's conditional writes are the
primitives. Layout under ``s3://bucket/prefix/``::

    environments/<env>/environment.json      the document, byte for byte (metadata: generation)
    environments/<env>/runtime-config.json   the projection; absent when nothing is live
    environments/<env>/lease.json            the lease (kept after release, marked released,
                                             so fencing tokens only ever grow)
    environments/<env>/audit/<generation>-<time>-<random>.json   one object per event
    environments/<env>/pending-audit.json    the audit event of a save in progress
    environments/<env>/backups/<generation>.json                 the newest max_backups kept
    environments/<env>/attachments/<name>    the deployer answers

* **lease**: created with ``If-None-Match: *``; renewed, released or taken over (once expired)
  with ``If-Match: <etag>``, so two writers can never both win it;
* **save** (compare-and-swap): ``PutObject`` of ``environment.json`` with ``If-Match`` on the
  ETag this command loaded, so a writer whose lease expired and was taken over cannot
  overwrite the newer document (S3 answers 412 and nothing changes);
* **audit**: S3 has no multi-object transaction, so the save's event is first written to
  ``pending-audit.json``, then the document is committed, then the event is written as its own
  object; a writer killed in between leaves the pending event, and the next transaction writes
  it (``"recovered": true``) when the document carries its generation.

Credentials come from the normal AWS chain only (environment, profile, instance role); the URL
carries none. Lease times use this host's clock; ``store doctor`` compares it with S3's.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from greentic_core import codec
from greentic_core.errors import EnvironmentExists, StoreError
from greentic_core.store import LeaseInfo, LeaseLost, SaveConflict, Snapshot, StoreOptions, redact_url
from greentic_core.store.leased import LeasedStore, Stored

_QUERY = {"endpoint_url", "region"}
SCHEMA_VERSION = 1
MARKER = "greentic-store.json"


def open_store(url: str, options: StoreOptions) -> S3Store:
    """The ``greentic.stores`` entry point for ``s3://`` URLs."""
    return S3Store(url, options)


class _Precondition(Exception):
    """S3 refused a conditional write (412 PreconditionFailed / 409 ConditionalRequestConflict)."""


def parse_url(url: str) -> tuple[str, str, dict[str, str]]:
    """``(bucket, prefix ending in '/' or '', {endpoint_url, region})``; pure."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise StoreError(f"store URL {redact_url(url)} must look like s3://bucket/prefix",
                         hint="e.g. s3://team-greentic/prod?region=eu-west-1")
    if "@" in parts.netloc:
        raise StoreError(f"store URL {redact_url(url)} carries credentials; an S3 store takes them from the "
                         "AWS chain only", hint="remove them from the URL; use AWS_PROFILE or the environment")
    bucket = parts.netloc
    if not 3 <= len(bucket) <= 63:
        raise StoreError(f"bucket name {bucket!r} must have 3 to 63 characters")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - _QUERY)
    if unknown:
        raise StoreError(f"store URL {redact_url(url)}: unknown parameter {unknown[0]!r}",
                         hint="s3:// URLs take endpoint_url and region")
    prefix = parts.path.strip("/")
    return bucket, (prefix + "/") if prefix else "", query


class S3Store(LeasedStore):
    scheme = "s3"
    lease_expires = True
    lease_poll_max = 0.25  # every attempt is a GET: S3 bills (and rate-limits) requests

    def __init__(self, url: str, options: StoreOptions) -> None:
        self._url = url
        self.bucket, self.prefix, query = parse_url(url)
        self.options = options
        #: (env_id, token) -> (lease record, ETag) as this process last wrote it
        self._held: dict[tuple[str, int], tuple[dict[str, Any], str]] = {}
        import boto3
        from botocore.config import Config

        self._s3 = boto3.client("s3", endpoint_url=query.get("endpoint_url") or None,
                                region_name=query.get("region") or None,
                                config=Config(retries={"mode": "standard", "max_attempts": 4},
                                              connect_timeout=10, read_timeout=30))

    @property
    def url(self) -> str:
        return redact_url(self._url)

    # ----------------------------------------------------------------- object helpers

    def _key(self, env_id: str, name: str) -> str:
        return f"{self.prefix}environments/{env_id}/{name}"

    @contextlib.contextmanager
    def _errors(self, action: str):
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            yield
        except NoCredentialsError:
            raise StoreError(f"cannot {action} {self.url}: no AWS credentials found",
                             hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise StoreError(f"cannot {action} {self.url}: {error.get('Code', '?')}: {error.get('Message', '')}".strip(),
                             hint="check the bucket, its region and your permissions with "
                                  "`greentic-deployer store doctor`") from None
        except BotoCoreError as exc:
            raise StoreError(f"cannot {action} {self.url}: {' '.join(str(exc).split())}",
                             hint="check endpoint_url and the network with `greentic-deployer store doctor`") from None

    def _get(self, key: str) -> tuple[bytes, str, dict[str, str]] | None:
        from botocore.exceptions import ClientError

        try:
            answer = self._s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return answer["Body"].read(), answer["ETag"], answer.get("Metadata", {})

    def _put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False,
             metadata: dict[str, str] | None = None) -> str:
        from botocore.exceptions import ClientError

        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": data}
        if if_match is not None:
            args["IfMatch"] = if_match
        if if_none_match:
            args["IfNoneMatch"] = "*"
        if metadata:
            args["Metadata"] = metadata
        try:
            return self._s3.put_object(**args)["ETag"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise _Precondition() from None
            raise

    def _delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=key)

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    # ----------------------------------------------------------------- administration

    def init(self) -> dict[str, Any]:
        with self._errors("initialise"):
            try:
                self._put(f"{self.prefix}{MARKER}", json.dumps({"schema_version": SCHEMA_VERSION}).encode(),
                          if_none_match=True)
                changed = True
            except _Precondition:
                changed = False
        return {"schema_version": SCHEMA_VERSION, "changed": changed}

    def doctor(self) -> list[tuple[str, bool, str]]:
        checks: list[tuple[str, bool, str]] = []
        try:
            with self._errors("reach"):
                answer = self._s3.head_bucket(Bucket=self.bucket)
        except StoreError as exc:
            return [("reachable", False, exc.message)]
        checks.append(("reachable", True, f"bucket {self.bucket}"))
        try:
            with self._errors("list"):
                count = len(self._list_ids())
            checks.append(("read", True, f"{count} environment(s)"))
        except StoreError as exc:
            checks.append(("read", False, exc.message))
        probe = f"{self.prefix}.greentic-doctor-{secrets.token_hex(4)}"
        try:
            with self._errors("write to"):
                self._put(probe, b"probe", if_none_match=True)
                try:
                    self._put(probe, b"probe", if_none_match=True)
                    conditional = False
                except _Precondition:
                    conditional = True
                self._delete(probe)
            checks.append(("write", True, "can write and delete objects"))
            checks.append(("conditional-writes", conditional, "If-None-Match is enforced" if conditional else
                           "the store ignores If-None-Match: leases and compare-and-swap would not be safe"))
        except StoreError as exc:
            checks.append(("write", False, exc.message))
        date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if date:
            skew = abs((email.utils.parsedate_to_datetime(date) - datetime.now(timezone.utc)).total_seconds())
            checks.append(("lease-clock", skew < self.options.lock_ttl / 2,
                           f"leases use this host's clock; S3's differs by {skew:.0f}s"))
        return checks

    # ----------------------------------------------------------------- primitives

    def _now(self) -> datetime:
        return datetime.now(timezone.utc)

    def _list_ids(self) -> list[str]:
        with self._errors("list environments in"):
            ids = []
            base = f"{self.prefix}environments/"
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base,
                                                                           Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    env_id = common["Prefix"][len(base):].rstrip("/")
                    if self._get(self._key(env_id, "environment.json")) is not None:
                        ids.append(env_id)
            return ids

    def _read(self, env_id: str) -> Stored | None:
        with self._errors("read environment from"):
            found = self._get(self._key(env_id, "environment.json"))
        if found is None:
            return None
        data, etag, metadata = found
        generation = metadata.get("generation")
        if generation is None or not generation.isdigit():
            generation = str(json.loads(data).get("generation", 0))
        return Stored(data, int(generation), etag)

    def _insert(self, env_id: str, data: bytes, generation: int, runtime_config: bytes | None,
                record: dict[str, Any]) -> None:
        with self._errors("create environment in"):
            self._put(self._key(env_id, "pending-audit.json"), _json(record))
            try:
                self._put(self._key(env_id, "environment.json"), data, if_none_match=True,
                          metadata={"generation": str(generation)})
            except _Precondition:
                raise EnvironmentExists(f"environment {env_id!r} already exists",
                                        hint="choose another id, or change it with the env commands",
                                        env_id=env_id) from None
            self._after_commit(env_id, runtime_config, record, max_backups=None)

    def _after_commit(self, env_id: str, runtime_config: bytes | None, record: dict[str, Any],
                      max_backups: int | None, backed_up: int | None = None) -> None:
        self._set_runtime_config(env_id, runtime_config)
        self._put(self._audit_key(env_id, record), _json(record))
        self._delete(self._key(env_id, "pending-audit.json"))
        if max_backups is None:
            return
        if backed_up is not None and backed_up % 32:
            # backups are keyed by consecutive generations: the one that falls out is known, no LIST
            # needed (every 32nd save lists and prunes all, should max_backups have changed)
            if backed_up - max_backups >= 0:
                self._delete(self._key(env_id, f"backups/{backed_up - max_backups:012d}.json"))
            return
        backups = self._keys(self._key(env_id, "backups/"))
        for key in backups[: max(0, len(backups) - max_backups)]:
            self._delete(key)

    def _commit(self, env_id: str, *, lease: LeaseInfo, expected: Stored, data: bytes, generation: int,
                runtime_config: bytes | None, record: dict[str, Any], max_backups: int) -> Any:
        with self._errors("save environment in"):
            self._check_lease(env_id, lease)
            if max_backups > 0:
                self._put(self._key(env_id, f"backups/{expected.generation:012d}.json"), expected.data)
            self._put(self._key(env_id, "pending-audit.json"), _json(record))
            try:
                etag = self._put(self._key(env_id, "environment.json"), data, if_match=expected.version,
                                 metadata={"generation": str(generation)})
            except _Precondition:
                with contextlib.suppress(Exception):
                    self._delete(self._key(env_id, "pending-audit.json"))
                raise SaveConflict(f"environment {env_id!r} changed since this command loaded generation "
                                   f"{expected.generation}; nothing was saved", env_id=env_id,
                                   generation=expected.generation) from None
            self._after_commit(env_id, runtime_config, record, max_backups,
                               backed_up=expected.generation if max_backups > 0 else None)
            return etag

    def _check_lease(self, env_id: str, lease: LeaseInfo) -> None:
        current = self._get(self._key(env_id, "lease.json"))
        record = json.loads(current[0]) if current is not None else None
        if record is None or record.get("released") or int(record.get("token", -1)) != lease.token:
            raise LeaseLost(f"the lease on environment {env_id!r} was broken or taken over; nothing was saved",
                            env_id=env_id, token=lease.token)

    def _recover(self, env_id: str, lease: LeaseInfo, stored: Stored) -> None:
        with self._errors("recover the audit log of"):
            pending = self._get(self._key(env_id, "pending-audit.json"))
            if pending is None:
                return
            try:
                record = json.loads(pending[0])
            except ValueError:
                record = None
            if isinstance(record, dict) and record.get("generation_after") == stored.generation:
                logged = self._keys(self._key(env_id, f"audit/{stored.generation:012d}-"))
                if not any(_json_of(self._get(k)).get("generation_before") == record.get("generation_before")
                           for k in logged):
                    record["recovered"] = True
                    self._put(self._audit_key(env_id, record), _json(record))
            self._delete(self._key(env_id, "pending-audit.json"))

    def _audit_key(self, env_id: str, record: dict[str, Any]) -> str:
        return self._key(env_id, f"audit/{int(record['generation_after']):012d}-{time.time_ns():020d}-"
                                 f"{secrets.token_hex(4)}.json")

    def _set_runtime_config(self, env_id: str, data: bytes | None) -> None:
        if data is None:
            self._delete(self._key(env_id, "runtime-config.json"))
        else:
            self._put(self._key(env_id, "runtime-config.json"), data)

    def _append_audit(self, env_id: str, record: dict[str, Any]) -> None:
        with self._errors("append to the audit log of"):
            self._put(self._audit_key(env_id, record), _json(record))

    def _read_audit(self, env_id: str) -> list[dict[str, Any]]:
        with self._errors("read the audit log of"):
            return [_json_of(self._get(key)) for key in self._keys(self._key(env_id, "audit/"))]

    def _read_runtime_config(self, env_id: str) -> bytes | None:
        with self._errors("read the runtime-config from"):
            found = self._get(self._key(env_id, "runtime-config.json"))
        return None if found is None else found[0]

    def _write_runtime_config(self, env_id: str, lease: LeaseInfo, data: bytes | None) -> None:
        with self._errors("publish the runtime-config to"):
            self._check_lease(env_id, lease)
            self._set_runtime_config(env_id, data)

    # ----------------------------------------------------------------- leases

    def _lease_record(self, env_id: str) -> tuple[dict[str, Any], str] | None:
        found = self._get(self._key(env_id, "lease.json"))
        return None if found is None else (json.loads(found[0]), found[1])

    def _try_acquire(self, env_id: str, *, holder: str, pid: int, command: str, ttl: float) -> LeaseInfo | None:
        with self._errors("take the lease in"):
            current = self._lease_record(env_id)
            now = self._now()
            if current is None:
                token, condition = 1, {"if_none_match": True}
            else:
                record, etag = current
                if not record.get("released") and codec.parse_timestamp(record["expires"]) > now:
                    return None
                token, condition = int(record.get("token", 0)) + 1, {"if_match": etag}
            lease = LeaseInfo(env_id=env_id, holder=holder, pid=pid, command=command, acquired=now,
                              expires=now + timedelta(seconds=ttl), token=token)
            try:
                etag = self._put(self._key(env_id, "lease.json"), _json(_lease_json(lease)), **condition)
            except _Precondition:
                return None  # another writer won the race
            self._held[(env_id, token)] = (_lease_json(lease), etag)
            return lease

    def _renew(self, lease: LeaseInfo, ttl: float) -> bool:
        with self._errors("renew the lease in"):
            current = self._lease_record(lease.env_id)
            if current is None or current[0].get("released") or int(current[0].get("token", -1)) != lease.token:
                return False
            record = {**current[0], "expires": codec.format_timestamp(self._now() + timedelta(seconds=ttl))}
            try:
                etag = self._put(self._key(lease.env_id, "lease.json"), _json(record), if_match=current[1])
            except _Precondition:
                return False
            self._held[(lease.env_id, lease.token)] = (record, etag)
            return True

    def _release(self, lease: LeaseInfo) -> None:
        with self._errors("release the lease in"):
            held = self._held.pop((lease.env_id, lease.token), None)
            if held is not None:  # unchanged since we wrote it: release without reading it first
                with contextlib.suppress(_Precondition):
                    self._put(self._key(lease.env_id, "lease.json"), _json({**held[0], "released": True}),
                              if_match=held[1])
                    return
            current = self._lease_record(lease.env_id)
            if current is None or int(current[0].get("token", -1)) != lease.token:
                return
            with contextlib.suppress(_Precondition):
                self._put(self._key(lease.env_id, "lease.json"), _json({**current[0], "released": True}),
                          if_match=current[1])

    def _read_lease(self, env_id: str) -> LeaseInfo | None:
        with self._errors("read the lease from"):
            current = self._lease_record(env_id)
        if current is None or current[0].get("released"):
            return None
        return _lease_info(env_id, current[0])

    def _delete_lease(self, env_id: str) -> LeaseInfo | None:
        with self._errors("break the lease in"):
            for _ in range(10):
                current = self._lease_record(env_id)
                if current is None or current[0].get("released"):
                    return None
                try:
                    self._put(self._key(env_id, "lease.json"), _json({**current[0], "released": True}),
                              if_match=current[1])
                except _Precondition:
                    continue  # renewed meanwhile: read it again
                return _lease_info(env_id, current[0])
        raise StoreError(f"could not break the lease of {env_id!r}: it kept changing", env_id=env_id)

    def _read_attachment(self, env_id: str, name: str) -> bytes | None:
        with self._errors("read an attachment from"):
            found = self._get(self._key(env_id, f"attachments/{name}"))
        return None if found is None else found[0]

    def _write_attachment(self, env_id: str, name: str, data: bytes) -> None:
        with self._errors("write an attachment to"):
            self._put(self._key(env_id, f"attachments/{name}"), data)

    def _import(self, snapshot: Snapshot, *, replace: bool) -> None:
        env_id = snapshot.env_id
        with self._errors("import environment into"):
            if replace:
                for key in self._keys(self._key(env_id, "")):
                    if not key.endswith("/lease.json"):
                        self._delete(key)
            # deterministic keys: an interrupted import run again overwrites what it wrote
            for index, record in enumerate(snapshot.audit):
                generation = int(record.get("generation_after", 0)) if isinstance(record, dict) else 0
                self._put(self._key(env_id, f"audit/{generation:012d}-{index:020d}-import.json"), _json(record))
            for generation, data in snapshot.backups:
                self._put(self._key(env_id, f"backups/{generation:012d}.json"), data)
            for name, data in snapshot.attachments:
                self._put(self._key(env_id, f"attachments/{name}"), data)
            self._set_runtime_config(env_id, snapshot.runtime_config)
            generation = str(json.loads(snapshot.document).get("generation", 0))
            try:
                self._put(self._key(env_id, "environment.json"), snapshot.document, if_none_match=not replace,
                          metadata={"generation": generation})
            except _Precondition:
                raise EnvironmentExists(f"environment {env_id!r} already exists", env_id=env_id) from None

    # ----------------------------------------------------------------- backups (for tests and migrate)

    def backups(self, env_id: str) -> list[tuple[int, bytes]]:
        """``(generation, document)`` of the kept backups, oldest first."""
        with self._errors("read the backups of"):
            keys = self._keys(self._key(env_id, "backups/"))
            return [(int(key.rsplit("/", 1)[1].split(".")[0]), self._get(key)[0]) for key in keys]


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def _json_of(found: tuple[bytes, str, dict[str, str]] | None) -> dict[str, Any]:
    if found is None:
        return {}
    try:
        value = json.loads(found[0])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _lease_json(lease: LeaseInfo) -> dict[str, Any]:
    return {**lease.to_json(), "released": False}


def _lease_info(env_id: str, record: dict[str, Any]) -> LeaseInfo:
    return LeaseInfo(env_id=env_id, holder=str(record["holder"]), pid=int(record["pid"]),
                     command=str(record.get("command", "")), acquired=codec.parse_timestamp(record["acquired"]),
                     expires=codec.parse_timestamp(record["expires"]), token=int(record["token"]))
