"""Environment validation: the rules of upstream-spec section 3.1, in the same order.

:func:`validate_environment` raises the *first* rule an environment breaks, as a typed
:class:`~greentic_core.errors.SpecError` whose ``details`` carry the rule's data. The order:

0. Decode-level rules the codec leaves to us (upstream rejects these while *reading* the
   document, so they come before every rule of ``validate()``): ``listen_addr`` syntax,
   ``u32`` ranges (``drain_seconds``, ``weight_bps``, ``basis_points``, retention counters),
   the ``credentials_ref`` format, the shape of the sections kept as raw JSON
   (``config_overrides``, ``usage``, ``revocation``, ``retention``, ``health``,
   ``messaging_endpoints``, ``extensions``).
1. environment schema            2. host_config env_id         3. public_base_url
4. unique capability slots       5. credentials_ref env        6. revisions
7. bundle deployments            8. traffic splits             9. messaging endpoints
10. extensions

The gaps of upstream-spec 3.2 that this project closes are checked inside the upstream step
that first sees the data (duplicate revision id / sequence at step 6, duplicate deployment id
at step 7, duplicate split and duplicate split entry at step 8). See ``docs/spec.md``.

Everything is linear in the size of the document: each list is walked once and the lookups
go through dicts built on the way (revision id -> revision, deployment id -> bundle, deployment
id -> pack ids of its non-archived revisions).
"""

from __future__ import annotations

import ipaddress
import json
from string import Formatter
from collections.abc import Iterable, Mapping
from typing import Any, Callable, ClassVar, NamedTuple
from urllib.parse import urlsplit

from . import ids
from .codec import parse_timestamp
from .errors import (
    BasisPointsEntryTooLarge,
    BasisPointsSum,
    BundleRevisionWrongBundle,
    BundleRevisionWrongDeployment,
    ConfigOverridePackNotInRevisions,
    ConfigOverridesInvalid,
    CrossEnvRef,
    DuplicateCapabilitySlot,
    DuplicateDeploymentId,
    DuplicateExtension,
    DuplicateMessagingEndpoint,
    DuplicateProviderInstance,
    DuplicateRevisionId,
    DuplicateSequence,
    DuplicateSplit,
    DuplicateSplitEntry,
    EnvIdMismatch,
    InvalidExtensionInstanceId,
    InvalidPublicBaseUrl,
    MessagingEndpointBundleNotLinked,
    MessagingEndpointInvalid,
    SchemaMismatch,
    SpecError,
    SpecFormatError,
    SplitDeploymentBundleMismatch,
    SplitRevisionWrongBundle,
    SplitRevisionWrongDeployment,
    UnknownDeployment,
    UnknownRevision,
    WelcomeFlowBundleNotLinked,
)
from .spec import (
    BUNDLE_DEPLOYMENT_V1,
    ENVIRONMENT_V1,
    MESSAGING_ENDPOINT_V1,
    REVISION_V1,
    TOTAL_BPS,
    TRAFFIC_SPLIT_V1,
    BundleDeployment,
    Environment,
    Lifecycle,
    Revision,
)

__all__ = [
    "InvalidListenAddr",
    "MalformedSection",
    "NumberOutOfRange",
    "U32_MAX",
    "check_basis_points",
    "check_listen_addr",
    "extension_for_ref",
    "validate_environment",
    "validate_public_base_url",
]

U32_MAX = 2**32 - 1

# config_overrides limits (upstream BundleDeployment::validate)
MAX_OVERRIDE_PACKS = 32
MAX_OVERRIDE_KEYS_PER_PACK = 64
MAX_OVERRIDE_BYTES = 16 * 1024

_HEALTH_STATES = ("unknown", "green", "yellow", "red")


# --------------------------------------------------------------------------- local rules


class InvalidListenAddr(SpecError):
    """``host_config.listen_addr`` is not an ``ip:port`` socket address.

    Upstream rejects it while deserializing (``SocketAddr``); our codec keeps the string, so
    the check runs here, first of all (step 0).
    """

    rule: ClassVar[str] = "InvalidListenAddr"
    template: ClassVar[str] = "listen_addr {value!r} is not a socket address (ip:port): {reason}"


class NumberOutOfRange(SpecError):
    """A ``u32`` field holds a number above 4294967295 (upstream: a deserialization error)."""

    rule: ClassVar[str] = "NumberOutOfRange"
    template: ClassVar[str] = "{path} = {value} does not fit in u32 (0..4294967295)"


class MalformedSection(SpecError):
    """A section kept as raw JSON (extensions, usage, revocation, retention, health) has the wrong shape."""

    rule: ClassVar[str] = "MalformedSection"
    template: ClassVar[str] = "{path}: {reason}"


class InvalidWorkload(SpecError):
    """A revision's ``workload`` (our own field) has a value no provider could run."""

    rule: ClassVar[str] = "InvalidWorkload"
    template: ClassVar[str] = "{path}: {reason}"


def _check_workload(workload: Any, path: str) -> None:
    def bad(reason: str) -> InvalidWorkload:
        return InvalidWorkload(path=path, reason=reason)

    if not 1 <= workload.port <= 65535:
        raise bad(f"port {workload.port} is not in 1..65535")
    if workload.replicas < 1 or workload.replicas > 10_000:
        raise bad(f"replicas {workload.replicas} is not in 1..10000")
    if not workload.health_path.startswith("/") or any(c.isspace() for c in workload.health_path):
        raise bad(f"health_path {workload.health_path[:80]!r} must start with '/' and contain no spaces")
    if workload.command is not None and (not workload.command or not workload.command[0]):
        raise bad("command must be a non-empty list whose first item names the executable")
    if workload.image is not None and (not workload.image.strip() or any(c.isspace() for c in workload.image)):
        raise bad(f"image {workload.image[:80]!r} is not an image reference")
    for key in workload.env:
        if not key or "=" in key or "\0" in key:
            raise bad(f"environment variable name {key[:80]!r} is invalid")


# --------------------------------------------------------------------------- scalar helpers


def validate_public_base_url(value: str) -> str:
    """Check an origin (upstream ``validate_public_base_url``) and return it normalised.

    The value is trimmed; it must be non-empty, contain no whitespace, use ``http`` or
    ``https``, have a host, no userinfo, a numeric port if any, no query, no fragment and a
    path that is empty or ``/``. The result is the trimmed value without a trailing ``/``.
    As upstream, the error's ``value`` is the trimmed value.
    """
    if not isinstance(value, str):
        raise InvalidPublicBaseUrl(value=repr(value), reason=f"must be a string, got {type(value).__name__}")
    text = value.strip()

    def bad(reason: str) -> InvalidPublicBaseUrl:
        return InvalidPublicBaseUrl(
            value=text,
            reason=reason,
            hint="use an origin only, e.g. https://deploy.example.com or http://[::1]:8080",
        )

    if not text:
        raise bad("must not be empty")
    if any(ch.isspace() for ch in text):
        raise bad("must not contain whitespace")
    try:
        parts = urlsplit(text)
    except ValueError:
        raise bad("is not a valid URI") from None
    if "://" not in text or parts.scheme not in ("http", "https"):
        raise bad("must start with http:// or https://")
    netloc = parts.netloc
    if not netloc:
        raise bad("must include a host")
    if "@" in netloc:
        raise bad("must not include userinfo")
    if netloc.startswith("["):
        host, sep, rest = netloc[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise bad("is not a valid URI")
        port = rest[1:] if rest else None
    else:
        host, sep, port_text = netloc.partition(":")
        port = port_text if sep else None
    if not host:
        raise bad("must include a host")
    if port is not None and (not port.isascii() or not port.isdigit() or int(port) > 65535):
        raise bad("port is not a valid number")
    if parts.query or "?" in text:
        raise bad("must not include a query string")
    if parts.fragment or "#" in text:
        raise bad("must not include a fragment")
    if parts.path not in ("", "/"):
        raise bad("must be an origin without a path")
    return text.rstrip("/")


def check_listen_addr(value: str) -> str:
    """Accept exactly what Rust's ``SocketAddr::from_str`` accepts: ``a.b.c.d:port`` or ``[v6]:port``."""

    def bad(reason: str) -> InvalidListenAddr:
        return InvalidListenAddr(
            value=value, reason=reason, hint="use ip:port, e.g. 127.0.0.1:8080 or [::1]:8080"
        )

    if not isinstance(value, str):
        raise bad(f"must be a string, got {type(value).__name__}")
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise bad("an IPv6 address needs the form [addr]:port")
        port = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise bad("missing ':port'")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv4 address (host names are not allowed)") from None
    if not port or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise bad(f"port {port!r} is not a number in 0..65535")
    return value


def check_basis_points(weights: Iterable[int], context: str, **details: Any) -> None:
    """Each weight at most 10000 (checked entry by entry first), then the sum exactly 10000.

    ``context`` names the list (``"traffic_split"``, ``"revenue_share"``); extra ``details``
    (e.g. ``deployment_id``) are passed to the error. Python ints do not wrap, and the order
    of the checks is upstream's: ``[u32::MAX, 10001]`` reports the entry, not the sum.
    """
    values = list(weights)
    for value in values:
        if value > TOTAL_BPS:
            raise BasisPointsEntryTooLarge(
                context=context, value=value, hint="a single weight is at most 10000 basis points (100%)", **details
            )
    total = sum(values)
    if total != TOTAL_BPS:
        raise BasisPointsSum(
            context=context, sum=total, hint=f"weights must add up to exactly 10000 (off by {TOTAL_BPS - total:+d})",
            **details,
        )


def _one_line(cls: type[SpecError], *, hint: str | None = None, **details: Any) -> SpecError:
    """Build ``cls`` from its template, showing raw strings that are not printable (e.g. with a
    newline) through ``repr`` so the message stays one line; ``details`` keep the raw values."""
    shown = dict(details)
    for _, field, _, conversion in Formatter().parse(cls.template):
        value = details.get(field) if field else None
        if conversion != "r" and isinstance(value, str) and not value.isprintable():
            shown[field] = repr(value)
    return cls(f"{cls.rule}: " + cls.template.format(**shown), hint=hint, **details)


def _schema(expected: str, actual: str, context: str, **details: Any) -> SchemaMismatch:
    return SchemaMismatch(
        expected=expected, actual=actual, context=context, hint=f'set "schema" to "{expected}"', **details
    )


def _env_mismatch(context: str, actual: str, expected: str, **details: Any) -> EnvIdMismatch:
    return EnvIdMismatch(
        context=context, actual=actual, expected=expected, hint=f'set env_id to "{expected}"', **details
    )


def _cross_env(context: str, uri: str, expected_env: str, actual_env: str, **details: Any) -> CrossEnvRef:
    return CrossEnvRef(
        context=context,
        uri=uri,
        expected_env=expected_env,
        actual_env=actual_env,
        hint=f"references must live under secret://{expected_env}/...",
        **details,
    )


# --------------------------------------------------------------------------- raw JSON sections


class _Reader:
    """Typed access to one raw JSON object; every problem is ``fail(reason)`` (a SpecError)."""

    __slots__ = ("obj", "path", "fail")

    def __init__(self, obj: Any, path: str, fail: Callable[[str], SpecError]) -> None:
        if not isinstance(obj, Mapping):
            raise fail(f"must be a JSON object, got {type(obj).__name__}")
        self.obj = obj
        self.path = path
        self.fail = fail

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.obj:
            if required:
                raise self.fail(f"missing required key {key!r}")
            return None
        return self.obj[key]

    def string(self, key: str, *, required: bool = True) -> str | None:
        value = self._get(key, required)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise self.fail(f"{key} must be a string, got {type(value).__name__}")
        return value

    def strings(self, key: str) -> list[str]:
        """A list of strings that defaults to ``[]`` when the key is absent."""
        value = self._get(key, False)
        if key not in self.obj:
            return []
        if not isinstance(value, list):
            raise self.fail(f"{key} must be a JSON array, got {type(value).__name__}")
        for item in value:
            if not isinstance(item, str):
                raise self.fail(f"{key} must hold strings, found {type(item).__name__}")
        return value

    def number(self, key: str, *, bits: int = 64, required: bool = False, default: int | None = 0) -> int | None:
        value = self._get(key, required)
        if key not in self.obj or (value is None and default is None):
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(f"{key} must be a whole number, got {type(value).__name__}")
        if value < 0:
            raise self.fail(f"{key} must not be negative")
        if value > 2**bits - 1:
            if bits == 32:
                raise NumberOutOfRange(path=f"{self.path}.{key}", value=value)
            raise self.fail(f"{key} is above 2^{bits}-1")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.obj:
            return default
        value = self.obj[key]
        if not isinstance(value, bool):
            raise self.fail(f"{key} must be true or false, got {type(value).__name__}")
        return value

    def timestamp(self, key: str, *, required: bool = True) -> None:
        value = self._get(key, required)
        if value is None and not required:
            return
        try:
            parse_timestamp(value)
        except SpecError as exc:
            raise self.fail(f"{key}: {exc}") from None

    def formatted(self, key: str, parse: Callable[[Any], Any], *, required: bool = True) -> Any:
        value = self._get(key, required)
        if value is None and not required:
            return None
        try:
            return parse(value)
        except SpecFormatError as exc:
            raise self.fail(f"{key}: {exc}") from None


class _Ref(NamedTuple):
    uri: str
    env: str


class _Endpoint(NamedTuple):
    schema: str
    env_id: str
    endpoint_id: str
    provider_id: str
    provider_type: str
    secret_refs: list[_Ref]
    webhook_secret_ref: _Ref | None
    linked_bundles: list[str]
    welcome_flow: tuple[str, str, str] | None  # (bundle_id, pack_id, flow_id)


class _Extension(NamedTuple):
    path: str
    instance_id: str | None


def _secret_ref(value: Any) -> _Ref:
    return _Ref(value, ids.secret_ref_env(value))


def _parse_endpoint(index: int, raw: Any) -> _Endpoint:
    label = f"#{index}"
    if isinstance(raw, Mapping):
        try:
            label = ids.parse_ulid(raw.get("endpoint_id"))
        except SpecFormatError:
            pass
    path = f"messaging_endpoints[{index}]"

    def fail(reason: str) -> SpecError:
        return MessagingEndpointInvalid(endpoint_id=label, reason=reason, path=path, problem="Malformed")

    r = _Reader(raw, path, fail)
    schema = r.string("schema")
    env_id = r.formatted("env_id", ids.parse_env_id)
    endpoint_id = r.formatted("endpoint_id", lambda v: ids.parse_ulid(v, "MessagingEndpointId"))
    provider_id = r.string("provider_id")
    provider_type = r.string("provider_type")
    r.string("display_name")
    secret_refs = []
    for ref in r.strings("secret_refs"):
        try:
            secret_refs.append(_secret_ref(ref))
        except SpecFormatError as exc:
            raise fail(f"secret_refs: {exc}") from None
    webhook = r.formatted("webhook_secret_ref", _secret_ref, required=False)
    linked = r.strings("linked_bundles")
    welcome = None
    if raw.get("welcome_flow") is not None:
        w = _Reader(raw["welcome_flow"], f"{path}.welcome_flow", lambda reason: fail(f"welcome_flow: {reason}"))
        welcome = (w.string("bundle_id"), w.string("pack_id"), w.string("flow_id"))
    r.number("generation")
    r.timestamp("created_at")
    r.timestamp("updated_at")
    r.string("updated_by")
    return _Endpoint(
        schema, env_id, endpoint_id, provider_id, provider_type, secret_refs, webhook, linked, welcome  # type: ignore[arg-type]
    )


def _parse_extension(index: int, raw: Any) -> _Extension:
    path = f"extensions[{index}]"

    def fail(reason: str) -> SpecError:
        return MalformedSection(path=path, reason=reason, hint="see docs/spec.md, 'extensions'")

    r = _Reader(raw, path, fail)
    kind: ids.PackDescriptor = r.formatted("kind", ids.PackDescriptor.parse)
    r.string("pack_ref")
    instance = r.string("instance_id", required=False)
    r.string("answers_ref", required=False)
    r.number("generation")
    r.string("previous_binding_ref", required=False)
    return _Extension(kind.path, instance)


def _check_config_overrides_shape(bundle: BundleDeployment, path: str) -> None:
    for pack_id, keys in bundle.config_overrides.items():
        if not isinstance(keys, Mapping):
            raise ConfigOverridesInvalid(
                deployment=bundle.deployment_id,
                reason=f"overrides of pack {pack_id!r} must be a JSON object, got {type(keys).__name__}",
                path=f"{path}.config_overrides",
                problem="Malformed",
            )


def _check_raw_sections(env: Environment) -> None:
    if env.revocation is not None:
        r = _Reader(env.revocation, "revocation", lambda reason: MalformedSection(path="revocation", reason=reason))
        r.boolean("required", False)
        r.string("list_ref", required=False)
    r = _Reader(env.retention, "retention", lambda reason: MalformedSection(path="retention", reason=reason))
    r.number("keep_revisions", bits=32, default=None)
    r.number("audit_retention_days", bits=32, default=None)
    r = _Reader(env.health, "health", lambda reason: MalformedSection(path="health", reason=reason))
    state = r.string("state", required=False)
    if state is not None and state not in _HEALTH_STATES:
        raise MalformedSection(path="health", reason=f"state {state!r} is not one of {', '.join(_HEALTH_STATES)}")
    r.string("message", required=False)
    r.timestamp("last_checked_at", required=False)


# --------------------------------------------------------------------------- the rules


def validated(env: Environment) -> Environment:
    """``env`` itself once it passes :func:`validate_environment` (for engines returning new values)."""
    validate_environment(env)
    return env


def validate_environment(env: Environment) -> None:
    """Raise the first :class:`~greentic_core.errors.SpecError` the environment breaks."""
    env_id = env.environment_id

    # ---- 0. decode-level rules the codec leaves to validation
    host = env.host_config
    if host.listen_addr is not None:
        check_listen_addr(host.listen_addr)
    credentials_env = (
        _format_only(lambda: ids.secret_ref_env(env.credentials_ref), "credentials_ref")
        if env.credentials_ref is not None
        else None
    )
    for i, revision in enumerate(env.revisions):
        if revision.drain_seconds > U32_MAX:
            raise NumberOutOfRange(path=f"revisions[{i}].drain_seconds", value=revision.drain_seconds)
        if revision.workload is not None:
            _check_workload(revision.workload, f"revisions[{i}].workload")
    for i, bundle in enumerate(env.bundles):
        for j, share in enumerate(bundle.revenue_share):
            if share.basis_points > U32_MAX:
                raise NumberOutOfRange(path=f"bundles[{i}].revenue_share[{j}].basis_points", value=share.basis_points)
        _check_config_overrides_shape(bundle, f"bundles[{i}]")
        if bundle.usage is not None:
            u = _Reader(bundle.usage, f"bundles[{i}].usage", lambda reason, i=i: MalformedSection(
                path=f"bundles[{i}].usage", reason=reason))
            u.string("meter_endpoint")
            u.timestamp("last_seen_at", required=False)
    for i, split in enumerate(env.traffic_splits):
        for j, entry in enumerate(split.entries):
            if entry.weight_bps > U32_MAX:
                raise NumberOutOfRange(path=f"traffic_splits[{i}].entries[{j}].weight_bps", value=entry.weight_bps)
    _check_raw_sections(env)
    endpoints = [_parse_endpoint(i, raw) for i, raw in enumerate(env.messaging_endpoints)]
    extensions = [_parse_extension(i, raw) for i, raw in enumerate(env.extensions)]

    # ---- 1. environment schema
    if env.schema != ENVIRONMENT_V1:
        raise _schema(ENVIRONMENT_V1, env.schema, "environment")

    # ---- 2. host_config env_id
    if host.env_id != env_id:
        raise _env_mismatch("host_config", host.env_id, env_id)

    # ---- 3. public_base_url
    if host.public_base_url is not None:
        validate_public_base_url(host.public_base_url)

    # ---- 4. one binding per capability slot
    seen_slots: set[str] = set()
    for binding in env.packs:
        slot = binding.slot.value
        if slot in seen_slots:
            raise DuplicateCapabilitySlot(
                slot=slot, hint=f"keep one {slot!r} binding in packs (N-per-env packs go in extensions)"
            )
        seen_slots.add(slot)

    # ---- 5. credentials_ref scoped to this env
    if credentials_env is not None and credentials_env != env_id:
        raise _cross_env("credentials_ref", env.credentials_ref or "", env_id, credentials_env)

    # ---- 6. revisions (+ closed gaps: unique revision id, unique sequence per deployment)
    revisions_by_id: dict[str, Revision] = {}
    sequence_owner: dict[tuple[str, int], str] = {}
    live_packs: dict[str, set[str]] = {}  # deployment id -> pack ids of its non-archived revisions
    for revision in env.revisions:
        rid = revision.revision_id
        if revision.schema != REVISION_V1:
            raise _schema(REVISION_V1, revision.schema, "revision", revision_id=rid)
        if revision.env_id != env_id:
            raise _env_mismatch("revision", revision.env_id, env_id, revision_id=rid)
        if rid in revisions_by_id:
            raise DuplicateRevisionId(
                revision_id=rid, hint="every revision needs its own id; remove or re-stage the copy"
            )
        revisions_by_id[rid] = revision
        key = (revision.deployment_id, revision.sequence)
        if key in sequence_owner:
            raise DuplicateSequence(
                deployment_id=revision.deployment_id,
                sequence=revision.sequence,
                revisions=[sequence_owner[key], rid],
                hint="sequence counts up within a deployment; give the later revision the next number",
            )
        sequence_owner[key] = rid
        if revision.lifecycle != Lifecycle.ARCHIVED:
            packs = live_packs.setdefault(revision.deployment_id, set())
            for pack in revision.pack_list:
                packs.add(pack.pack_id)

    # ---- 7. bundle deployments (+ closed gap: unique deployment id)
    bundles_by_id: dict[str, BundleDeployment] = {}
    for bundle in env.bundles:
        did = bundle.deployment_id
        if bundle.env_id != env_id:
            raise _env_mismatch("bundle_deployment", bundle.env_id, env_id, deployment_id=did)
        if did in bundles_by_id:
            raise DuplicateDeploymentId(
                deployment_id=did, hint="every deployment needs its own deployment_id; remove the copy"
            )
        bundles_by_id[did] = bundle
        # 7b. the bundle's own validate()
        if bundle.schema != BUNDLE_DEPLOYMENT_V1:
            raise _schema(BUNDLE_DEPLOYMENT_V1, bundle.schema, "bundle_deployment", deployment_id=did)
        check_basis_points((s.basis_points for s in bundle.revenue_share), "revenue_share", deployment_id=did)
        _check_config_override_limits(bundle)
        # 7c. current_revisions
        for rid in bundle.current_revisions:
            revision = revisions_by_id.get(rid)
            if revision is None:
                raise UnknownRevision(
                    context="bundle_deployment.current_revisions",
                    revision_id=rid,
                    deployment_id=did,
                    hint="remove the id from current_revisions or stage that revision",
                )
            if revision.deployment_id != did:
                raise BundleRevisionWrongDeployment(
                    deployment=did, revision=rid, actual_deployment=revision.deployment_id
                )
            if revision.bundle_id != bundle.bundle_id:
                raise BundleRevisionWrongBundle(
                    deployment=did, revision=rid, expected_bundle=bundle.bundle_id, actual_bundle=revision.bundle_id
                )
        # 7d. config_overrides against the packs of the deployment's non-archived revisions
        if bundle.config_overrides:
            known = live_packs.get(did)
            if known:
                for pack_id in bundle.config_overrides:
                    if pack_id not in known:
                        raise ConfigOverridePackNotInRevisions(
                            deployment=did,
                            pack_id=pack_id,
                            hint=f"known packs: {', '.join(sorted(known)[:10])}",
                        )

    # ---- 8. traffic splits (+ closed gaps: one split per deployment, a revision once per split)
    split_seen: set[str] = set()
    for split in env.traffic_splits:
        did = split.deployment_id
        if split.env_id != env_id:
            raise _env_mismatch("traffic_split", split.env_id, env_id, deployment_id=did)
        if split.schema != TRAFFIC_SPLIT_V1:
            raise _schema(TRAFFIC_SPLIT_V1, split.schema, "traffic_split", deployment_id=did)
        check_basis_points((e.weight_bps for e in split.entries), "traffic_split", deployment_id=did)
        bundle = bundles_by_id.get(did)
        if bundle is None:
            raise UnknownDeployment(deployment_id=did, hint="add the deployment to bundles or remove the split")
        if bundle.bundle_id != split.bundle_id:
            raise SplitDeploymentBundleMismatch(
                deployment=did, split_bundle=split.bundle_id, deployment_bundle=bundle.bundle_id
            )
        if did in split_seen:
            raise DuplicateSplit(deployment_id=did, hint="keep a single traffic split per deployment")
        split_seen.add(did)
        in_split: set[str] = set()
        for entry in split.entries:
            rid = entry.revision_id
            revision = revisions_by_id.get(rid)
            if revision is None:
                raise UnknownRevision(context="traffic_split", revision_id=rid, deployment_id=did)
            if revision.deployment_id != did:
                raise SplitRevisionWrongDeployment(
                    revision=rid, expected_deployment=did, actual_deployment=revision.deployment_id
                )
            if revision.bundle_id != split.bundle_id:
                raise SplitRevisionWrongBundle(
                    revision=rid, expected_bundle=split.bundle_id, actual_bundle=revision.bundle_id
                )
            if rid in in_split:
                raise DuplicateSplitEntry(
                    deployment_id=did, revision_id=rid, hint="merge the two entries into one weight"
                )
            in_split.add(rid)

    # ---- 9. messaging endpoints
    bundle_ids = {b.bundle_id for b in env.bundles}
    endpoint_ids: set[str] = set()
    provider_instances: set[tuple[str, str]] = set()
    for ep in endpoints:
        _validate_endpoint_self(ep)
        if ep.env_id != env_id:
            raise _env_mismatch("messaging_endpoint", ep.env_id, env_id, endpoint_id=ep.endpoint_id)
        if ep.endpoint_id in endpoint_ids:
            raise DuplicateMessagingEndpoint(endpoint_id=ep.endpoint_id)
        endpoint_ids.add(ep.endpoint_id)
        instance = (ep.provider_type, ep.provider_id)
        if instance in provider_instances:
            raise _one_line(
                DuplicateProviderInstance,
                provider_type=ep.provider_type,
                provider_id=ep.provider_id,
                endpoint_id=ep.endpoint_id,
                hint="give each endpoint of one provider type its own provider_id",
            )
        provider_instances.add(instance)
        for bundle_id in ep.linked_bundles:
            if bundle_id not in bundle_ids:
                raise MessagingEndpointBundleNotLinked(endpoint_id=ep.endpoint_id, bundle_id=bundle_id)
        if ep.welcome_flow is not None and ep.welcome_flow[0] not in ep.linked_bundles:
            raise WelcomeFlowBundleNotLinked(
                endpoint_id=ep.endpoint_id,
                bundle_id=ep.welcome_flow[0],
                hint="add the welcome flow's bundle to linked_bundles",
            )

    # ---- 10. extensions
    identities: set[tuple[str, str | None]] = set()
    for ext in extensions:
        if ext.instance_id is not None:
            reason = ids.check_instance_id(ext.instance_id)
            if reason is not None:
                raise InvalidExtensionInstanceId(
                    path=ext.path, reason=reason, instance_id=ext.instance_id, hint="use only a-z, 0-9 and -"
                )
        identity = (ext.path, ext.instance_id)
        if identity in identities:
            raise DuplicateExtension(
                path=ext.path, instance_id=ext.instance_id, hint="give the second binding a distinct instance_id"
            )
        identities.add(identity)


def _format_only(parse: Callable[[], str], context: str) -> str:
    try:
        return parse()
    except SpecFormatError as exc:
        prefix = f"{exc.format_rule}: "
        body = exc.message[len(prefix):] if exc.message.startswith(prefix) else exc.message
        raise SpecFormatError(exc.format_rule, f"{context}: {body}", context=context) from None


def _check_config_override_limits(bundle: BundleDeployment) -> None:
    overrides = bundle.config_overrides
    did = bundle.deployment_id

    def bad(problem: str, reason: str, **details: Any) -> ConfigOverridesInvalid:
        return ConfigOverridesInvalid(deployment=did, reason=reason, problem=problem, **details)

    if len(overrides) > MAX_OVERRIDE_PACKS:
        raise bad("ConfigOverridesTooManyPacks", f"{len(overrides)} packs, at most {MAX_OVERRIDE_PACKS}",
                  count=len(overrides), limit=MAX_OVERRIDE_PACKS)
    for pack_id, keys in overrides.items():
        if not pack_id:
            raise bad("ConfigOverrideEmptyPackId", "pack id must not be empty")
        if len(keys) > MAX_OVERRIDE_KEYS_PER_PACK:
            raise bad("ConfigOverridesTooManyKeysForPack",
                      f"pack {pack_id!r} has {len(keys)} keys, at most {MAX_OVERRIDE_KEYS_PER_PACK}",
                      pack_id=pack_id, count=len(keys), limit=MAX_OVERRIDE_KEYS_PER_PACK)
        for key in keys:
            if not key:
                raise bad("ConfigOverrideEmptyKey", f"pack {pack_id!r} has an empty key", pack_id=pack_id)
    size = len(json.dumps(overrides, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_OVERRIDE_BYTES:
        raise bad("ConfigOverridesTooLarge", f"{size} bytes serialized, at most {MAX_OVERRIDE_BYTES}",
                  size=size, limit=MAX_OVERRIDE_BYTES)


def _validate_endpoint_self(ep: _Endpoint) -> None:
    """Upstream ``MessagingEndpoint::validate()``, in its order.

    Like upstream it compares the references with the endpoint's *own* ``env_id``; the
    comparison with ``environment_id`` follows (EnvIdMismatch), so a consistently wrong
    endpoint reports the env mismatch.
    """

    def bad(problem: str, reason: str) -> MessagingEndpointInvalid:
        return MessagingEndpointInvalid(endpoint_id=ep.endpoint_id, reason=reason, problem=problem)

    if ep.schema != MESSAGING_ENDPOINT_V1:
        raise _schema(MESSAGING_ENDPOINT_V1, ep.schema, "messaging_endpoint", endpoint_id=ep.endpoint_id)
    if not ep.provider_id.strip():
        raise bad("EmptyMessagingProviderId", "provider_id must not be blank")
    if not ep.provider_type.strip():
        raise bad("EmptyMessagingProviderType", "provider_type must not be blank")
    for ref in ep.secret_refs:
        if ref.env != ep.env_id:
            raise _cross_env(
                "messaging_endpoint.secret_refs", ref.uri, ep.env_id, ref.env, endpoint_id=ep.endpoint_id
            )
    if ep.welcome_flow is not None and not ep.welcome_flow[2].strip():
        raise bad("EmptyWelcomeFlowId", "welcome_flow.flow_id must not be blank")
    if ep.webhook_secret_ref is not None and ep.webhook_secret_ref.env != ep.env_id:
        raise _cross_env(
            "messaging_endpoint.webhook_secret_ref",
            ep.webhook_secret_ref.uri,
            ep.env_id,
            ep.webhook_secret_ref.env,
            endpoint_id=ep.endpoint_id,
        )


# --------------------------------------------------------------------------- lookups


def extension_for_ref(env: Environment, ref: str) -> dict[str, Any] | None:
    """The extension binding an ``ext://<descriptor-path>[/<instance>]`` reference names, or None.

    ``ext://p`` selects the binding of path ``p`` with no instance; ``ext://p/primary`` the
    one whose ``instance_id`` is ``primary``. A malformed reference raises SpecFormatError.
    """
    scheme = "ext://"
    if not isinstance(ref, str) or not ref.startswith(scheme):
        raise SpecFormatError("MissingScheme", f"reference {str(ref)[:80]!r} must start with {scheme!r}")
    rest = ref[len(scheme):]
    path, sep, instance = rest.partition("/")
    ids.check_descriptor_path(path)
    wanted: str | None = None
    if sep:
        bad = next((c for c in instance if not (c.isascii() and (c.islower() or c.isdigit() or c == "-"))), None)
        if not instance:
            raise SpecFormatError("EmptyInstance", f"reference {ref!r} has an empty instance")
        if bad is not None:
            raise SpecFormatError("InvalidInstanceChar", f"reference {ref!r} has invalid instance character {bad!r}")
        wanted = instance
    for raw in env.extensions:
        kind = raw.get("kind") if isinstance(raw, Mapping) else None
        if not isinstance(kind, str) or kind.partition("@")[0] != path:
            continue
        if raw.get("instance_id") == wanted:
            return raw
    return None

