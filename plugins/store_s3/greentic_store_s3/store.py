"""The S3 store backend (URL ``s3://bucket[/prefix][?endpoint_url=...&region=...]``).

Built on :class:`greentic_core.store.leased.LeasedStore`; S3's conditional writes are the
primitives. Layout under ``s3://bucket/prefix/``::

    environments/<env>/environment.json      the document, byte for byte (metadata: generation)
    environments/<env>/runtime-config.json   the projection; absent when nothing is live
    environments/<env>/lease.json            the lease (kept after release, marked released,
                                             so fencing tokens only ever grow)
    environments/<env>/audit/<generation>-<time>-<random>.json   one object per event
    environments/<env>/pending-audit.json    the audit event of a create in progress
    environments/<env>/backups/<generation>.json                 the newest max_backups kept
    environments/<env>/attachments/<name>    the deployer answers

* **lease**: created with ``If-None-Match: *``; renewed, released or taken over (once expired)
  with ``If-Match: <etag>``, so two writers can never both win it. This process remembers the
  ETag it last wrote, so it renews, fences and releases without reading the record first, and
  its next transaction tries to take the record it released without reading it either;
* **save** (compare-and-swap): first the lease record is rewritten with ``If-Match`` on the ETag
  this holder last wrote (the fencing check: it fails once the lease was broken or taken over),
  carrying the save's audit event as ``pending``; then ``PutObject`` of ``environment.json``
  with ``If-Match`` on the ETag this command loaded, so a writer whose lease expired and was
  taken over cannot overwrite the newer document (S3 answers 412 and nothing changes);
* **audit**: S3 has no multi-object transaction, so the event travels in the lease record
  (above) until its own object is written after the commit; a writer killed in between leaves
  it there, and the next holder (who replaces that record and carries the event over) writes
  it (``"recovered": true``) when the document carries its generation, or drops it;
* **load under the lease**: the release names the document's ETag in the record; a transaction
  that replaces a released record naming the ETag of the document this process already holds
  does not read it again (every change of the document rewrites the record first);
* **backups**: the document being replaced is written under its generation before the commit;
  the ones that fell out of the newest ``max_backups`` are deleted in one DeleteObjects every
  PRUNE_EVERY saves (``backups()`` shows only the newest ``max_backups``).

Credentials come from the normal AWS chain only (environment, profile, instance role); the URL
carries none. Lease times use this host's clock; ``store doctor`` compares it with S3's.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import secrets
import threading
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
#: old backups are deleted in one DeleteObjects every PRUNE_EVERY saves, not one DELETE a save
PRUNE_EVERY = 8
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
        #: (env_id, token) -> (lease record, ETag) as this process last wrote it (renewals run in
        #: another thread: _lease_lock orders this process's writes of a lease record)
        self._held: dict[tuple[str, int], tuple[dict[str, Any], str]] = {}
        self._lease_lock = threading.Lock()
        #: (env_id, token) -> the lease record that lease replaced ({} when there was none)
        self._previous: dict[tuple[str, int], dict[str, Any]] = {}
        #: (env_id, token) -> True when that lease created the record (first transaction after create)
        self._first: dict[tuple[str, int], bool] = {}
        #: (env_id, token) -> the document's ETag as that lease loaded or saved it (named at release)
        self._lease_doc: dict[tuple[str, int], Any] = {}
        #: env_id -> the last lease record (and ETag) this process wrote or read: the next
        #: transaction tries to replace it without reading it first
        self._lease_seen: dict[str, tuple[dict[str, Any], str]] = {}
        #: (env_id, token) -> digest of the runtime-config known to be published under that lease
        #: (from the released record it replaced, then from its own writes; named at release)
        self._published: dict[tuple[str, int], str | None] = {}
        #: env_id -> the document as this process last read or wrote it (used only when the lease
        #: record proves it current, see _read_under_lease)
        self._docs: dict[str, Stored] = {}
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

    def _delete_many(self, keys: list[str]) -> None:
        """Delete ``keys`` with one DeleteObjects per 1,000 (absent keys are no error)."""
        for start in range(0, len(keys), 1000):
            self._s3.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": key} for key in keys[start:start + 1000]], "Quiet": True})

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
        # no lease record to carry the pending event yet: the first transaction looks for this one
        with self._errors("create environment in"):
            self._put(self._key(env_id, "pending-audit.json"), _json(record))
            try:
                etag = self._put(self._key(env_id, "environment.json"), data, if_none_match=True,
                                 metadata={"generation": str(generation)})
            except _Precondition:
                raise EnvironmentExists(f"environment {env_id!r} already exists",
                                        hint="choose another id, or change it with the env commands",
                                        env_id=env_id) from None
            self._docs[env_id] = Stored(data, generation, etag)
            self._after_commit(env_id, runtime_config, record, max_backups=None)
            self._delete(self._key(env_id, "pending-audit.json"))

    def _after_commit(self, env_id: str, runtime_config: bytes | None, record: dict[str, Any],
                      max_backups: int | None, backed_up: int | None = None, lease: LeaseInfo | None = None) -> None:
        """After the document's commit, under the lease: the runtime-config (unless it is known
        to be published already), the audit object, and every PRUNE_EVERY saves the backups that
        fell out of the newest ``max_backups``, in one DeleteObjects (not one DELETE a save)."""
        self._publish(env_id, lease, runtime_config)
        self._put(self._audit_key(env_id, record), _json(record))
        if max_backups is None or backed_up is None or (backed_up + 1) % PRUNE_EVERY:
            return
        if (backed_up + 1) % (PRUNE_EVERY * 8):
            # backups are keyed by consecutive generations: those that fell out are known, no LIST
            # (every 8th prune lists them all, should max_backups have changed)
            stale = [self._key(env_id, f"backups/{g:012d}.json")
                     for g in range(max(0, backed_up - max_backups - PRUNE_EVERY + 1), backed_up - max_backups + 1)]
        else:
            backups = self._keys(self._key(env_id, "backups/"))
            stale = backups[: max(0, len(backups) - max_backups)]
        self._delete_many(stale)

    def _commit(self, env_id: str, *, lease: LeaseInfo, expected: Stored, data: bytes, generation: int,
                runtime_config: bytes | None, record: dict[str, Any], max_backups: int) -> Any:
        with self._errors("save environment in"):
            # fencing and the pending audit event in one conditional write of the lease record
            self._fence(env_id, lease, pending=record)
            if max_backups > 0:
                self._put(self._key(env_id, f"backups/{expected.generation:012d}.json"), expected.data)
            try:
                etag = self._put(self._key(env_id, "environment.json"), data, if_match=expected.version,
                                 metadata={"generation": str(generation)})
            except _Precondition:
                self._lease_doc.pop((env_id, lease.token), None)  # the document is not the one we know
                with contextlib.suppress(Exception):
                    self._fence(env_id, lease, pending=None)  # the event was never committed
                raise SaveConflict(f"environment {env_id!r} changed since this command loaded generation "
                                   f"{expected.generation}; nothing was saved", env_id=env_id,
                                   generation=expected.generation) from None
            self._docs[env_id] = Stored(data, generation, etag)
            self._lease_doc[(env_id, lease.token)] = etag
            self._after_commit(env_id, runtime_config, record, max_backups,
                               backed_up=expected.generation if max_backups > 0 else None, lease=lease)
            self._forget_pending(env_id, lease)
            return etag

    def _forget_pending(self, env_id: str, lease: LeaseInfo) -> None:
        """The pending event is in the log now: the next write of the lease record (a renewal,
        a save, the release) leaves it out. Until then a crash only costs the next holder a check."""
        with self._lease_lock:
            held = self._held.get((env_id, lease.token))
            if held is not None:
                self._held[(env_id, lease.token)] = ({k: v for k, v in held[0].items() if k != "pending"}, held[1])

    def _fence(self, env_id: str, lease: LeaseInfo, *, pending: dict[str, Any] | None | bool = False) -> None:
        """Rewrite the lease record with ``If-Match`` on the ETag this process last wrote: it
        succeeds only while the lease is still ours (nobody broke, took over or renewed it), which
        is the fencing check, without a read. ``pending`` (an audit record, or None to clear it)
        is kept in the record until the lease is released, for :meth:`_recover`."""
        with self._lease_lock:
            held = self._held.get((env_id, lease.token))
            if held is not None:
                record = dict(held[0])
                if pending is not False:
                    record.pop("pending", None)
                    if pending is not None:
                        record["pending"] = pending
                try:
                    etag = self._put(self._key(env_id, "lease.json"), _json(record), if_match=held[1])
                except _Precondition:
                    held = None
                else:
                    self._held[(env_id, lease.token)] = (record, etag)
                    return
        raise LeaseLost(f"the lease on environment {env_id!r} was broken or taken over; nothing was saved",
                        env_id=env_id, token=lease.token)

    def _recover(self, env_id: str, lease: LeaseInfo, stored: Stored) -> None:
        """Append the audit event of a save whose writer died between the commit and the audit
        object: it is in the lease record this transaction took over (carried into ours), or, for
        the first transaction after ``create``, in ``pending-audit.json``."""
        held = self._held.get((env_id, lease.token))
        first = self._first.pop((env_id, lease.token), False)
        pending = held[0].get("pending") if held is not None else None
        with self._errors("recover the audit log of"):
            if first:
                found = self._get(self._key(env_id, "pending-audit.json"))
                if found is not None:
                    with contextlib.suppress(ValueError):
                        self._append_if_missing(env_id, json.loads(found[0]), stored)
                    self._delete(self._key(env_id, "pending-audit.json"))
            if isinstance(pending, dict):
                self._append_if_missing(env_id, pending, stored)
                self._forget_pending(env_id, lease)

    def _append_if_missing(self, env_id: str, record: Any, stored: Stored) -> None:
        """Write ``record`` (a save's audit event) with ``"recovered": true`` if the document
        carries its generation (the save committed) and the log does not have it yet."""
        if not isinstance(record, dict) or record.get("generation_after") != stored.generation:
            return  # the save never committed: drop its event
        logged = self._keys(self._key(env_id, f"audit/{stored.generation:012d}-"))
        if not any(_json_of(self._get(k)).get("generation_before") == record.get("generation_before")
                   for k in logged):
            self._put(self._audit_key(env_id, record), _json({**record, "recovered": True}))

    def _audit_key(self, env_id: str, record: dict[str, Any]) -> str:
        return self._key(env_id, f"audit/{int(record['generation_after']):012d}-{time.time_ns():020d}-"
                                 f"{secrets.token_hex(4)}.json")

    def _publish(self, env_id: str, lease: LeaseInfo | None, data: bytes | None) -> None:
        """Publish the runtime-config, skipping the write when the lease record this lease
        replaced (or this lease itself) says that exact one is published: every write of it
        happens under the lease and is named by the release, ``store migrate --force`` drops
        the name, and a record taken over from a dead or broken holder names nothing."""
        key = (env_id, lease.token) if lease is not None else None
        wanted = _digest(data)
        if key is not None and self._published.get(key) == wanted:
            return
        if key is not None:
            self._published[key] = None  # unknown until the write succeeded
        self._set_runtime_config(env_id, data)
        if key is not None:
            self._published[key] = wanted

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
            self._fence(env_id, lease)
            self._publish(env_id, lease, data)

    # ----------------------------------------------------------------- transactions: what is known

    def _exists_before_lease(self, env_id: str) -> bool:
        """True without asking when this process released its lease last, or when its lease
        record exists (kept after release, so a transaction took place): the load under the lease
        checks again. Else the document is read."""
        if env_id in self._lease_seen:
            return True
        with self._errors("read the lease from"):
            lease = self._lease_record(env_id)
        if lease is not None:
            self._lease_seen[env_id] = lease  # the acquisition starts from it
            return True
        return self._read(env_id) is not None

    def _read_under_lease(self, env_id: str, lease: LeaseInfo) -> Stored | None:
        """The document this process already holds when the lease record it replaced proves it
        current: a record released naming that document's ETag. Every save takes the lease and
        rewrites its record (fencing) before it changes the document, and ``store migrate
        --force`` rewrites it too, so a released record still in place means the document is
        the one it names. Else it is read."""
        previous = self._previous.pop((env_id, lease.token), None)
        if previous is not None and previous.get("released") and previous.get("published"):
            self._published[(env_id, lease.token)] = previous["published"]
        known = self._docs.get(env_id)
        if (known is not None and previous is not None and previous.get("released")
                and previous.get("document") == known.version):
            stored: Stored | None = known
        else:
            stored = self._read(env_id)
        if stored is None:
            self._docs.pop(env_id, None)
        else:
            self._docs[env_id] = stored
            self._lease_doc[(env_id, lease.token)] = stored.version
        return stored

    # ----------------------------------------------------------------- leases

    def _lease_record(self, env_id: str) -> tuple[dict[str, Any], str] | None:
        found = self._get(self._key(env_id, "lease.json"))
        return None if found is None else (json.loads(found[0]), found[1])

    def _try_acquire(self, env_id: str, *, holder: str, pid: int, command: str, ttl: float) -> LeaseInfo | None:
        with self._errors("take the lease in"):
            current = self._lease_seen.pop(env_id, None)  # known: try it without reading it first
            fresh = current is None
            if fresh:
                current = self._lease_record(env_id)
            while True:
                now = self._now()
                if current is None:
                    token, condition, previous = 1, {"if_none_match": True}, {}
                else:
                    previous, etag = current
                    if not previous.get("released") and codec.parse_timestamp(previous["expires"]) > now:
                        if fresh:
                            return None
                        current, fresh = self._lease_record(env_id), True
                        continue
                    token, condition = int(previous.get("token", 0)) + 1, {"if_match": etag}
                lease = LeaseInfo(env_id=env_id, holder=holder, pid=pid, command=command, acquired=now,
                                  expires=now + timedelta(seconds=ttl), token=token)
                record = _lease_json(lease)
                if isinstance(previous.get("pending"), dict):
                    record["pending"] = previous["pending"]  # kept until recovered (a taken-over save's)
                try:
                    etag = self._put(self._key(env_id, "lease.json"), _json(record), **condition)
                except _Precondition:
                    if fresh:
                        return None  # another writer won the race
                    current, fresh = self._lease_record(env_id), True
                    continue
                with self._lease_lock:
                    self._held[(env_id, token)] = (record, etag)
                self._previous[(env_id, token)] = previous
                if current is None:
                    self._first[(env_id, token)] = True
                return lease

    def _renew(self, lease: LeaseInfo, ttl: float) -> bool:
        with self._errors("renew the lease in"):
            with self._lease_lock:
                held = self._held.get((lease.env_id, lease.token))
                if held is None:
                    return False
                record = {**held[0], "expires": codec.format_timestamp(self._now() + timedelta(seconds=ttl))}
                try:
                    etag = self._put(self._key(lease.env_id, "lease.json"), _json(record), if_match=held[1])
                except _Precondition:
                    return False  # broken or taken over: the ETag we wrote is gone
                self._held[(lease.env_id, lease.token)] = (record, etag)
                return True

    def _release(self, lease: LeaseInfo) -> None:
        key = (lease.env_id, lease.token)
        self._previous.pop(key, None)
        self._first.pop(key, None)
        document = self._lease_doc.pop(key, None)
        published = self._published.pop(key, None)
        with self._errors("release the lease in"), self._lease_lock:
            held = self._held.pop(key, None)
            if held is None:
                return
            # a pending event not yet in the log stays for the next holder to recover
            record = {**held[0], "released": True, "document": document, "published": published}
            try:  # unchanged since we wrote it: released without reading it first
                etag = self._put(self._key(lease.env_id, "lease.json"), _json(record), if_match=held[1])
            except _Precondition:
                return  # broken or taken over: not ours to release
            self._lease_seen[lease.env_id] = (record, etag)

    def _read_lease(self, env_id: str) -> LeaseInfo | None:
        with self._errors("read the lease from"):
            current = self._lease_record(env_id)
        if current is None or current[0].get("released"):
            return None
        return _lease_info(env_id, current[0])

    def _delete_lease(self, env_id: str) -> LeaseInfo | None:
        with self._errors("break the lease in"):
            self._lease_seen.pop(env_id, None)
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
            # the document changed without the lease: a released record must no longer name the old
            # one (see _read_under_lease); a holder's next renewal or save fails, as it should
            current = self._lease_record(env_id)
            if current is not None:
                self._put(self._key(env_id, "lease.json"),
                          _json({k: v for k, v in current[0].items() if k not in ("document", "published")}))
            self._docs.pop(env_id, None)
            self._lease_seen.pop(env_id, None)

    # ----------------------------------------------------------------- backups (for tests and migrate)

    def backups(self, env_id: str) -> list[tuple[int, bytes]]:
        """``(generation, document)`` of the kept backups, oldest first: the newest ``max_backups``
        older than the stored document (up to PRUNE_EVERY - 1 more objects wait for the next
        batched delete, and a save refused after its backup was written leaves one of the current
        generation, which is no backup)."""
        with self._errors("read the backups of"):
            stored = self._read(env_id)
            current = stored.generation if stored is not None else None
            found = [(int(key.rsplit("/", 1)[1].split(".")[0]), key) for key in self._keys(self._key(env_id, "backups/"))]
            kept = [(g, key) for g, key in found if current is None or g < current]
            kept = kept[len(kept) - self.options.max_backups:] if self.options.max_backups > 0 else []
            return [(g, self._get(key)[0]) for g, key in kept]


def _digest(data: bytes | None) -> str:
    """What a released lease record says about the published runtime-config."""
    return "none" if data is None else "sha256:" + hashlib.sha256(data).hexdigest()


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
