"""The traffic engine: set a deployment's split, roll it back, parse weights. Pure code, no I/O.

``set_traffic_split`` follows upstream-spec 3.3 step by step: the deployment must exist; every
entry's revision must exist and belong to it; a replay (same idempotency key, same entries in
any order) is a no-op that returns the very environment passed in with ``changed=False``; the
same key with other entries is :class:`~greentic_core.errors.IdempotencyKeyReused`; every entry
(weight 0 included) must be ``ready``; then per-entry and sum checks, generation 0 for a first
split and previous + 1 after, and ``previous_split_ref`` = ``inline://`` + unpadded urlsafe
base64 of the compact JSON of the previous split (its own ``previous_split_ref`` and
``history`` cleared), exactly what upstream writes.

Beyond upstream, every split keeps ``history``: the earlier states, newest first, at most
``history_limit`` (default 20). Rollback semantics (decided here):

* ``rollback_traffic_split(steps=N)`` restores the state N steps back, counting from the current
  state through ``history`` (``steps=1`` is the state before the current one). It writes
  generation = current + 1, ``idempotency_key = "rollback-<current key>"``, ``updated_at = now``,
  ``updated_by`` as given, and the restored state's ``authorization_ref``.
* ``previous_split_ref`` keeps upstream's meaning and is cleared by a rollback, so the upstream
  tool still sees "rollback is one step". The history works like an undo stack: the rolled-back
  states are popped, and what remains is the history *before* the restored state. A second
  rollback therefore goes further back (never forward again); with nothing left it is
  :class:`~greentic_core.errors.NoPreviousSnapshot`. To go forward, ``traffic set`` again.
  Because a retried rollback would go one more step back, callers that may retry should pass
  ``expected_generation`` (refused with :class:`StaleSplit` when the split moved on).
* A document written by the upstream tool has ``previous_split_ref`` but no ``history``: its
  inline snapshot is decoded and used as a one-item history (a bad token is
  :class:`~greentic_core.errors.SnapshotDecode` for a rollback; a set simply drops it).
* Rollback re-admits the restored entries: each must still exist in the deployment, every entry
  with weight must be ``ready`` and a 0-weight entry must not be ``archived``
  (:class:`~greentic_core.errors.NotReady`); the sum is checked again. A 0-weight entry that is
  draining is restored as it was: it gets no traffic, and refusing it would block an emergency
  rollback on a revision that was drained after being taken out of rotation.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import attrs

from . import codec
from .validation import validated
from .errors import (
    DeploymentNotFound,
    GreenticError,
    IdempotencyKeyReused,
    InvalidWeights,
    NoPreviousSnapshot,
    NoSplit,
    NotReady,
    RevisionNotFoundInEnv,
    SnapshotDecode,
    TrafficError,
)
from .spec import (
    TOTAL_BPS,
    Environment,
    Lifecycle,
    SplitHistoryItem,
    TrafficSplit,
    TrafficSplitEntry,
)

__all__ = [
    "DEFAULT_HISTORY_LIMIT",
    "EmptyIdempotencyKey",
    "INLINE_PREFIX",
    "InvalidTrafficRequest",
    "StaleSplit",
    "TrafficResult",
    "WrongDeployment",
    "decode_inline_snapshot",
    "encode_inline_snapshot",
    "parse_weights",
    "rollback_traffic_split",
    "set_traffic_split",
    "split_history",
]

INLINE_PREFIX = "inline://"
DEFAULT_HISTORY_LIMIT = 20


# --------------------------------------------------------------------------- errors of our own


class InvalidTrafficRequest(TrafficError):
    """The request itself is malformed (blank key, bad step count, revision of another deployment)."""

    kind = "usage"
    exit_code = 2


class EmptyIdempotencyKey(InvalidTrafficRequest):
    pass


class WrongDeployment(InvalidTrafficRequest):
    """A split entry names a revision of another deployment (upstream ``WrongDeployment``)."""


class StaleSplit(TrafficError):
    """The split's generation is not the one the caller expected (it changed since it was read)."""


# --------------------------------------------------------------------------- result


@attrs.frozen
class TrafficResult:
    """The new environment (to save), the deployment's split, and whether anything changed.

    Unpacks as ``env, split, changed = result``. On an idempotent replay ``changed`` is False
    and ``env`` is the very object passed in (nothing to save).
    """

    env: Environment
    split: TrafficSplit
    changed: bool

    @property
    def environment(self) -> Environment:
        return self.env

    def __iter__(self) -> Iterator[Any]:
        return iter((self.env, self.split, self.changed))


# --------------------------------------------------------------------------- inline snapshots


def encode_inline_snapshot(split: TrafficSplit) -> str:
    """``inline://<base64url-nopad(compact JSON)>`` of ``split`` without its ref and history."""
    bare = attrs.evolve(split, previous_split_ref=None, history=())
    text = json.dumps(codec.unstructure(bare), separators=(",", ":"), ensure_ascii=False)
    token = base64.urlsafe_b64encode(text.encode("utf-8")).rstrip(b"=").decode("ascii")
    return INLINE_PREFIX + token


def decode_inline_snapshot(ref: str) -> TrafficSplit:
    """The split stashed in an ``inline://`` reference, or :class:`SnapshotDecode`."""
    shown = ref if not isinstance(ref, str) or len(ref) <= 60 else ref[:57] + "..."
    if not isinstance(ref, str) or not ref.startswith(INLINE_PREFIX):
        raise SnapshotDecode(
            f"previous_split_ref {shown!r} is not an inline:// snapshot",
            hint="only inline:// snapshots can be restored; set the split explicitly with `traffic set`",
            ref=shown,
        )
    token = ref[len(INLINE_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        split = codec.structure(codec.parse_json(raw.decode("utf-8")), TrafficSplit)
    except (binascii.Error, ValueError, UnicodeDecodeError, GreenticError) as exc:
        raise SnapshotDecode(
            f"previous_split_ref {shown!r} cannot be decoded: {exc}",
            hint="set the split explicitly with `greentic-deployer traffic set`",
            ref=shown,
        ) from None
    return split


def _history_item(split: TrafficSplit) -> SplitHistoryItem:
    return SplitHistoryItem(
        generation=split.generation,
        entries=split.entries,
        idempotency_key=split.idempotency_key,
        updated_at=split.updated_at,
        updated_by=split.updated_by,
        authorization_ref=split.authorization_ref,
    )


def split_history(split: TrafficSplit, *, strict: bool = False) -> tuple[SplitHistoryItem, ...]:
    """The earlier states of ``split``, newest first.

    ``history`` when present; otherwise the upstream one-step ``previous_split_ref`` decoded
    (a bad token raises :class:`SnapshotDecode` when ``strict``, else gives no history).
    """
    if split.history:
        return split.history
    if split.previous_split_ref is None:
        return ()
    try:
        return (_history_item(decode_inline_snapshot(split.previous_split_ref)),)
    except SnapshotDecode:
        if strict:
            raise
        return ()


# --------------------------------------------------------------------------- shared checks


def _entry_pairs(entries: Iterable[Any]) -> list[tuple[str, int]]:
    pairs: list[tuple[str, int]] = []
    for item in entries:
        if isinstance(item, TrafficSplitEntry):
            rid, weight = item.revision_id, item.weight_bps
        else:
            rid, weight = item
        if not isinstance(rid, str) or not rid:
            raise InvalidWeights(f"split entry revision id must be a non-empty string, got {rid!r}", revision_id=rid)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise InvalidWeights(
                f"weight of {rid} must be a whole number of basis points >= 0, got {weight!r}",
                hint="weights are basis points: 10000 = 100%",
                revision_id=rid,
                value=weight,
            )
        pairs.append((rid, weight))
    return pairs


def _check_weights(pairs: Sequence[tuple[str, int]], deployment_id: str) -> None:
    seen: set[str] = set()
    for rid, weight in pairs:
        if rid in seen:
            raise InvalidWeights(
                f"revision {rid} appears twice in the split for deployment {deployment_id}",
                hint="give each revision one weight",
                revision_id=rid,
                deployment_id=deployment_id,
            )
        seen.add(rid)
        if weight > TOTAL_BPS:
            raise InvalidWeights(
                f"weight of {rid} is {weight} basis points, above 10000 (100%)",
                hint="weights are basis points: 10000 = 100%",
                revision_id=rid,
                value=weight,
                deployment_id=deployment_id,
            )
    total = sum(weight for _, weight in pairs)
    if total != TOTAL_BPS:
        raise InvalidWeights(
            f"weights sum to {total} basis points ({total / 100:g}%), must be exactly 10000 (100%)",
            hint="adjust the weights so they add up to 10000 basis points",
            sum=total,
            deployment_id=deployment_id,
        )


def _check_membership(env: Environment, deployment_id: str, rid: str) -> Lifecycle:
    revision = env.revision(rid)
    if revision is None:
        raise RevisionNotFoundInEnv(env.environment_id, rid)
    if revision.deployment_id != deployment_id:
        raise WrongDeployment(
            f"revision {rid} belongs to deployment {revision.deployment_id}, not {deployment_id}",
            hint="a split may only route revisions of its own deployment",
            revision_id=rid,
            actual=revision.deployment_id,
            expected=deployment_id,
        )
    return revision.lifecycle


def _not_ready(env: Environment, rid: str, lifecycle: Lifecycle) -> NotReady:
    if lifecycle in (Lifecycle.STAGED, Lifecycle.WARMING, Lifecycle.FAILED):
        hint = f"warm it first: `greentic-deployer revision warm {env.environment_id} {rid}`"
    else:
        hint = "route only ready revisions; leave this one out of the split"
    return NotReady(
        f"revision {rid} is {lifecycle.value}; only ready revisions may receive traffic",
        hint=hint,
        revision_id=rid,
        lifecycle=lifecycle.value,
    )


def _replace_split(env: Environment, new: TrafficSplit) -> Environment:
    splits = list(env.traffic_splits)
    for index, split in enumerate(splits):
        if split.deployment_id == new.deployment_id:
            splits[index] = new
            break
    else:
        splits.append(new)
    return attrs.evolve(env, traffic_splits=tuple(splits))


# --------------------------------------------------------------------------- set


def set_traffic_split(
    env: Environment,
    deployment_id: str,
    entries: Iterable[tuple[str, int] | TrafficSplitEntry],
    *,
    idempotency_key: str,
    updated_by: str,
    now: datetime,
    authorization_ref: str | None = None,
    history_limit: int = DEFAULT_HISTORY_LIMIT,
) -> TrafficResult:
    """Set the weights of ``deployment_id``'s split (upstream-spec 3.3, steps 1-5, plus history).

    Errors, in the order checked: :class:`EmptyIdempotencyKey`; a malformed weight
    (:class:`InvalidWeights`); :class:`DeploymentNotFound`; :class:`RevisionNotFoundInEnv` /
    :class:`WrongDeployment`; :class:`IdempotencyKeyReused`; :class:`NotReady`; a duplicated
    revision, an entry above 10000 or a sum other than 10000 (:class:`InvalidWeights`).
    """
    if not isinstance(idempotency_key, str) or not idempotency_key.strip():
        raise EmptyIdempotencyKey(
            "idempotency key must not be blank",
            hint="pass a unique key per change, e.g. a UUID; a retry reuses the same key",
        )
    if history_limit < 0:
        raise InvalidTrafficRequest(f"history_limit must be >= 0, got {history_limit}", value=history_limit)
    pairs = _entry_pairs(entries)

    # 1. the deployment
    deployment = env.deployment(deployment_id)
    if deployment is None:
        raise DeploymentNotFound(env.environment_id, deployment_id)
    deployment_id = deployment.deployment_id

    # 2. every revision exists and belongs to the deployment
    lifecycles = [_check_membership(env, deployment_id, rid) for rid, _ in pairs]

    # 3. idempotency
    existing = env.split_for(deployment_id)
    if existing is not None and existing.idempotency_key == idempotency_key:
        if sorted(pairs) == sorted((e.revision_id, e.weight_bps) for e in existing.entries):
            return TrafficResult(env, existing, False)
        raise IdempotencyKeyReused(
            f"idempotency key {idempotency_key!r} was already used for deployment {deployment_id} "
            "with different weights",
            hint="use a new idempotency key for a new change",
            key=idempotency_key,
            deployment_id=deployment_id,
        )

    # 4. admission: every entry must be ready
    for (rid, _), lifecycle in zip(pairs, lifecycles):
        if lifecycle != Lifecycle.READY:
            raise _not_ready(env, rid, lifecycle)

    # 5. build, check, replace
    _check_weights(pairs, deployment_id)
    new_entries = tuple(TrafficSplitEntry(revision_id=rid, weight_bps=w) for rid, w in pairs)  # type: ignore[arg-type]
    if existing is None:
        split = TrafficSplit(
            env_id=env.environment_id,
            deployment_id=deployment_id,
            bundle_id=deployment.bundle_id,
            generation=0,
            entries=new_entries,
            updated_at=now,
            updated_by=updated_by,
            idempotency_key=idempotency_key,
            authorization_ref=authorization_ref or "auth.json",
        )
    else:
        history = ((_history_item(existing),) + split_history(existing))[:history_limit]
        split = attrs.evolve(
            existing,
            env_id=env.environment_id,
            bundle_id=deployment.bundle_id,
            generation=existing.generation + 1,
            entries=new_entries,
            updated_at=now,
            updated_by=updated_by,
            idempotency_key=idempotency_key,
            authorization_ref=authorization_ref or "auth.json",
            previous_split_ref=encode_inline_snapshot(existing),
            history=history,
        )
    return TrafficResult(validated(_replace_split(env, split)), split, True)


# --------------------------------------------------------------------------- rollback


def rollback_traffic_split(
    env: Environment,
    deployment_id: str,
    *,
    steps: int = 1,
    updated_by: str,
    now: datetime,
    expected_generation: int | None = None,
) -> TrafficResult:
    """Restore the split state ``steps`` back (see the module docstring for the semantics).

    Errors: :class:`InvalidTrafficRequest` (steps < 1); :class:`NoSplit`; :class:`StaleSplit`
    (``expected_generation`` given and different); :class:`SnapshotDecode` (upstream inline
    snapshot unreadable); :class:`NoPreviousSnapshot` (fewer than ``steps`` earlier states);
    :class:`RevisionNotFoundInEnv` / :class:`WrongDeployment` / :class:`NotReady` (re-admission);
    :class:`InvalidWeights` (the restored weights do not sum to 10000).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidTrafficRequest(f"rollback steps must be a whole number >= 1, got {steps!r}", value=steps)
    current = env.split_for(deployment_id)
    if current is None:
        raise NoSplit(
            f"no traffic split recorded for deployment {deployment_id} in environment {env.environment_id!r}",
            hint=f"record one with `greentic-deployer traffic set {env.environment_id} {deployment_id} REV=10000`",
            env_id=env.environment_id,
            deployment_id=deployment_id,
        )
    deployment_id = current.deployment_id
    if expected_generation is not None and current.generation != expected_generation:
        raise StaleSplit(
            f"split for deployment {deployment_id} is at generation {current.generation}, "
            f"expected {expected_generation}",
            hint="the split changed since it was read; check `traffic show` before rolling back again",
            deployment_id=deployment_id,
            actual=current.generation,
            expected=expected_generation,
        )
    history = split_history(current, strict=True)
    if steps > len(history):
        raise NoPreviousSnapshot(
            f"split for deployment {deployment_id} has {len(history)} earlier state(s); "
            f"cannot roll back {steps} step(s)",
            hint="set the weights explicitly with `greentic-deployer traffic set`",
            deployment_id=deployment_id,
            steps=steps,
            available=len(history),
        )
    target = history[steps - 1]
    pairs = [(e.revision_id, e.weight_bps) for e in target.entries]
    for rid, weight in pairs:
        lifecycle = _check_membership(env, deployment_id, rid)
        if (weight > 0 and lifecycle != Lifecycle.READY) or lifecycle == Lifecycle.ARCHIVED:
            raise _not_ready(env, rid, lifecycle)
    _check_weights(pairs, deployment_id)

    deployment = env.deployment(deployment_id)
    split = attrs.evolve(
        current,
        env_id=env.environment_id,
        bundle_id=deployment.bundle_id if deployment is not None else current.bundle_id,
        generation=current.generation + 1,
        entries=target.entries,
        updated_at=now,
        updated_by=updated_by,
        idempotency_key=f"rollback-{current.idempotency_key}",
        authorization_ref=target.authorization_ref,
        previous_split_ref=None,
        history=history[steps:],
    )
    return TrafficResult(validated(_replace_split(env, split)), split, True)


# --------------------------------------------------------------------------- CLI weights


_BPS = re.compile(r"(\d+)(?:\s*bps)?", re.IGNORECASE)
_PERCENT = re.compile(r"(\d+)(?:\.(\d+))?\s*%")


def _parse_weight(rid: str, text: str) -> int:
    if match := _BPS.fullmatch(text):
        return int(match.group(1))
    if match := _PERCENT.fullmatch(text):
        fraction = match.group(2) or ""
        if len(fraction) > 2:
            raise InvalidWeights(
                f"weight {text!r} of {rid} is finer than 0.01% (1 basis point)",
                hint="use at most two decimals in a percentage, or basis points (e.g. 1255bps)",
                revision_id=rid,
                value=text,
            )
        return int(match.group(1)) * 100 + int(fraction.ljust(2, "0"))  # exact: at most two decimals
    raise InvalidWeights(
        f"weight {text!r} of {rid} is not basis points (9000, 9000bps) or a percentage (90%, 12.5%)",
        hint="write REV=WEIGHT pairs, e.g. REV_A=9000,REV_B=10%",
        revision_id=rid,
        value=text,
    )


def parse_weights(text: str) -> list[tuple[str, int]]:
    """Parse ``REV=WEIGHT[,REV=WEIGHT...]`` into ``[(rev, basis_points), ...]``.

    WEIGHT is basis points (``9000`` or ``9000bps``) or a percentage with at most two decimals
    (``12.5%``; 0.01% = 1 bps, so ``12.555%`` is refused). The weights must total 10000, each
    revision may appear once; REV is kept as written. Errors are :class:`InvalidWeights`.
    """
    items = [item.strip() for item in text.split(",")] if text and text.strip() else []
    if not items:
        raise InvalidWeights(
            "no weights given", hint="write REV=WEIGHT pairs, e.g. REV_A=9000,REV_B=1000", sum=0
        )
    pairs: list[tuple[str, int]] = []
    seen: set[str] = set()
    for item in items:
        rid, sep, weight_text = item.partition("=")
        rid, weight_text = rid.strip(), weight_text.strip()
        if not sep or not rid or not weight_text:
            raise InvalidWeights(
                f"{item!r} is not REV=WEIGHT",
                hint="write REV=WEIGHT pairs separated by commas, e.g. REV_A=9000,REV_B=1000",
                value=item,
            )
        if rid in seen:
            raise InvalidWeights(
                f"revision {rid} is given twice", hint="give each revision one weight", revision_id=rid
            )
        seen.add(rid)
        weight = _parse_weight(rid, weight_text)
        if weight > TOTAL_BPS:
            raise InvalidWeights(
                f"weight of {rid} is {weight} basis points, above 10000 (100%)",
                hint="weights are basis points: 10000 = 100%",
                revision_id=rid,
                value=weight,
            )
        pairs.append((rid, weight))
    total = sum(weight for _, weight in pairs)
    if total != TOTAL_BPS:
        raise InvalidWeights(
            f"weights sum to {total} basis points ({total / 100:g}%), must be exactly 10000 (100%)",
            hint="adjust the weights so they add up to 10000 basis points (100%)",
            sum=total,
        )
    return pairs
