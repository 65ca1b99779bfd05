"""The conformance sandbox: a moto server on 127.0.0.1 and the AWS resources the provider needs.

``sandbox(workdir)`` starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 (a free port),
creates a VPC with two subnets, a security group, an internal ALB with an HTTP listener, a pool
of target groups (target type ip) and an ECS cluster, and yields answers pointing at it
(``endpoint_url``, dummy credentials, ``desired_count: 0``: moto cannot start Fargate tasks, so
task sets are judged serving with 0/0 running tasks, see the README). Leaving the context
deletes what it created and stops the server. Needs the ``test`` extra (``moto[server]``).

:func:`provision` / :func:`teardown` are also used by this distribution's tests to give every
test its own cluster, listener and pool on one shared server.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

REGION = "eu-west-1"
DUMMY_CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}


_ECS_TARGET = "AmazonEC2ContainerServiceV20141113."
#: RFC 6761: names under .invalid never resolve, so no registry there can ever be pulled from.
UNPULLABLE_SUFFIXES = (".invalid",)


def unpullable(image: str) -> bool:
    first = image.split("/", 1)[0]
    host = first.split(":", 1)[0].lower() if "/" in image else ""
    return any(host == s[1:] or host.endswith(s) for s in UNPULLABLE_SUFFIXES)


class UnpullableImages:
    """WSGI middleware in front of moto: ECS as it behaves when a task's image cannot be pulled.

    moto starts no Fargate task (the sandbox runs the service at desired count 0) and reports
    every task set STEADY_STATE at once, so a revision whose image does not exist would look
    serving. Real ECS keeps such a task set STABILIZING and stops each task it launches with
    ``CannotPullContainerError``. For images whose registry is under ``.invalid`` this layer
    does the same: their task sets report STABILIZING with 0 of 1 tasks running, and
    ``ListTasks(family=..., desiredStatus=STOPPED)`` / ``DescribeTasks`` show stopped tasks
    with that reason. Everything else passes through untouched.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.broken: dict[str, dict[str, Any]] = {}  # task definition ARN -> its family, images
        self.synthetic: dict[str, dict[str, Any]] = {}  # stopped task ARN -> task document
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith(_ECS_TARGET):
            return self.app(environ, start_response)
        op = target[len(_ECS_TARGET):]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        request = json.loads(body or b"{}")
        if op == "ListTasks" and request.get("desiredStatus") == "STOPPED":
            tasks = self._stopped_tasks(request.get("family"), request.get("cluster", "default"))
            if tasks:
                return self._reply(start_response, {"taskArns": [t["taskArn"] for t in tasks]})
        if op == "DescribeTasks":
            with self.lock:
                found = [self.synthetic[a] for a in request.get("tasks", []) if a in self.synthetic]
            if found and len(found) == len(request.get("tasks", [])):
                return self._reply(start_response, {"tasks": found, "failures": []})
        if op not in ("RegisterTaskDefinition", "CreateTaskSet", "DescribeTaskSets", "UpdateTaskSet"):
            return self.app(environ, start_response)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        chunks = self.app(environ, capture)
        try:
            payload = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        if captured.get("status", "").startswith("200"):
            payload = self._rewrite(op, request, payload)
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], headers + [("Content-Length", str(len(payload)))])
        return [payload]

    def _rewrite(self, op: str, request: dict[str, Any], payload: bytes) -> bytes:
        doc = json.loads(payload or b"{}")
        if op == "RegisterTaskDefinition":
            images = [c.get("image", "") for c in request.get("containerDefinitions", [])]
            if any(unpullable(i) for i in images):
                td = doc.get("taskDefinition", {})
                with self.lock:
                    self.broken[td.get("taskDefinitionArn", "")] = {"family": td.get("family"), "images": images}
            return payload
        sets = doc.get("taskSets") or ([doc["taskSet"]] if "taskSet" in doc else [])
        changed = False
        for ts in sets:
            if ts.get("taskDefinition") in self.broken and float((ts.get("scale") or {}).get("value", 100)) > 0:
                ts.update({"stabilityStatus": "STABILIZING", "computedDesiredCount": 1, "runningCount": 0,
                           "pendingCount": 0})
                changed = True
        return json.dumps(doc).encode() if changed else payload

    def _stopped_tasks(self, family: str | None, cluster: str) -> list[dict[str, Any]]:
        with self.lock:
            arns = [arn for arn, info in self.broken.items() if info["family"] == family]
            if not arns:
                return []
            task_def = arns[-1]
            info = self.broken[task_def]
            region, account = task_def.split(":")[3], task_def.split(":")[4]
            cluster_name = cluster.rsplit("/", 1)[-1]
            image = next(i for i in info["images"] if unpullable(i))
            reason = (f"CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to "
                      f"resolve ref {image}: dial tcp: lookup {image.split('/', 1)[0]}: no such host")
            while len([t for t in self.synthetic.values() if t["taskDefinitionArn"] == task_def]) < 3:
                arn = f"arn:aws:ecs:{region}:{account}:task/{cluster_name}/{uuid.uuid4().hex}"
                self.synthetic[arn] = {
                    "taskArn": arn, "clusterArn": f"arn:aws:ecs:{region}:{account}:cluster/{cluster_name}",
                    "taskDefinitionArn": task_def, "lastStatus": "STOPPED", "desiredStatus": "STOPPED",
                    "stopCode": "TaskFailedToStart", "stoppedReason": reason, "stoppedAt": time.time(),
                    "containers": [{"name": "app", "image": image, "lastStatus": "STOPPED", "reason": reason}],
                }
            return [t for t in self.synthetic.values() if t["taskDefinitionArn"] == task_def]

    @staticmethod
    def _reply(start_response: Any, doc: dict[str, Any]) -> list[bytes]:
        payload = json.dumps(doc).encode()
        start_response("200 OK", [("Content-Type", "application/x-amz-json-1.1"),
                                  ("Content-Length", str(len(payload)))])
        return [payload]


def start_server() -> tuple[Any, str]:
    """A moto server on 127.0.0.1 (free port) with :class:`UnpullableImages` in front; returns it and its URL."""
    try:
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("the aws-ecs sandbox needs moto: pip install 'greentic-deployer-aws[sandbox]'") from exc
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    class Server(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = UnpullableImages(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    server = Server(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


@functools.lru_cache(maxsize=32)
def _client(service: str, endpoint_url: str, region: str = REGION):
    import boto3

    return boto3.session.Session(
        aws_access_key_id=DUMMY_CREDENTIALS["access_key_id"],
        aws_secret_access_key=DUMMY_CREDENTIALS["secret_access_key"], region_name=region,
    ).client(service, endpoint_url=endpoint_url)


def provision(endpoint_url: str, *, region: str = REGION, pool_size: int = 10, prefix: str | None = None,
              routing_host: str | None = "{deployment_id}.greentic.test") -> dict[str, Any]:
    """Create one isolated stack on the server at ``endpoint_url``; return the answers for it."""
    prefix = prefix or f"g{uuid.uuid4().hex[:8]}"
    ec2 = _client("ec2", endpoint_url, region)
    elb = _client("elbv2", endpoint_url, region)
    ecs = _client("ecs", endpoint_url, region)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{region}{zone}")["Subnet"]["SubnetId"]
        for i, zone in enumerate("ab")
    ]
    sg = ec2.create_security_group(GroupName=f"{prefix}-tasks", Description="greentic sandbox", VpcId=vpc)["GroupId"]
    lb = elb.create_load_balancer(Name=f"{prefix}-alb", Subnets=subnets, SecurityGroups=[sg], Scheme="internal",
                                  Type="application")["LoadBalancers"][0]["LoadBalancerArn"]
    pool = [
        elb.create_target_group(Name=f"{prefix}-tg{i:02d}", Protocol="HTTP", Port=8080, VpcId=vpc,
                                TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
        for i in range(pool_size)
    ]
    listener = elb.create_listener(
        LoadBalancerArn=lb, Protocol="HTTP", Port=80,
        DefaultActions=[{"Type": "fixed-response",
                         "FixedResponseConfig": {"StatusCode": "404", "ContentType": "text/plain",
                                                 "MessageBody": "no route"}}],
    )["Listeners"][0]["ListenerArn"]
    cluster = ecs.create_cluster(clusterName=f"{prefix}-cluster")["cluster"]["clusterName"]
    answers: dict[str, Any] = {
        "region": region,
        "endpoint_url": endpoint_url,
        **DUMMY_CREDENTIALS,
        "cluster": cluster,
        "subnets": subnets,
        "security_groups": [sg],
        "target_group_arns": pool,
        "listener_arn": listener,
        "execution_role_arn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        "desired_count": 0,
        "default_image": "public.ecr.aws/docker/library/nginx:1.27",
        "warm_timeout_seconds": 30,
        "poll_interval_seconds": 0.05,
        "drain_slack_seconds": 2,
    }
    if routing_host:
        answers["routing_host"] = routing_host
    return answers


def teardown(answers: dict[str, Any]) -> None:
    """Delete (best effort) what :func:`provision` created and what the provider left in it."""
    endpoint, region = answers["endpoint_url"], answers["region"]
    elb = _client("elbv2", endpoint, region)
    ecs = _client("ecs", endpoint, region)
    ec2 = _client("ec2", endpoint, region)
    with contextlib.suppress(Exception):
        for arn in ecs.list_services(cluster=answers["cluster"]).get("serviceArns", []):
            ecs.delete_service(cluster=answers["cluster"], service=arn, force=True)
    with contextlib.suppress(Exception):
        ecs.delete_cluster(cluster=answers["cluster"])
    lb_arn = None
    with contextlib.suppress(Exception):
        lb_arn = elb.describe_listeners(ListenerArns=[answers["listener_arn"]])["Listeners"][0]["LoadBalancerArn"]
        elb.delete_listener(ListenerArn=answers["listener_arn"])
    with contextlib.suppress(Exception):
        if lb_arn:
            elb.delete_load_balancer(LoadBalancerArn=lb_arn)
    for arn in answers["target_group_arns"]:
        with contextlib.suppress(Exception):
            elb.delete_target_group(TargetGroupArn=arn)
    with contextlib.suppress(Exception):
        for sg in answers["security_groups"]:
            ec2.delete_security_group(GroupId=sg)
        vpc = ec2.describe_subnets(SubnetIds=list(answers["subnets"]))["Subnets"][0]["VpcId"]
        for subnet in answers["subnets"]:
            ec2.delete_subnet(SubnetId=subnet)
        ec2.delete_vpc(VpcId=vpc)


@contextlib.contextmanager
def sandbox(workdir: Path) -> Iterator[dict[str, Any]]:
    server, endpoint = start_server()
    answers: dict[str, Any] | None = None
    try:
        answers = provision(endpoint)
        yield dict(answers)
    finally:
        try:
            if answers is not None:
                teardown(answers)
        finally:
            server.stop()
