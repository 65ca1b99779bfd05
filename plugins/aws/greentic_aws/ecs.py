"""The provider work: ECS services, task definitions and task sets, ALB forward actions, target groups.

Model (the upstream EXTERNAL-controller design, with its gaps closed):

* one ECS service per deployment (``gtc-<env>-<deployment>``), deployment controller
  ``EXTERNAL``, created once with a deterministic client token;
* per revision a task definition (family ``gtc-<env>-<revision>``) and a task set
  (``externalId = gtc-rev-<revision>``) bound to one target group of the answers' pool;
* a target group is *claimed* for a revision by the tag ``greentic:claim = env/deployment/revision``
  before its task set is created, so no other deployment, revision or environment takes it;
* one weighted forward action per deployment: the listener's default action, or a listener
  rule found by its host/path conditions and owned through its tags.

Every call goes through :func:`aws` (or :func:`pages` for the ones that paginate), which turns
botocore errors into one-line :class:`ProviderError` s naming the call. Nothing is modified
that lacks our ownership tags.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import attrs
import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from greentic_core import (
    Environment,
    ProviderError,
    ProviderTimeout,
    Revision,
    RevisionObservation,
    DeploymentObservation,
    Observation,
    PreflightCheck,
    CheckStatus,
)

from . import __version__
from .answers import Answers
from .rules import MAX_PRIORITY, choose_priority
from .weights import MAX_TARGET_GROUPS_PER_ACTION, Conversion, to_alb_weights, to_basis_points

MANAGED_BY_KEY = "greentic:managed-by"
MANAGED_BY = "greentic-deployer"
TAG_ENV = "greentic:env"
TAG_DEPLOYMENT = "greentic:deployment"
TAG_REVISION = "greentic:revision"
#: Put on a pool target group while a revision holds it: ``<env>/<deployment>/<revision>``.
TAG_CLAIM = "greentic:claim"
EXTERNAL_ID_PREFIX = "gtc-rev-"
#: Page size of the ELBv2 describe calls that paginate (the API maximum; tests lower it).
PAGE_SIZE = 400
#: DescribeTags / AddTags / RemoveTags take at most 20 resource ARNs.
TAG_BATCH = 20
#: ECS DescribeServices takes at most 10 services.
SERVICE_BATCH = 10
_TOKEN_NAMESPACE = uuid.UUID("6b1f7f34-3f1c-4d0a-9a4e-9a7d2f0c5e11")

IMAGE_PATTERN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)

Progress = Callable[[str], None]

#: Called with every new botocore client (the tests and the benchmark count calls with a
#: ``before-call`` handler). Clients are cached per endpoint and credentials.
client_hooks: list[Callable[[Any], None]] = []


# --------------------------------------------------------------------------- names


def env_label(env_id: str) -> str:
    """``env_id`` as a name part (ECS names allow letters, digits, '-' and '_'), unique per env."""
    clean = re.sub(r"[^A-Za-z0-9_-]", "-", env_id)
    if clean == env_id and len(clean) <= 40:
        return clean
    return f"{clean[:31]}-{hashlib.sha256(env_id.encode()).hexdigest()[:8]}"


def service_name(env_id: str, deployment_id: str) -> str:
    return f"gtc-{env_label(env_id)}-{deployment_id}"


def task_family(env_id: str, revision_id: str) -> str:
    return f"gtc-{env_label(env_id)}-{revision_id}"


def external_id(revision_id: str) -> str:
    return f"{EXTERNAL_ID_PREFIX}{revision_id}"


def client_token(*parts: str) -> str:
    """A deterministic idempotency token (36 characters, the ECS maximum)."""
    return str(uuid.uuid5(_TOKEN_NAMESPACE, "/".join(parts)))


def env_tag(env_id: str) -> str:
    """``env_id`` as written in tag values: itself up to 200 characters, else a prefix plus a hash.

    Tag values hold at most 256 characters, and the claim tag holds the env id plus two
    26-character ids: 200 keeps every tag within the limit, as names are kept within theirs.
    """
    if len(env_id) <= 200:
        return env_id
    return f"{env_id[:182]}-{hashlib.sha256(env_id.encode()).hexdigest()[:17]}"  # "-": tag values allow no "~"


def claim_value(env_id: str, deployment_id: str, revision_id: str) -> str:
    return f"{env_tag(env_id)}/{deployment_id}/{revision_id}"


def claim_owner(holder: str | None) -> list[str]:
    """``[env tag, deployment id]`` of a claim tag value."""
    return (holder or "").split("/")[:2]


def ownership(env_id: str, deployment_id: str, revision_id: str | None = None) -> dict[str, str]:
    tags = {MANAGED_BY_KEY: MANAGED_BY, TAG_ENV: env_tag(env_id), TAG_DEPLOYMENT: deployment_id}
    if revision_id:
        tags[TAG_REVISION] = revision_id
    return tags


def ecs_tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags.items()]


def elb_tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_map(tags: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for tag in tags or ():
        key = tag.get("key", tag.get("Key"))
        if key is not None:
            out[key] = tag.get("value", tag.get("Value", ""))
    return out


def owned_by(tags: Mapping[str, str], env_id: str, deployment_id: str) -> bool:
    return (tags.get(MANAGED_BY_KEY) == MANAGED_BY and tags.get(TAG_ENV) == env_tag(env_id)
            and tags.get(TAG_DEPLOYMENT) == deployment_id)


def check_image(image: str | None, revision_id: str) -> str:
    if not image:
        raise ProviderError(
            f"revision {revision_id} has no container image",
            hint="set the revision's workload.image, or the answer default_image")
    if len(image) > 1024 or not IMAGE_PATTERN.match(image):
        raise ProviderError(f"revision {revision_id}: {image[:200]!r} is not a valid image reference",
                            hint="use REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST], e.g. "
                                 "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop:1.4.2")
    return image


# --------------------------------------------------------------------------- clients and calls


@attrs.frozen
class Clients:
    ecs: Any
    elbv2: Any


_clients: dict[tuple, Clients] = {}
_clients_lock = threading.Lock()


def connect(answers: Answers) -> Clients:
    """The ECS and ELBv2 clients for these answers (cached: creating a client costs ~50 ms)."""
    key = (answers.region, answers.endpoint_url, answers.access_key_id, answers.secret_access_key,
           answers.session_token)
    with _clients_lock:
        found = _clients.get(key)
        if found is not None:
            return found
        session = boto3.session.Session(
            aws_access_key_id=answers.access_key_id, aws_secret_access_key=answers.secret_access_key,
            aws_session_token=answers.session_token, region_name=answers.region)
        local = bool(answers.endpoint_url)
        config = Config(
            region_name=answers.region, user_agent_extra=f"greentic-deployer-aws/{__version__}",
            retries={"mode": "standard", "max_attempts": 2 if local else 6},
            connect_timeout=5, read_timeout=30 if local else 60)
        made = Clients(
            ecs=session.client("ecs", endpoint_url=answers.endpoint_url, config=config),
            elbv2=session.client("elbv2", endpoint_url=answers.endpoint_url, config=config))
        for hook in list(client_hooks):
            hook(made.ecs)
            hook(made.elbv2)
        _clients[key] = made
        return made


def clear_client_cache() -> None:
    with _clients_lock:
        _clients.clear()


def _op_name(client: Any, method: str) -> str:
    service = client.meta.service_model.service_name
    return f"{service} {client.meta.method_to_api_mapping.get(method, method)}"


def _error(client: Any, method: str, exc: Exception) -> ProviderError:
    op = _op_name(client, method)
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code, message = err.get("Code", "Unknown"), err.get("Message", str(exc))
        hint = None
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            hint = "grant the IAM permissions listed in the greentic-deployer-aws README"
        elif code in ("ThrottlingException", "Throttling"):
            hint = "AWS throttled the calls; retry in a moment"
        return ProviderError(f"{op} failed: {code}: {message}", hint=hint, call=op, code=code)
    if isinstance(exc, NoCredentialsError):
        return ProviderError(f"{op} failed: no AWS credentials found", call=op,
                             hint="configure the AWS credential chain (or set access_key_id/secret_access_key "
                                  "for a local endpoint)")
    return ProviderError(f"{op} failed: {exc}", call=op,
                         hint="check the network path to AWS (and endpoint_url, if set)")


def error_code(exc: BaseException) -> str | None:
    cause = exc.__cause__ if isinstance(exc, ProviderError) else exc
    if isinstance(cause, ClientError):
        return cause.response.get("Error", {}).get("Code")
    return None


def aws(client: Any, method: str, *, allow: Sequence[str] = (), **kwargs: Any) -> Any:
    """Call ``client.method(**kwargs)``; an error code in ``allow`` returns ``None``."""
    try:
        return getattr(client, method)(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in allow:
            return None
        raise _error(client, method, exc) from exc
    except BotoCoreError as exc:
        raise _error(client, method, exc) from exc


def pages(client: Any, method: str, key: str, *, allow: Sequence[str] = (), **kwargs: Any) -> Iterator[Any]:
    """Every item under ``key`` of every page of a paginated call (an error code in ``allow``: no items)."""
    try:
        for page in client.get_paginator(method).paginate(**kwargs):
            yield from page.get(key, [])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in allow:
            return
        raise _error(client, method, exc) from exc
    except BotoCoreError as exc:
        raise _error(client, method, exc) from exc


def batched(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


# --------------------------------------------------------------------------- listener helpers


def _condition_key(conditions: Iterable[Mapping[str, Any]]) -> frozenset:
    out = set()
    for cond in conditions:
        field = cond.get("Field")
        if field == "host-header":
            values = cond.get("HostHeaderConfig", {}).get("Values") or cond.get("Values") or []
            values = [v.lower() for v in values]
        elif field == "path-pattern":
            values = cond.get("PathPatternConfig", {}).get("Values") or cond.get("Values") or []
        else:
            values = cond.get("Values") or [repr(sorted(cond.items()))]
        out.add((field, frozenset(values)))
    return frozenset(out)


def forward_targets(actions: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """``[(target group ARN, weight)]`` of the forward action in ``actions`` (empty: none)."""
    for action in actions or ():
        if action.get("Type") != "forward":
            continue
        groups = (action.get("ForwardConfig") or {}).get("TargetGroups")
        if groups:
            return [(g["TargetGroupArn"], int(g.get("Weight", 1))) for g in groups]
        if action.get("TargetGroupArn"):
            return [(action["TargetGroupArn"], 1)]
    return []


def forward_action(targets: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{
        "Type": "forward",
        "ForwardConfig": {
            "TargetGroups": [{"TargetGroupArn": arn, "Weight": weight} for arn, weight in targets],
            "TargetGroupStickinessConfig": {"Enabled": False},
        },
    }]


NO_DEPLOYMENT_ACTION = [{
    "Type": "fixed-response",
    "FixedResponseConfig": {"StatusCode": "503", "ContentType": "text/plain",
                            "MessageBody": "no greentic revision is routed here"},
}]


@attrs.define
class Route:
    """Where a deployment's forward action lives on the listener."""

    kind: str  # "default" | "rule" | "none" (rule mode, no rule yet)
    arn: str | None
    actions: list[dict[str, Any]]
    conditions: list[dict[str, Any]] = attrs.field(factory=list)
    rules: list[dict[str, Any]] = attrs.field(factory=list)
    #: Our other rules with the same conditions, behind this one (a resent CreateRule left them).
    duplicates: list[str] = attrs.field(factory=list)

    @property
    def targets(self) -> list[tuple[str, int]]:
        return forward_targets(self.actions)


# --------------------------------------------------------------------------- the provider


class EcsProvider:
    """One environment's view of ECS + ELBv2 for one verb call."""

    def __init__(self, answers: Answers, env: Environment, clients: Clients | None = None,
                 progress: Progress | None = None) -> None:
        self.answers = answers
        self.env = env
        self.env_id = env.environment_id
        self._clients = clients
        self.progress = progress or (lambda message: None)

    @property
    def clients(self) -> Clients:
        """Connected on first use, so the request builders (render) never create a client."""
        if self._clients is None:
            self._clients = connect(self.answers)
        return self._clients

    @property
    def ecs(self) -> Any:
        return self.clients.ecs

    @property
    def elb(self) -> Any:
        return self.clients.elbv2

    # -- lookups ------------------------------------------------------------------------

    def revision(self, revision_id: str) -> Revision:
        found = self.env.revision(revision_id)
        assert found is not None, "the core checks that the revision exists"
        return found

    def bundle_of(self, deployment_id: str) -> str:
        found = self.env.deployment(deployment_id)
        if found is not None:
            return found.bundle_id
        rev = next((r for r in self.env.revisions if r.deployment_id == deployment_id), None)
        return rev.bundle_id if rev else deployment_id

    def image(self, revision: Revision) -> str:
        image = revision.workload.image if revision.workload else None
        image = image or self.answers.image_for(
            env_id=self.env_id, deployment_id=revision.deployment_id, bundle_id=revision.bundle_id,
            revision_id=revision.revision_id)
        return check_image(image, revision.revision_id)

    def services(self, deployment_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The ACTIVE services of these deployments (others absent); a foreign one is an error."""
        names = {service_name(self.env_id, d): d for d in deployment_ids}
        found: dict[str, dict[str, Any]] = {}
        for batch in batched(list(names), SERVICE_BATCH):
            resp = aws(self.ecs, "describe_services", cluster=self.answers.cluster, services=batch, include=["TAGS"])
            for svc in resp.get("services", []):
                deployment_id = names.get(svc["serviceName"])
                if deployment_id is None or svc.get("status") != "ACTIVE":
                    if deployment_id is not None and svc.get("status") == "DRAINING":
                        found[deployment_id] = svc
                    continue
                if not owned_by(tag_map(svc.get("tags")), self.env_id, deployment_id):
                    raise ProviderError(
                        f"ECS service {svc['serviceName']} in cluster {self.answers.cluster} exists without "
                        f"the greentic ownership tags of env {self.env_id!r}; refusing to touch it",
                        hint="delete or rename that service, or use another cluster",
                        service=svc.get("serviceArn"))
                found[deployment_id] = svc
        return found

    def service(self, deployment_id: str) -> dict[str, Any] | None:
        svc = self.services([deployment_id]).get(deployment_id)
        return svc if svc and svc.get("status") == "ACTIVE" else None

    def task_sets(self, service: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Our task sets of ``service`` by revision id (task sets being deleted are left out)."""
        resp = aws(self.ecs, "describe_task_sets", cluster=self.answers.cluster, service=service["serviceArn"],
                   allow=("ServiceNotFoundException",))
        out: dict[str, dict[str, Any]] = {}
        for ts in (resp or {}).get("taskSets", []):
            ext = ts.get("externalId") or ""
            if ext.startswith(EXTERNAL_ID_PREFIX) and ts.get("status") in ("ACTIVE", "PRIMARY", None):
                out[ext[len(EXTERNAL_ID_PREFIX):]] = ts
        return out

    @staticmethod
    def bound_target_group(task_set: Mapping[str, Any]) -> str | None:
        for lb in task_set.get("loadBalancers") or ():
            if lb.get("targetGroupArn"):
                return lb["targetGroupArn"]
        return None

    def tags_of(self, arns: Sequence[str]) -> dict[str, dict[str, str]]:
        """ELBv2 tags of rules / target groups (batches of 20)."""
        out: dict[str, dict[str, str]] = {}
        for batch in batched(list(dict.fromkeys(arns)), TAG_BATCH):
            resp = aws(self.elb, "describe_tags", ResourceArns=batch)
            for item in resp.get("TagDescriptions", []):
                out[item["ResourceArn"]] = tag_map(item.get("Tags"))
        return out

    def route(self, deployment_id: str, *, rules: list[dict[str, Any]] | None = None) -> Route:
        """The deployment's forward action on the listener; an unowned rule is an error."""
        if not self.answers.uses_rule:
            listener = self.listener()
            return Route(kind="default", arn=listener["ListenerArn"], actions=listener.get("DefaultActions", []))
        conditions = self.answers.conditions(env_id=self.env_id, deployment_id=deployment_id,
                                             bundle_id=self.bundle_of(deployment_id))
        if rules is None:
            rules = self.rules()
        key = _condition_key(conditions)
        matches = sorted((r for r in rules if not r.get("IsDefault") and _condition_key(r.get("Conditions", [])) == key),
                         key=lambda r: int(r["Priority"]) if str(r.get("Priority", "")).isdigit() else MAX_PRIORITY + 1)
        if not matches:
            return Route(kind="none", arn=None, actions=[], conditions=conditions, rules=rules)
        all_tags = self.tags_of([r["RuleArn"] for r in matches])
        # any rule with our conditions that is not ours: refuse (we would share the match with it)
        match = next((r for r in matches if not owned_by(all_tags.get(r["RuleArn"], {}), self.env_id,
                                                         deployment_id)), matches[0])
        tags = all_tags.get(match["RuleArn"], {})
        duplicates = [r["RuleArn"] for r in matches[1:]]  # ours, behind the one the ALB evaluates first
        if not owned_by(tags, self.env_id, deployment_id):
            raise ProviderError(
                f"listener rule {match['RuleArn']} (conditions {_describe_conditions(conditions)}) exists "
                f"without the greentic ownership tags of env {self.env_id!r} deployment {deployment_id}; "
                "refusing to modify it",
                hint="delete that rule, or change routing_host/routing_path (use {deployment_id} or {bundle_id} "
                     "so that every deployment gets its own rule)",
                rule=match["RuleArn"])
        return Route(kind="rule", arn=match["RuleArn"], actions=match.get("Actions", []),
                     conditions=conditions, rules=rules, duplicates=duplicates)

    def listener(self, *, missing_ok: bool = False) -> dict[str, Any] | None:
        found = list(pages(self.elb, "describe_listeners", "Listeners", ListenerArns=[self.answers.listener_arn],
                           allow=("ListenerNotFound",)))
        if not found and not missing_ok:
            raise ProviderError(f"ALB listener {self.answers.listener_arn} not found",
                                hint="fix the answer 'listener_arn'")
        return found[0] if found else None

    def rules(self) -> list[dict[str, Any]]:
        return list(pages(self.elb, "describe_rules", "Rules", ListenerArn=self.answers.listener_arn,
                          PaginationConfig={"PageSize": PAGE_SIZE}))

    def write_route(self, deployment_id: str, route: Route, actions: list[dict[str, Any]]) -> str:
        """Put ``actions`` where the deployment's forward action lives; returns what was done."""
        if route.kind == "default":
            if _same_actions(route.actions, actions):
                return "unchanged"
            aws(self.elb, "modify_listener", ListenerArn=route.arn, DefaultActions=actions)
            return "listener default action"
        if route.kind == "rule":
            removed = self.delete_duplicates(route)
            suffix = f" ({len(removed)} duplicate rule(s) deleted)" if removed else ""
            if _same_actions(route.actions, actions):
                return "unchanged" + suffix
            aws(self.elb, "modify_rule", RuleArn=route.arn, Actions=actions)
            return "rule modified" + suffix
        first, last = int(self.answers.rule_priorities["first"]), int(self.answers.rule_priorities["last"])
        rules = route.rules
        for _ in range(5):
            used = {int(r["Priority"]) for r in rules if str(r.get("Priority", "")).isdigit()}
            priority = choose_priority(used, first, last)
            if priority is None:
                raise ProviderError(
                    f"no free listener rule priority in {first}..{last} on listener {self.answers.listener_arn}",
                    hint="widen the answer rule_priorities, or delete rules that are no longer needed")
            try:
                resp = aws(self.elb, "create_rule", ListenerArn=self.answers.listener_arn, Priority=priority,
                           Conditions=route.conditions, Actions=actions,
                           Tags=elb_tags(ownership(self.env_id, deployment_id)))
                route.arn = resp["Rules"][0]["RuleArn"]
                route.kind = "rule"
                return "rule created"
            except ProviderError as exc:
                if error_code(exc) != "PriorityInUse":
                    raise
            # CreateRule has no client token: botocore may have resent a request whose first
            # attempt created the rule (its answer was lost). Look for our rule before retrying.
            found = self.route(deployment_id)
            if found.kind == "rule":
                route.arn, route.kind, route.actions = found.arn, "rule", found.actions
                self.delete_duplicates(found)
                return self.write_route(deployment_id, route, actions).replace("unchanged", "rule found after a retry")
            rules = found.rules
        raise ProviderError(f"could not find a free listener rule priority in {first}..{last}",
                            hint="retry; another writer is creating rules on the same listener")

    def delete_duplicates(self, route: Route) -> list[str]:
        """Delete our other rules with the same conditions (left by a resent CreateRule); keep ``route``'s."""
        deleted = []
        for arn in route.duplicates:
            aws(self.elb, "delete_rule", RuleArn=arn, allow=("RuleNotFound",))
            deleted.append(arn)
        route.duplicates = []
        return deleted

    # -- stage ----------------------------------------------------------------------------

    def stage(self, revision_id: str) -> dict[str, Any]:
        revision = self.revision(revision_id)
        image = self.image(revision)
        self.check_cluster()
        self.check_listener()
        self.check_pool_types()
        return {"image": image, "cluster": self.answers.cluster, "service": service_name(self.env_id,
                                                                                           revision.deployment_id)}

    def check_cluster(self) -> None:
        resp = aws(self.ecs, "describe_clusters", clusters=[self.answers.cluster])
        active = [c for c in resp.get("clusters", []) if c.get("status") == "ACTIVE"]
        if not active:
            raise ProviderError(f"ECS cluster {self.answers.cluster!r} not found (or not ACTIVE) in "
                                f"{self.answers.region}", hint="create the cluster, or fix the answer 'cluster'")

    def check_listener(self) -> None:
        self.listener()

    def check_pool_types(self) -> None:
        found: dict[str, dict[str, Any]] = {}
        for batch in batched(list(self.answers.target_group_arns), TAG_BATCH):
            for tg in pages(self.elb, "describe_target_groups", "TargetGroups", TargetGroupArns=batch,
                            PaginationConfig={"PageSize": PAGE_SIZE}):
                found[tg["TargetGroupArn"]] = tg
        missing = [a for a in self.answers.target_group_arns if a not in found]
        if missing:
            raise ProviderError(f"target group(s) of the pool not found: {', '.join(missing[:3])}",
                                hint="fix the answer 'target_group_arns'")
        wrong = [a for a, tg in found.items() if tg.get("TargetType", "instance") != "ip"]
        if wrong:
            raise ProviderError(f"target group(s) {', '.join(wrong[:3])} have target type "
                                f"{found[wrong[0]].get('TargetType')!r}; awsvpc tasks need 'ip'",
                                hint="create the pool's target groups with --target-type ip")

    # -- warm -----------------------------------------------------------------------------

    def ensure_service(self, deployment_id: str, revision_id: str) -> dict[str, Any]:
        found = self.services([deployment_id]).get(deployment_id)
        if found is not None and found.get("status") == "DRAINING":
            raise ProviderError(f"ECS service {found['serviceName']} is still being deleted",
                                hint="wait a minute until ECS finished deleting it, then warm again")
        if found is not None:
            if found.get("desiredCount") != self.answers.desired_count:
                found = aws(self.ecs, "update_service", cluster=self.answers.cluster, service=found["serviceArn"],
                            desiredCount=self.answers.desired_count)["service"]
            return found
        self.progress(f"creating ECS service {service_name(self.env_id, deployment_id)}")
        try:
            return aws(self.ecs, "create_service", **self.service_request(deployment_id, revision_id))["service"]
        except ProviderError:  # a concurrent warm of the same deployment created it first?
            again = self.service(deployment_id)
            if again is None:
                raise
            return again

    def service_request(self, deployment_id: str, revision_id: str) -> dict[str, Any]:
        return {"cluster": self.answers.cluster, "serviceName": service_name(self.env_id, deployment_id),
                "desiredCount": self.answers.desired_count, "deploymentController": {"type": "EXTERNAL"},
                "clientToken": client_token(self.env_id, deployment_id, "service", revision_id),
                "tags": ecs_tags(ownership(self.env_id, deployment_id))}

    def warm(self, revision_id: str, timeout: float | None) -> dict[str, Any]:
        revision = self.revision(revision_id)
        deployment_id = revision.deployment_id
        image = self.image(revision)
        deadline = time.monotonic() + (timeout if timeout is not None else self.answers.warm_timeout_seconds)
        service = self.ensure_service(deployment_id, revision_id)
        sets = self.task_sets(service)
        existing = sets.get(revision_id)
        if existing is not None:
            if float((existing.get("scale") or {}).get("value", 100)) <= 0:  # drained before: scale it up again
                aws(self.ecs, "update_task_set", cluster=self.answers.cluster, service=service["serviceArn"],
                    taskSet=existing["taskSetArn"], scale={"value": 100.0, "unit": "PERCENT"})
            final = self.wait_serving(service, existing, deadline, revision_id)
            return {"task_set": final["taskSetArn"], "target_group": self.bound_target_group(final),
                    "already_present": True}

        target_group = self.claim_target_group(revision, {self.bound_target_group(ts) for ts in sets.values()})
        started: dict[str, str] = {"target_group": target_group}
        try:
            if self.attach_at_zero(deployment_id, target_group):
                started["attached"] = target_group
            task_def = aws(self.ecs, "register_task_definition", **self.task_definition(revision, image))
            started["task_definition"] = task_def["taskDefinition"]["taskDefinitionArn"]
            self.progress(f"creating task set for revision {revision_id} on {target_group.rsplit(':', 1)[-1]}")
            task_set = aws(self.ecs, "create_task_set", **self.task_set_request(
                service, revision, started["task_definition"], target_group))["taskSet"]
            started["task_set"] = task_set["taskSetArn"]
            final = self.wait_serving(service, task_set, deadline, revision_id)
        except BaseException:
            self.undo_warm(service, revision, started)
            raise
        return {"task_set": final["taskSetArn"], "target_group": target_group,
                "task_definition": started["task_definition"], "already_present": False}

    def attach_at_zero(self, deployment_id: str, target_group: str) -> bool:
        """Put a target group no load balancer uses yet into the deployment's forward action at weight 0.

        ECS refuses a service whose target group has no associated load balancer, and its API
        reference does not say whether CreateTaskSet does the same; attaching first is safe
        either way. Weight 0 routes nothing (warm never routes traffic). Returns whether it
        attached (then a failed warm takes it out again).
        """
        found = aws(self.elb, "describe_target_groups", TargetGroupArns=[target_group],
                    allow=("TargetGroupNotFound",)) or {}
        groups = found.get("TargetGroups") or []
        if not groups or groups[0].get("LoadBalancerArns"):
            return False
        route = self.route(deployment_id)
        if target_group in dict(route.targets):
            return False  # already in the forward action (some APIs report LoadBalancerArns late)
        targets = list(route.targets)
        if len(targets) >= MAX_TARGET_GROUPS_PER_ACTION:
            raise ProviderError(
                f"the forward action of deployment {deployment_id} already holds {len(targets)} target groups; "
                f"an ALB forward action holds at most {MAX_TARGET_GROUPS_PER_ACTION}",
                hint="drain and archive revisions that no longer get traffic before warming another one")
        if route.kind == "default":
            try:
                self.check_default_action_ours(route, deployment_id, set())
            except ProviderError:
                return False  # another deployment's: the traffic change will refuse, saying so
        self.progress(f"attaching target group {target_group.rsplit(':', 1)[-1]} to the listener at weight 0")
        self.write_route(deployment_id, route, forward_action([*targets, (target_group, 0)]))
        return True

    def task_definition(self, revision: Revision, image: str) -> dict[str, Any]:
        a = self.answers
        port = a.container_port or (revision.workload.port if revision.workload else 8080)
        environment = dict(revision.workload.env) if revision.workload else {}
        environment.update({"GREENTIC_ENV_ID": self.env_id, "GREENTIC_DEPLOYMENT_ID": revision.deployment_id,
                            "GREENTIC_REVISION_ID": revision.revision_id, "GREENTIC_BUNDLE_ID": revision.bundle_id})
        container = {
            "name": a.container_name, "image": image, "essential": True, "memory": int(a.memory),
            "portMappings": [{"containerPort": port, "protocol": "tcp"}],
            "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        }
        request: dict[str, Any] = {
            "family": task_family(self.env_id, revision.revision_id), "networkMode": "awsvpc",
            "requiresCompatibilities": [a.launch_type], "cpu": a.cpu, "memory": a.memory,
            "containerDefinitions": [container],
            "tags": ecs_tags(ownership(self.env_id, revision.deployment_id, revision.revision_id)),
        }
        if a.execution_role_arn:
            request["executionRoleArn"] = a.execution_role_arn
        if a.task_role_arn:
            request["taskRoleArn"] = a.task_role_arn
        return request

    def task_set_request(self, service: Mapping[str, Any], revision: Revision, task_def_arn: str,
                         target_group: str) -> dict[str, Any]:
        a = self.answers
        port = a.container_port or (revision.workload.port if revision.workload else 8080)
        return {
            "cluster": a.cluster, "service": service["serviceArn"], "taskDefinition": task_def_arn,
            "externalId": external_id(revision.revision_id),
            "networkConfiguration": {"awsvpcConfiguration": {
                "subnets": list(a.subnets), "securityGroups": list(a.security_groups),
                "assignPublicIp": "ENABLED" if a.assign_public_ip else "DISABLED"}},
            "loadBalancers": [{"targetGroupArn": target_group, "containerName": a.container_name,
                               "containerPort": port}],
            "launchType": a.launch_type, "scale": {"value": 100.0, "unit": "PERCENT"},
            "clientToken": client_token(self.env_id, revision.revision_id, "task-set", task_def_arn),
            "tags": ecs_tags(ownership(self.env_id, revision.deployment_id, revision.revision_id)),
        }

    def claim_target_group(self, revision: Revision, bound_here: set[str | None]) -> str:
        """Claim a pool target group no other revision, deployment or environment holds."""
        mine = claim_value(self.env_id, revision.deployment_id, revision.revision_id)
        pool = list(self.answers.target_group_arns)
        tags = self.tags_of(pool)
        holders = {arn: tags.get(arn, {}).get(TAG_CLAIM) for arn in pool}
        already = [arn for arn in pool if holders[arn] == mine and arn not in bound_here]
        free = already + [arn for arn in pool if not holders[arn] and arn not in bound_here]
        if not free:
            free = [arn for arn in pool if arn not in bound_here and self._stale_claim(holders[arn])]
        if not free:
            taken = ", ".join(f"{arn.rsplit('/', 2)[-2]} ({holders[arn] or 'bound'})" for arn in pool[:5])
            raise ProviderError(
                f"no free target group in the pool of {len(pool)}: every one is held ({taken}"
                f"{', ...' if len(pool) > 5 else ''})",
                hint="archive revisions that are no longer needed, or add target groups to target_group_arns")
        for arn in free[:3]:
            if holders[arn] != mine:
                aws(self.elb, "add_tags", ResourceArns=[arn], Tags=elb_tags({TAG_CLAIM: mine}))
                # read back: of two concurrent claimers only the last writer sees its own value
                if self.tags_of([arn]).get(arn, {}).get(TAG_CLAIM) != mine:
                    continue
            return arn
        raise ProviderError("lost the race for a free target group three times",
                            hint="another warm is claiming target groups of the same pool; retry")

    def _stale_claim(self, holder: str | None) -> bool:
        """A claim of this env whose revision is gone from the env or archived (a crash left it)."""
        if not holder:
            return False
        env_id, _, rest = holder.partition("/")
        _, _, revision_id = rest.partition("/")
        if env_id != env_tag(self.env_id):
            return False
        found = self.env.revision(revision_id)
        return found is None or found.lifecycle.value == "archived"

    def release_claims(self, revision: Revision, arns: Sequence[str], known: Mapping[str, Mapping[str, str]] | None
                       = None) -> list[str]:
        mine = claim_value(self.env_id, revision.deployment_id, revision.revision_id)
        tags = known if known is not None else self.tags_of(arns)
        ours = [a for a in arns if tags.get(a, {}).get(TAG_CLAIM) == mine]
        for batch in batched(ours, TAG_BATCH):
            aws(self.elb, "remove_tags", ResourceArns=batch, TagKeys=[TAG_CLAIM])
        return ours

    def undo_warm(self, service: Mapping[str, Any], revision: Revision, started: Mapping[str, str]) -> None:
        """Remove what a failed warm created (best effort: the original error is what counts).

        Task sets are looked up by external id: a CreateTaskSet that failed on the client side
        (timeout, 5xx, retried) may still have created one or more on the server.
        """
        with contextlib.suppress(ProviderError):
            resp = aws(self.ecs, "describe_task_sets", cluster=self.answers.cluster, service=service["serviceArn"],
                       allow=("ServiceNotFoundException",)) or {}
            for ts in resp.get("taskSets", []):
                if ts.get("externalId") == external_id(revision.revision_id):
                    aws(self.ecs, "delete_task_set", cluster=self.answers.cluster, service=service["serviceArn"],
                        taskSet=ts["taskSetArn"], force=True, allow=("TaskSetNotFoundException",))
        with contextlib.suppress(ProviderError):
            if "task_definition" in started:
                aws(self.ecs, "deregister_task_definition", taskDefinition=started["task_definition"])
        with contextlib.suppress(ProviderError):
            if "attached" in started:
                route = self.route(revision.deployment_id)
                if started["attached"] in dict(route.targets):
                    self.detach(route, revision, started["attached"])
        with contextlib.suppress(ProviderError):
            self.release_claims(revision, [started["target_group"]])

    @staticmethod
    def judge(task_set: Mapping[str, Any]) -> tuple[bool, str]:
        """Whether a task set serves, and why (see the README: "How serving is judged")."""
        status = task_set.get("status")
        stability = task_set.get("stabilityStatus")
        scale = float((task_set.get("scale") or {}).get("value", 100))
        running = int(task_set.get("runningCount") or 0)
        desired = int(task_set.get("computedDesiredCount") or 0)
        text = f"{status} {stability} scale {scale:g}% running {running}/{desired}"
        ok = (status in ("ACTIVE", "PRIMARY") and stability == "STEADY_STATE" and scale > 0 and running >= desired)
        return ok, text

    def wait_serving(self, service: Mapping[str, Any], task_set: Mapping[str, Any], deadline: float,
                     revision_id: str) -> Mapping[str, Any]:
        current = task_set
        first = True
        since = datetime.now(timezone.utc) - timedelta(seconds=5)  # tolerate some clock skew
        while True:
            if not first or current.get("stabilityStatus") is None:
                resp = aws(self.ecs, "describe_task_sets", cluster=self.answers.cluster,
                           service=service["serviceArn"], taskSets=[task_set["taskSetArn"]])
                found = resp.get("taskSets", [])
                if not found:
                    raise ProviderError(f"task set {task_set['taskSetArn']} of revision {revision_id} vanished "
                                        "while warming", hint="look at the service's events in the ECS console")
                current = found[0]
            first = False
            ok, text = self.judge(current)
            if ok:
                return current
            self.check_failed_tasks(current, since, revision_id)
            self.progress(f"revision {revision_id}: {text}")  # every reading is shown, the last one too
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProviderTimeout(f"task set of revision {revision_id} did not reach steady state in time "
                                      f"({text})", hint="look at the service's events and the tasks' stopped "
                                                        "reasons in the ECS console; raise warm_timeout_seconds")
            time.sleep(min(self.answers.poll_interval_seconds, max(remaining, 0.0)))

    def check_failed_tasks(self, task_set: Mapping[str, Any], since: datetime, revision_id: str) -> None:
        """Fail early when tasks of the revision keep stopping (ECS would retry them forever)."""
        limit = self.answers.failed_tasks_limit
        task_def = task_set.get("taskDefinition") or ""
        if limit <= 0 or not task_def:
            return
        family = task_def.rsplit("/", 1)[-1].rsplit(":", 1)[0]
        arns = list(pages(self.ecs, "list_tasks", "taskArns", cluster=self.answers.cluster, family=family,
                          desiredStatus="STOPPED"))
        if len(arns) < limit:
            return
        stopped = []
        for batch in batched(arns, 100):
            resp = aws(self.ecs, "describe_tasks", cluster=self.answers.cluster, tasks=batch)
            stopped += [t for t in resp.get("tasks", []) if t.get("taskDefinitionArn") == task_def
                        and isinstance(t.get("stoppedAt"), datetime) and t["stoppedAt"] >= since]
        if len(stopped) < limit:
            return
        last = max(stopped, key=lambda t: t["stoppedAt"])
        reasons = [c.get("reason") for c in last.get("containers", []) if c.get("reason")]
        said = last.get("stoppedReason") or (reasons[0] if reasons else "no reason given")
        raise ProviderError(
            f"revision {revision_id}: {len(stopped)} task(s) stopped while warming; ECS says: {said[:500]}",
            hint="fix the image reference, the execution role's pull permissions or the container's start-up; "
                 "see the stopped tasks in the ECS console",
            stop_code=last.get("stopCode"))

    # -- traffic --------------------------------------------------------------------------

    def apply(self, deployment_id: str, conversion: Conversion) -> dict[str, Any]:
        split = self.env.split_for(deployment_id)
        assert split is not None, "the core checks that the split exists"
        service = self.service(deployment_id)
        sets = self.task_sets(service) if service else {}
        targets: list[tuple[str, int]] = []
        weights: dict[str, int] = {}
        for entry, weight in zip(split.entries, conversion.weights):
            task_set = sets.get(entry.revision_id)
            target_group = self.bound_target_group(task_set) if task_set else None
            if target_group is None:
                if weight > 0:
                    raise ProviderError(
                        f"revision {entry.revision_id} would get {entry.weight_bps} bps but has no task set "
                        f"in service {service_name(self.env_id, deployment_id)}",
                        hint="warm it first (`greentic-deployer revision warm`), or give it weight 0")
                weights[entry.revision_id] = 0
                continue
            ok, text = self.judge(task_set)
            if weight > 0 and not ok:
                raise ProviderError(f"revision {entry.revision_id} would get {entry.weight_bps} bps but its task "
                                    f"set does not serve ({text})", hint="warm it again before routing to it")
            targets.append((target_group, weight))
            weights[entry.revision_id] = weight
        route = self.route(deployment_id)
        if route.kind == "default":
            self.check_default_action_ours(route, deployment_id, {tg for tg, _ in targets})
        done = self.write_route(deployment_id, route, forward_action(targets))
        return {"weights": weights, "route": route.arn or "", "write": done,
                "effective_bps": dict(zip((e.revision_id for e in split.entries),
                                          (round(v, 2) for v in conversion.effective_bps)))}

    def check_default_action_ours(self, route: Route, deployment_id: str, ours: set[str]) -> None:
        """The default action may be taken over unless it forwards to another greentic claim."""
        others = [tg for tg, _ in route.targets if tg not in ours]
        if not others:
            return
        for arn, tags in self.tags_of(others).items():
            holder = tags.get(TAG_CLAIM)
            if holder and claim_owner(holder) != [env_tag(self.env_id), deployment_id]:
                raise ProviderError(
                    f"the default action of listener {route.arn} forwards to target group {arn}, held by "
                    f"{holder}; refusing to take it over for deployment {deployment_id}",
                    hint="set routing_host/routing_path with {deployment_id} so every deployment gets its own "
                         "listener rule")

    # -- drain ----------------------------------------------------------------------------

    def drain(self, revision_id: str, timeout: float | None) -> dict[str, Any]:
        revision = self.revision(revision_id)
        service = self.service(revision.deployment_id)
        task_set = self.task_sets(service).get(revision_id) if service else None
        if task_set is None:
            return {"stopped": "absent"}
        if float((task_set.get("scale") or {}).get("value", 100)) <= 0:
            return {"stopped": "already-drained"}
        target_group = self.bound_target_group(task_set)
        waited = 0.0
        if target_group:
            route = self.route(revision.deployment_id)
            if dict(route.targets).get(target_group, 0) > 0:
                self.stop_routing(route, revision, target_group, verb="drain")
            delay = max(0, min(int(revision.drain_seconds), 3600))
            aws(self.elb, "modify_target_group_attributes", TargetGroupArn=target_group,
                Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}])
            waited = self.wait_drained(target_group, revision, timeout)
        aws(self.ecs, "update_task_set", cluster=self.answers.cluster, service=service["serviceArn"],
            taskSet=task_set["taskSetArn"], scale={"value": 0.0, "unit": "PERCENT"})
        return {"stopped": "scaled-to-zero", "target_group": target_group, "waited_seconds": round(waited, 3)}

    def wait_drained(self, target_group: str, revision: Revision, timeout: float | None) -> float:
        """Wait until no target is healthy/draining/initial, or ``drain_seconds`` + ``drain_slack_seconds`` passed.

        The deregistration delay is ``drain_seconds``; the slack covers the ALB's own lag in
        moving targets out of ``draining`` (the answer ``drain_slack_seconds``).
        """
        budget = float(revision.drain_seconds) + float(self.answers.drain_slack_seconds)
        if timeout is not None:
            budget = min(budget, timeout)
        started = time.monotonic()
        while True:
            resp = aws(self.elb, "describe_target_health", TargetGroupArn=target_group)
            busy = [d for d in resp.get("TargetHealthDescriptions", [])
                    if (d.get("TargetHealth") or {}).get("State") in ("healthy", "draining", "initial")]
            elapsed = time.monotonic() - started
            if not busy or elapsed >= budget:
                return elapsed
            self.progress(f"revision {revision.revision_id}: {len(busy)} target(s) still registered "
                          f"({elapsed:.0f}s of {budget:g}s)")
            time.sleep(min(self.answers.poll_interval_seconds, max(budget - elapsed, 0.0)))

    # -- archive --------------------------------------------------------------------------

    def archive(self, revision_id: str) -> dict[str, Any]:
        revision = self.revision(revision_id)
        deployment_id = revision.deployment_id
        service = self.service(deployment_id)
        sets = self.task_sets(service) if service else {}
        task_set = sets.get(revision_id)
        remaining = [r for r in sets if r != revision_id]
        detail: dict[str, Any] = {"task_set": "absent", "service": "kept" if service else "absent"}
        target_group = self.bound_target_group(task_set) if task_set else None
        if service is not None and (target_group or not remaining):
            route = self.route(deployment_id)
            if target_group and dict(route.targets).get(target_group, 0) > 0:
                detail["traffic"] = self.stop_routing(route, revision, target_group, verb="archive")
                route = self.route(deployment_id)
            if not remaining:
                detail["route"] = self.remove_route(route, deployment_id, {target_group} if target_group else set())
            elif target_group in dict(route.targets):
                detail["route"] = self.detach(route, revision, target_group)
        if task_set is not None:
            aws(self.ecs, "delete_task_set", cluster=self.answers.cluster, service=service["serviceArn"],
                taskSet=task_set["taskSetArn"], force=True, allow=("TaskSetNotFoundException",))
            detail["task_set"] = "deleted"
        # release the claim: the bound target group, or (crash leftovers) any pool member claimed for it
        arns = [target_group] if target_group else list(self.answers.target_group_arns)
        detail["released"] = self.release_claims(revision, arns)
        detail["task_definitions"] = self.deregister_family(revision)
        if service is not None and not remaining:
            aws(self.ecs, "delete_service", cluster=self.answers.cluster, service=service["serviceArn"], force=True,
                allow=("ServiceNotFoundException",))
            detail["service"] = "deleted"
        return detail

    def stop_routing(self, route: Route, revision: Revision, target_group: str, *, verb: str) -> str:
        """The listener still sends traffic to a revision being drained or archived: stop that.

        The core only drains/archives a revision that the recorded split gives nothing, so the
        listener is behind the record. With a split recorded, that split is applied (it gives
        the revision 0); without one (`traffic clear`), the revision's target group is taken
        out of the forward action, and the route goes when nothing would be served. A drain of
        a revision the recorded split still routes to is refused (the core never asks for it).
        """
        split = self.env.split_for(revision.deployment_id)
        recorded = {e.revision_id: e.weight_bps for e in split.entries} if split else {}
        if recorded.get(revision.revision_id, 0) > 0:
            if verb == "drain":
                raise ProviderError(
                    f"the recorded split gives revision {revision.revision_id} {recorded[revision.revision_id]} bps; "
                    "refusing to drain it", hint="shift its traffic away first (`greentic-deployer traffic set`)")
            return self.detach(route, revision, target_group)  # archive tears it down whatever the record says
        if split is not None and len(split.entries) <= MAX_TARGET_GROUPS_PER_ACTION:
            self.progress(f"the listener is behind the recorded split of deployment {revision.deployment_id}: "
                          "applying it")
            self.apply(revision.deployment_id, to_alb_weights([e.weight_bps for e in split.entries]))
            return "recorded split applied"
        return self.detach(route, revision, target_group)

    def detach(self, route: Route, revision: Revision, target_group: str) -> str:
        """Take the revision's target group out of the deployment's forward action."""
        kept = [(tg, w) for tg, w in route.targets if tg != target_group]
        if sum(w for _, w in kept) == 0:  # nothing would be served: no route at all
            return self.remove_route(route, revision.deployment_id, {target_group})
        return self.write_route(revision.deployment_id, route, forward_action(kept))

    def remove_route(self, route: Route, deployment_id: str, ours: set[str]) -> str:
        """The deployment's last revision goes: remove our rule, or park the default action."""
        if route.kind == "rule":
            self.delete_duplicates(route)
            aws(self.elb, "delete_rule", RuleArn=route.arn, allow=("RuleNotFound",))
            return "rule deleted"
        if route.kind == "default":
            others = [tg for tg, w in route.targets if tg not in ours and w > 0]
            if not route.targets:
                return "unchanged"  # not a forward action: not ours to park
            tags = self.tags_of(others) if others else {}
            if all(claim_owner(tags.get(tg, {}).get(TAG_CLAIM)) == [env_tag(self.env_id), deployment_id]
                   for tg in others):
                aws(self.elb, "modify_listener", ListenerArn=route.arn, DefaultActions=NO_DEPLOYMENT_ACTION)
                return "default action set to 503"
            return "unchanged"
        return "absent"

    def deregister_family(self, revision: Revision) -> list[str]:
        family = task_family(self.env_id, revision.revision_id)
        arns = [arn for arn in pages(self.ecs, "list_task_definitions", "taskDefinitionArns", familyPrefix=family,
                                     status="ACTIVE")
                if arn.rsplit("/", 1)[-1].rsplit(":", 1)[0] == family]
        for arn in arns:
            aws(self.ecs, "deregister_task_definition", taskDefinition=arn,
                allow=("ClientException", "InvalidParameterException"))
        return arns

    # -- observe --------------------------------------------------------------------------

    def observe(self) -> Observation:
        by_deployment: dict[str, list[Revision]] = {}
        for rev in self.env.revisions:
            by_deployment.setdefault(rev.deployment_id, []).append(rev)
        deployment_ids = list(dict.fromkeys([b.deployment_id for b in self.env.bundles] + list(by_deployment)))
        services = {d: s for d, s in self.services(deployment_ids).items() if s.get("status") == "ACTIVE"}
        sets = {d: self.task_sets(s) for d, s in services.items()}

        revisions: dict[str, RevisionObservation] = {}
        for deployment_id, revs in by_deployment.items():
            for rev in revs:
                ts = sets.get(deployment_id, {}).get(rev.revision_id)
                if ts is None:
                    revisions[rev.revision_id] = RevisionObservation(
                        revision_id=rev.revision_id, present=False, serving=False, detail="no task set")
                    continue
                ok, text = self.judge(ts)
                revisions[rev.revision_id] = RevisionObservation(
                    revision_id=rev.revision_id, present=True, serving=ok,
                    ready_replicas=int(ts.get("runningCount") or 0),
                    desired_replicas=int(ts.get("computedDesiredCount") or 0),
                    detail=f"{ts['taskSetArn']} {text}")

        tg_to_revision = {self.bound_target_group(ts): (d, r) for d, by_rev in sets.items()
                          for r, ts in by_rev.items() if self.bound_target_group(ts)}
        deployments: dict[str, DeploymentObservation] = {}
        if self.answers.uses_rule:
            rules = self.rules()
            candidates: dict[str, dict[str, Any]] = {}
            for deployment_id in deployment_ids:
                key = _condition_key(self.answers.conditions(
                    env_id=self.env_id, deployment_id=deployment_id, bundle_id=self.bundle_of(deployment_id)))
                match = next((r for r in rules if not r.get("IsDefault")
                              and _condition_key(r.get("Conditions", [])) == key), None)
                if match is not None:
                    candidates[deployment_id] = match
            tags = self.tags_of([r["RuleArn"] for r in candidates.values()])
            for deployment_id, rule in candidates.items():
                if owned_by(tags.get(rule["RuleArn"], {}), self.env_id, deployment_id):
                    deployments[deployment_id] = self._observed(deployment_id, forward_targets(rule["Actions"]),
                                                                tg_to_revision, f"rule {rule['RuleArn']}")
        else:
            listener = self.listener()
            targets = forward_targets(listener.get("DefaultActions", []))
            owners = {tg_to_revision[tg][0] for tg, _ in targets if tg in tg_to_revision}
            if len(owners) == 1:
                deployment_id = owners.pop()
                deployments[deployment_id] = self._observed(deployment_id, targets, tg_to_revision,
                                                            f"listener {listener['ListenerArn']} default action")
        return Observation(revisions=revisions, deployments=deployments)

    @staticmethod
    def _observed(deployment_id: str, targets: list[tuple[str, int]],
                  tg_to_revision: Mapping[str, tuple[str, str]], where: str) -> DeploymentObservation:
        bps = to_basis_points([w for _, w in targets])
        weights: dict[str, int] = {}
        unknown: list[str] = []
        for (tg, weight), share in zip(targets, bps):
            owner = tg_to_revision.get(tg)
            if owner is not None and owner[0] == deployment_id:
                weights[owner[1]] = weights.get(owner[1], 0) + share
            else:
                unknown.append(f"{tg}={weight}")
        raw = ", ".join(f"{tg.rsplit('/', 2)[-2]}={w}" for tg, w in targets)
        detail = f"{where}: ALB weights {raw}" + (f"; not a revision of this deployment: {unknown}" if unknown else "")
        return DeploymentObservation(deployment_id=deployment_id, weights=weights, detail=detail)

    # -- preflight ------------------------------------------------------------------------

    def preflight(self) -> list[PreflightCheck]:
        checks = []
        for name, check in (("ecs-cluster", self.check_cluster), ("alb-listener", self.check_listener),
                            ("target-group-pool", self.check_pool_types)):
            try:
                check()
                checks.append(PreflightCheck(name=name, status=CheckStatus.PASS, message="ok"))
            except ProviderError as exc:
                checks.append(PreflightCheck(name=name, status=CheckStatus.FAIL, message=exc.message))
        try:
            tags = self.tags_of(list(self.answers.target_group_arns))
            free = sum(1 for a in self.answers.target_group_arns if not tags.get(a, {}).get(TAG_CLAIM))
            status = CheckStatus.PASS if free else CheckStatus.FAIL
            checks.append(PreflightCheck(name="target-group-pool-free", status=status,
                                         message=f"{free} of {len(self.answers.target_group_arns)} free"))
        except ProviderError as exc:
            checks.append(PreflightCheck(name="target-group-pool-free", status=CheckStatus.FAIL, message=exc.message))
        return checks


def _same_actions(current: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]]) -> bool:
    return (len(current) == 1 and len(desired) == 1 and current[0].get("Type") == desired[0].get("Type") == "forward"
            and forward_targets(current) == forward_targets(desired))


def _describe_conditions(conditions: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for field, values in sorted(_condition_key(conditions), key=lambda kv: kv[0]):
        parts.append(f"{field}={','.join(sorted(values))}")
    return " ".join(parts)
