"""The ``workload`` field (ours, not upstream) is validated like every other rule."""

import pytest
from builders import add, make_deployment, make_env, make_revision

from greentic_core.spec import Workload
from greentic_core.validation import InvalidWorkload, validate_environment


def _env_with(workload: Workload):
    env = make_env("dev")
    dep = make_deployment("dev")
    return add(env, dep, make_revision("dev", dep, workload=workload))


def test_a_runnable_workload_is_valid():
    validate_environment(_env_with(Workload(command=("python3", "-m", "app"), port=8080, env={"A": "1"})))


@pytest.mark.parametrize(
    "workload, fragment",
    [
        (Workload(command=("app",), port=0), "port 0"),
        (Workload(command=("app",), port=70000), "port 70000"),
        (Workload(command=("app",), replicas=0), "replicas 0"),
        (Workload(command=("app",), health_path="healthz"), "health_path"),
        (Workload(command=("",)), "command"),
        (Workload(command=()), "command"),
        (Workload(image="bad image"), "image"),
        (Workload(command=("app",), env={"A=B": "x"}), "environment variable"),
    ],
)
def test_an_unrunnable_workload_is_refused_with_one_line(workload, fragment):
    with pytest.raises(InvalidWorkload) as info:
        validate_environment(_env_with(workload))
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.details["path"] == "revisions[0].workload"
