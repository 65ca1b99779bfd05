"""Pure reading of live objects: rollout status (kubectl's rules), ownership, applied?, route weights."""

from __future__ import annotations

import pytest

from greentic_k8s import status


def deployment(desired=2, generation=3, **counts):
    doc = {"kind": "Deployment", "metadata": {"name": "d", "namespace": "ns", "generation": generation},
           "spec": {"replicas": desired}}
    if counts:
        doc["status"] = counts
    return doc


# --------------------------------------------------------------------------- rollout


def test_complete_when_observed_updated_available_and_no_old_replicas():
    rollout = status.rollout_status(deployment(observedGeneration=3, replicas=2, updatedReplicas=2,
                                               readyReplicas=2, availableReplicas=2))
    assert rollout.complete and not rollout.failed


@pytest.mark.parametrize("counts, message", [
    ({}, "observe generation 3"),  # no status yet
    (dict(observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=2), "observe generation 3"),
    (dict(observedGeneration=3, replicas=2, updatedReplicas=1, availableReplicas=1), "1 of 2 new replicas updated"),
    (dict(observedGeneration=3, replicas=3, updatedReplicas=2, availableReplicas=2), "1 old replicas pending"),
    (dict(observedGeneration=3, replicas=2, updatedReplicas=2, availableReplicas=1), "1 of 2 updated replicas available"),
    (dict(observedGeneration=3, replicas=2, updatedReplicas=2), "0 of 2 updated replicas available"),
])
def test_incomplete_rollouts_say_what_they_wait_for(counts, message):
    rollout = status.rollout_status(deployment(**counts))
    assert not rollout.complete and not rollout.failed
    assert message in rollout.message


def test_progress_deadline_exceeded_is_a_failure():
    doc = deployment(observedGeneration=3, replicas=2, updatedReplicas=2, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "d-1" has timed out progressing.'}])
    rollout = status.rollout_status(doc)
    assert rollout.failed and "timed out progressing" in rollout.message


def test_scaled_to_zero_is_complete_with_omitted_counts():
    assert status.rollout_status(deployment(desired=0, observedGeneration=3)).complete


def test_missing_replicas_default_to_one_and_counts_are_reported():
    doc = {"metadata": {"generation": 1}, "spec": {}, "status": {"observedGeneration": 1, "replicas": 1,
                                                                 "updatedReplicas": 1}}
    rollout = status.rollout_status(doc)
    assert rollout.desired == 1 and not rollout.complete
    assert rollout.counts() == ("observedGeneration 1/1, updated 1/1, available 0/1, ready 0/1, old replicas 0")


@pytest.mark.parametrize("replicas, ready, serving", [(2, 2, True), (2, 1, False), (0, 0, False), (1, 0, False)])
def test_serving_means_all_desired_replicas_ready_and_at_least_one(replicas, ready, serving):
    doc = deployment(desired=replicas, readyReplicas=ready) if ready else deployment(desired=replicas)
    assert status.serving(doc) == (serving, ready, replicas)


# --------------------------------------------------------------------------- ownership


def labelled(labels=None, annotations=None):
    meta = {"name": "gt-x", "namespace": "ns"}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    return {"kind": "Service", "metadata": meta}


OURS = {"app.kubernetes.io/managed-by": "greentic-deployer", "greentic.ai/env": "shop"}


def test_our_object_has_no_ownership_problem():
    assert status.ownership_problem(labelled(OURS), "shop") is None


@pytest.mark.parametrize("labels, fragment", [
    (None, "not managed by greentic-deployer"),
    ({"app": "web"}, "not managed by greentic-deployer"),
    ({"greentic.ai/env": "shop"}, "not managed by greentic-deployer"),
    ({"app.kubernetes.io/managed-by": "greentic-deployer"}, "not managed by greentic-deployer"),
    ({**OURS, "greentic.ai/env": "blog"}, "belongs to greentic environment 'blog'"),
])
def test_foreign_objects_are_named_with_the_reason(labels, fragment):
    assert fragment in status.ownership_problem(labelled(labels), "shop")


def test_a_hash_collision_of_sanitised_env_labels_is_caught_by_the_annotation():
    obj = labelled({**OURS, "greentic.ai/env": "x"}, {"greentic.ai/env-id": "other"})
    assert "other" in status.ownership_problem(obj, "x")


def test_describe_names_kind_namespace_and_name():
    assert status.describe(labelled()) == "Service ns/gt-x"
    assert status.describe("Deployment", "ns", "d") == "Deployment ns/d"


# --------------------------------------------------------------------------- applied?


def test_contains_ignores_fields_the_server_added_but_not_changed_ones():
    desired = {"spec": {"ports": [{"port": 80}], "type": "ClusterIP"}}
    live = {"spec": {"ports": [{"port": 80, "protocol": "TCP"}], "type": "ClusterIP", "clusterIP": "10.0.0.1"},
            "status": {}}
    assert status.contains(live, desired)
    assert not status.contains({"spec": {"ports": [{"port": 81}], "type": "ClusterIP"}}, desired)
    assert not status.contains({"spec": {"ports": [], "type": "ClusterIP"}}, desired)
    assert not status.contains({"spec": {"type": "ClusterIP"}}, desired)


@pytest.mark.parametrize("desired, live", [
    ("0.5", "500m"), ("1.5Gi", "1536Mi"), ("1", "1000m"), ("1000M", "1G"), ("0.1", "100m"), ("2048Ki", "2Mi"),
])
def test_quantities_are_compared_by_value_not_by_string(desired, live):
    """The API server returns quantities in canonical form: 0.5 comes back as 500m."""
    want = {"spec": {"containers": [{"resources": {"requests": {"cpu": desired}, "limits": {"memory": desired}}}]}}
    have = {"spec": {"containers": [{"resources": {"requests": {"cpu": live}, "limits": {"memory": live}}}]}}
    assert status.contains(have, want)
    other = {"spec": {"containers": [{"resources": {"requests": {"cpu": live + "0"}, "limits": {"memory": live}}}]}}
    assert not status.contains(other, want)


def test_only_resource_quantities_are_compared_by_value():
    assert not status.contains({"data": {"cpu": "500m"}}, {"data": {"cpu": "0.5"}})


def test_applied_needs_the_same_hash_and_every_field_in_place():
    desired = {"metadata": {"annotations": {"greentic.ai/applied-hash": "abc"}}, "spec": {"replicas": 2}}
    assert status.is_applied(desired, {"metadata": {"annotations": {"greentic.ai/applied-hash": "abc"}},
                                       "spec": {"replicas": 2, "paused": False}})
    assert not status.is_applied(desired, None)
    assert not status.is_applied(desired, {"metadata": {"annotations": {"greentic.ai/applied-hash": "old"}},
                                           "spec": {"replicas": 2}})
    edited = {"metadata": {"annotations": {"greentic.ai/applied-hash": "abc"}}, "spec": {"replicas": 7}}
    assert not status.is_applied(desired, edited)  # someone scaled it by hand


# --------------------------------------------------------------------------- routes


def route(refs, generation=2, parents=None):
    doc = {"metadata": {"name": "gt-d", "namespace": "shop", "generation": generation},
           "spec": {"rules": [{"backendRefs": refs}]}}
    if parents is not None:
        doc["status"] = {"parents": parents}
    return doc


def test_route_weights_map_backends_to_revision_ids():
    rid = "01JX3M0A1B2C3D4E5F6G7H8J9K"
    weights = status.route_weights(route([{"name": f"gt-{rid.lower()}", "weight": 3333},
                                          {"name": "legacy-svc"}]))
    assert weights == {rid: 3333, "legacy-svc": 1}  # Gateway API's default weight is 1
    assert status.route_weights(None) == {}


def accepted(status_value="True", observed=2, name="gw", namespace="edge"):
    return [{"parentRef": {"name": name, "namespace": namespace},
             "conditions": [{"type": "Accepted", "status": status_value, "observedGeneration": observed,
                             "reason": "Accepted" if status_value == "True" else "NotAllowedByListeners"}]}]


@pytest.mark.parametrize("parents, expected", [
    (accepted(), True),
    (accepted(observed=1), False),  # the gateway has not processed this generation yet
    (accepted("False"), False),
    ([{"parentRef": {"name": "gw", "namespace": "edge"}, "conditions": []}], False),
])
def test_route_acceptance_follows_the_gateways_status(parents, expected):
    ok, why = status.route_accepted(route([], parents=parents), "gw", "edge")
    assert ok is expected and why


@pytest.mark.parametrize("parents, fragment", [
    (None, "status.parents is empty"),  # Gateway API: an empty list means attached to no Gateway
    ([], "status.parents is empty"),
    (accepted(name="other"), "names edge/other but not Gateway edge/gw"),  # a wrong gateway name
    (accepted(namespace="elsewhere"), "not Gateway edge/gw"),
])
def test_a_route_our_gateway_has_not_accepted_is_not_accepted(parents, fragment):
    ok, why = status.route_accepted(route([], parents=parents), "gw", "edge")
    assert ok is False and fragment in why


def test_route_acceptance_is_for_our_listener_when_we_name_one():
    parents = [{"parentRef": {"name": "gw", "namespace": "edge", "sectionName": "other"},
                "conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 2}]}]
    assert status.route_accepted(route([], parents=parents), "gw", "edge", "https")[0] is False
    assert status.route_accepted(route([], parents=parents), "gw", "edge", "other")[0] is True
