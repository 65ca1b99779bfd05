"""The ALB rules the provider keeps itself (moto keeps none of them): condition values after the
placeholders are filled, rule priorities, duplicate rules after a resent CreateRule, tag lengths.

Against the moto server over HTTP; a lost answer is made by a real HTTP proxy in front of it.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse
from typing import Any, Iterator

import pytest

from greentic_core import InvalidRoute, lifecycle
from greentic_aws import ecs, rules
from greentic_aws.answers import Answers

from aws_world import KIND, NOW, make_world

# --------------------------------------------------------------------------- pure rules


@pytest.mark.parametrize("value, fragment", [
    ("prod_eu.apps.example.com", "contains '_'"),
    ("shop.example.com:8080", "contains ':'"),
    ("10.0.0.1", "only letters after the last '.'"),
    ("localhost", "has no '.'"),
    ("a.example.com,b.example.com", "contains ','"),
    ("shop.example.com.", "only letters after the last '.'"),
    ("a" * 129 + ".com", "at most 128"),
])
def test_host_header_values_the_alb_refuses(value, fragment):
    problem = rules.host_value_problem(value)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize("value", ["shop.example.com", "*.example.com", "SHOP.example.com", "a-b.c?.example.org"])
def test_host_header_values_the_alb_takes(value):
    assert rules.host_value_problem(value) is None


@pytest.mark.parametrize("value, fragment", [
    ("/a b", "contains ' '"), ("/caf\u00e9", "contains"), ("/x#y", "contains '#'"), ("/" + "a" * 128, "at most 128"),
])
def test_path_pattern_values_the_alb_refuses(value, fragment):
    problem = rules.path_value_problem(value)
    assert problem is not None and fragment in problem


def test_at_most_five_wildcards_per_rule():
    conditions = [{"Field": "host-header", "HostHeaderConfig": {"Values": ["*.*.example.com"]}},
                  {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/a/*/b/*/c?/*"]}}]
    assert any("6 wildcards" in p for p in rules.conditions_problems(conditions))
    conditions[1]["PathPatternConfig"]["Values"] = ["/a/*/b/*/c?"]
    assert rules.conditions_problems(conditions) == []


@pytest.mark.parametrize("used, first, last, expected", [
    ([], 1, 50000, 1),
    ([5, 9], 1, 50000, 10),
    ([100, 50000], 1, 50000, 1),  # an operator's catch-all at 50000: never 50001
    ([100, 50000], 1, 99, 1),  # the operator's range is ahead of their rule at 100
    ([1, 2, 99], 1, 99, 3),
    (list(range(1, 100)), 1, 99, None),
    ([7], 10, 20, 10),
])
def test_rule_priorities_stay_in_the_range(used, first, last, expected):
    assert rules.choose_priority(used, first, last) == expected


def test_long_env_ids_are_hashed_into_the_tag_limit():
    assert ecs.env_tag("e" * 200) == "e" * 200
    assert len(ecs.claim_value("e" * 1000, "D" * 26, "R" * 26)) <= rules.MAX_TAG_VALUE_CHARS
    assert ecs.env_tag("e" * 1000) != ecs.env_tag("e" * 999 + "f")


# --------------------------------------------------------------------------- filled values, before any call


@pytest.mark.parametrize("env_id, extra, fragment", [
    ("prod_eu", {"routing_host": "{env_id}.apps.example.com"}, "contains '_'"),
    ("prod", {"routing_host": "{env_id}.apps.example.com:8080"}, "contains ':'"),
    ("prod", {"routing_host": "10.0.0.1"}, "only letters after the last '.'"),
    ("prod", {"routing_host": "{env_id}"}, "has no '.'"),
    ("prod", {"routing_host": "a.example.com,b.example.com"}, "contains ','"),
    ("prod", {"routing_path": "/my path/*"}, "contains ' '"),
    ("prod", {"routing_host": "*.*.example.com", "routing_path": "/*/*/*/*"}, "6 wildcards"),
    # a template of 128 characters that fills to 139
    ("prod", {"routing_host": "{deployment_id}-" + "x" * 100 + ".example.com"}, "139 characters; an ALB takes at most 128"),
])
def test_conditions_the_alb_refuses_are_refused_before_any_call(registry, answers, calls, env_id, extra, fragment):
    bound = registry.bind(KIND, {**answers, **extra})
    world = make_world(env_id)
    world.env, deployment = lifecycle.add_deployment(world.env, "shop", now=NOW)
    deployment_id = deployment.deployment_id
    rev = world.add_revision(deployment_id)
    world.set_split(deployment_id, [(rev, 10000)])
    calls.reset()
    with pytest.raises(InvalidRoute, match=fragment):
        bound.validate_routes(world.env, deployment_id)  # what the core runs at deployment add and stage
    with pytest.raises(InvalidRoute, match=fragment):
        bound.warm(world.env, rev.revision_id)
    with pytest.raises(InvalidRoute, match=fragment):
        bound.apply_traffic_split(world.env, deployment_id)
    assert calls.total == 0  # no target group claimed, no task set created


def test_the_provider_refuses_bad_values_also_when_called_without_the_core(registry, answers, calls, world):
    """World deployments are not recorded in env.bundles: the hook itself must refuse."""
    from greentic_aws import hooks

    deployment_id, revs = world.new_deployment()
    world.set_split(deployment_id, [(revs[0], 10000)])
    bad = {**answers, "routing_host": "{env_id}.example.com:8080"}
    calls.reset()
    with pytest.raises(InvalidRoute, match="contains ':'"):
        hooks.greentic_warm_revision(env=world.env, revision_id=revs[0].revision_id, answers=bad,
                                     progress=lambda m: None, timeout=None)
    with pytest.raises(InvalidRoute, match="contains ':'"):
        hooks.greentic_apply_traffic_split(env=world.env, deployment_id=deployment_id, answers=bad,
                                           progress=lambda m: None)
    assert calls.total == 0


# --------------------------------------------------------------------------- priorities


def _operator_rule(aws, answers, priority: int, path: str = "/*") -> str:
    return aws.elb.create_rule(
        ListenerArn=answers["listener_arn"], Priority=priority,
        Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": [path]}}],
        Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404"}}])["Rules"][0]["RuleArn"]


def _routed(deployer, world):
    deployment_id, revs = world.new_deployment()
    deployer.warm(world.env, revs[0].revision_id)
    world.set_split(deployment_id, [(revs[0], 10000)])
    deployer.apply_traffic_split(world.env, deployment_id)
    return deployment_id


def test_an_operator_catch_all_at_50000_never_pushes_our_rule_out_of_range(deployer, world, answers, aws):
    _operator_rule(aws, answers, 50000)
    deployment_id = _routed(deployer, world)
    assert 1 <= int(aws.rule_for(answers, deployment_id)["Priority"]) <= 50000


def test_the_priority_range_answer_puts_our_rules_ahead_of_the_operators(registry, world, answers, aws):
    _operator_rule(aws, answers, 100)
    deployer = registry.bind(KIND, {**answers, "rule_priorities": {"first": 1, "last": 99}})
    first = _routed(deployer, world)
    second = _routed(deployer, world)
    assert [int(aws.rule_for(answers, d)["Priority"]) for d in (first, second)] == [1, 2]


def test_a_full_priority_range_is_a_clear_error(registry, world, answers, aws):
    _operator_rule(aws, answers, 7)
    deployer = registry.bind(KIND, {**answers, "rule_priorities": {"first": 7, "last": 7}})
    with pytest.raises(Exception, match=r"no free listener rule priority in 7\.\.7"):
        _routed(deployer, world)


@pytest.mark.parametrize("bad", [{"first": 0, "last": 5}, {"first": 5, "last": 50001}, {"first": 9, "last": 3},
                                 {"first": 1}])
def test_priority_ranges_outside_1_to_50000_are_refused(answers, bad):
    from greentic_core import InvalidAnswers

    with pytest.raises(InvalidAnswers):
        Answers.parse({**answers, "rule_priorities": bad})


# --------------------------------------------------------------------------- a resent CreateRule


class LosingProxy:
    """An HTTP proxy in front of moto that forwards the next CreateRule and then loses its answer (HTTP 503)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlparse(upstream)
        self.armed = threading.Event()
        self.lost = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if b"Action=CreateRule" in body and proxy.armed.is_set():
                    proxy.armed.clear()
                    proxy.lost += 1
                    status, data = 503, b"<Error><Code>ServiceUnavailable</Code><Message>lost</Message></Error>"
                else:
                    status = resp.status
                self.send_response(status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def losing_proxy(moto_endpoint) -> Iterator[LosingProxy]:
    proxy = LosingProxy(moto_endpoint)
    try:
        yield proxy
    finally:
        proxy.close()
        ecs.clear_client_cache()


def _our_rules(aws, answers, world, deployment_id) -> list[dict[str, Any]]:
    out = []
    for rule in aws.rules(answers):
        if rule.get("IsDefault"):
            continue
        tags = aws.tags(rule["RuleArn"])
        if ecs.owned_by(tags, world.env_id, deployment_id):
            out.append(rule)
    return out


def test_a_create_rule_resent_after_a_lost_answer_leaves_one_rule(registry, world, answers, aws, losing_proxy):
    deployer = registry.bind(KIND, {**answers, "endpoint_url": losing_proxy.url})
    deployment_id, revs = world.new_deployment()
    losing_proxy.armed.set()
    deployer.warm(world.env, revs[0].revision_id)  # the first CreateRule: its target group at weight 0
    assert losing_proxy.lost == 1  # botocore resent the CreateRule: moto answered PriorityInUse
    assert len(_our_rules(aws, answers, world, deployment_id)) == 1
    world.set_split(deployment_id, [(revs[0], 10000)])
    deployer.apply_traffic_split(world.env, deployment_id)
    assert len(_our_rules(aws, answers, world, deployment_id)) == 1
    assert deployer.observe(world.env).deployments[deployment_id].weights == {revs[0].revision_id: 10000}


def test_the_lost_answer_is_recovered_when_the_traffic_change_creates_the_rule(registry, world, answers, aws,
                                                                                losing_proxy):
    deployer = registry.bind(KIND, {**answers, "endpoint_url": losing_proxy.url})
    deployment_id, revs = world.new_deployment()
    deployer.warm(world.env, revs[0].revision_id)
    (rule,) = _our_rules(aws, answers, world, deployment_id)
    aws.elb.delete_rule(RuleArn=rule["RuleArn"])  # as if an operator removed it: the traffic change creates it
    world.set_split(deployment_id, [(revs[0], 10000)])
    losing_proxy.armed.set()
    outcome = deployer.apply_traffic_split(world.env, deployment_id)
    assert losing_proxy.lost == 1
    assert outcome.detail["write"] == "rule found after a retry"
    assert len(_our_rules(aws, answers, world, deployment_id)) == 1
    assert deployer.observe(world.env).deployments[deployment_id].weights == {revs[0].revision_id: 10000}


def test_duplicates_left_by_an_older_version_are_deleted_at_the_next_apply(deployer, world, answers, aws):
    deployment_id, revs = world.new_deployment(revisions=2)
    for rev in revs:
        deployer.warm(world.env, rev.revision_id)
    world.set_split(deployment_id, [(revs[0], 10000), (revs[1], 0)])
    deployer.apply_traffic_split(world.env, deployment_id)
    (rule,) = _our_rules(aws, answers, world, deployment_id)
    aws.elb.create_rule(ListenerArn=answers["listener_arn"], Priority=int(rule["Priority"]) + 1,
                        Conditions=rule["Conditions"], Actions=rule["Actions"],
                        Tags=[{"Key": k, "Value": v} for k, v in ecs.ownership(world.env_id, deployment_id).items()])
    assert len(_our_rules(aws, answers, world, deployment_id)) == 2
    world.set_split(deployment_id, [(revs[0], 0), (revs[1], 10000)])
    outcome = deployer.apply_traffic_split(world.env, deployment_id)
    assert "1 duplicate rule(s) deleted" in outcome.detail["write"]
    (left,) = _our_rules(aws, answers, world, deployment_id)
    assert left["RuleArn"] == rule["RuleArn"]


# --------------------------------------------------------------------------- tag values


def test_tags_of_an_environment_with_a_long_id_stay_within_256_characters(registry, answers, aws):
    deployer = registry.bind(KIND, answers)
    world = make_world("e" * 230)
    deployment_id, revs = world.new_deployment()
    deployer.warm(world.env, revs[0].revision_id)
    world.set_split(deployment_id, [(revs[0], 10000)])
    deployer.apply_traffic_split(world.env, deployment_id)
    task_set = aws.task_sets(answers, world.env_id, deployment_id)[0]
    target_group = task_set["loadBalancers"][0]["targetGroupArn"]
    rule = aws.rule_for(answers, deployment_id)
    values = [*aws.tags(rule["RuleArn"]).values(), *aws.tags(target_group).values()]
    service = aws.service(answers, world.env_id, deployment_id)
    values += [t["value"] for t in service.get("tags") or ()]
    assert values and all(len(v) <= 256 for v in values), max(map(len, values))
    observed = deployer.observe(world.env)  # ownership is still recognised
    assert observed.deployments[deployment_id].weights == {revs[0].revision_id: 10000}


# --------------------------------------------------------------------------- CreateTaskSet order


class TaskSetOrder:
    """Reads, at the moment the provider sends CreateTaskSet, whether the listener forwards to its target group.

    (A target group is associated with a load balancer once a listener rule or default action
    forwards to it. moto updates ``LoadBalancerArns`` on CreateRule but not on ModifyRule, so the
    listener's actions are read instead.)
    """

    def __init__(self, aws, answers) -> None:
        self.aws, self.answers = aws, answers
        self.seen: list[bool] = []

    def attach(self, client) -> None:
        client.meta.events.register("provide-client-params.ecs.CreateTaskSet", self._check)

    def _forwarded(self) -> set[str]:
        actions = [a for rule in self.aws.rules(self.answers) for a in rule["Actions"]]
        actions += self.aws.default_actions(self.answers)
        return set(self.aws.forward(actions)) | {g["TargetGroupArn"] for a in actions
                                                   for g in (a.get("ForwardConfig") or {}).get("TargetGroups", [])}

    def _check(self, params, **_):
        forwarded = self._forwarded()
        for binding in params.get("loadBalancers") or ():
            self.seen.append(binding["targetGroupArn"] in forwarded)


@pytest.mark.parametrize("fixture", ["answers", "default_action_answers"])
def test_a_fresh_target_group_is_attached_at_weight_0_before_create_task_set(request, registry, world, aws, fixture):
    answers = request.getfixturevalue(fixture)
    order = TaskSetOrder(aws, answers)
    ecs.clear_client_cache()
    ecs.client_hooks.append(order.attach)
    try:
        deployer = registry.bind(KIND, answers)
        deployment_id, revs = world.new_deployment(revisions=2)
        for rev in revs:
            deployer.warm(world.env, rev.revision_id)
    finally:
        ecs.client_hooks.remove(order.attach)
        ecs.clear_client_cache()
    assert order.seen == [True, True]  # never a target group no listener forwards to
    observed = deployer.observe(world.env).deployments.get(deployment_id)
    assert observed is None or set(observed.weights.values()) <= {0}  # warm routes no traffic
    world.set_split(deployment_id, [(revs[0], 10000), (revs[1], 0)])
    assert deployer.apply_traffic_split(world.env, deployment_id).provider_weights == {
        revs[0].revision_id: 999, revs[1].revision_id: 0}


def test_a_failed_warm_takes_the_target_group_it_attached_out_again(registry, world, answers, aws):
    deployer = registry.bind(KIND, {**answers, "warm_timeout_seconds": 0.5, "poll_interval_seconds": 0.05})
    deployment_id, (good,) = world.new_deployment()
    deployer.warm(world.env, good.revision_id)
    world.set_split(deployment_id, [(good, 10000)])
    deployer.apply_traffic_split(world.env, deployment_id)
    bad = world.add_revision(deployment_id, image="registry.invalid/team/app:1")  # never pulls
    with pytest.raises(Exception):
        deployer.warm(world.env, bad.revision_id)
    rule = aws.rule_for(answers, deployment_id)
    assert list(aws.forward(rule["Actions"]).values()) == [999]  # only the good revision's target group
