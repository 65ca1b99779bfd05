"""The ALB and ELBv2 rules the provider must keep itself (moto does not enforce them). Pure: no I/O.

Sources: the Elastic Load Balancing "Listener rules for your Application Load Balancer"
guide (condition types, wildcards, quotas) and botocore's ``elbv2`` service model (tag and
priority constraints). Each constant names the rule it holds.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

#: Host-header condition values: at most 128 characters of A-Z a-z 0-9 - . * ?, at least one
#: '.', only letters after the last '.'.
MAX_HOST_CHARS = 128
_HOST_CHARS = re.compile(r"[A-Za-z0-9.*?-]+")
#: Path-pattern condition values: at most 128 characters of A-Z a-z 0-9 _ - . $ / ~ " ' @ : + & * ?.
MAX_PATH_CHARS = 128
_PATH_CHARS = re.compile(r"[A-Za-z0-9_.$/~\"'@:+&*?-]+")
#: At most five wildcards ('*' and '?') in the condition values of one rule.
MAX_WILDCARDS_PER_RULE = 5
#: At most five condition values in one rule.
MAX_CONDITION_VALUES_PER_RULE = 5
#: Listener rule priorities.
MIN_PRIORITY, MAX_PRIORITY = 1, 50000
#: ELBv2 and ECS tag values (``ecs.env_tag`` keeps ours within it).
MAX_TAG_VALUE_CHARS = 256


def host_value_problem(value: str) -> str | None:
    """Why an ALB host-header value is refused by the ALB, or ``None``."""
    shown = repr(value if len(value) <= 80 else value[:60] + "..." + value[-10:])
    if len(value) > MAX_HOST_CHARS:
        return f"host-header value {shown} has {len(value)} characters; an ALB takes at most {MAX_HOST_CHARS}"
    if not _HOST_CHARS.fullmatch(value):
        bad = next((c for c in value if not _HOST_CHARS.fullmatch(c)), "")
        return (f"host-header value {shown} contains {bad!r}; an ALB host condition takes only "
                "A-Z a-z 0-9 - . * ? (no port, no comma-separated list, no '_')")
    if "." not in value:
        return f"host-header value {shown} has no '.'; an ALB host condition needs at least one"
    if not value.rsplit(".", 1)[1].isalpha():
        return (f"host-header value {shown}: an ALB host condition takes only letters after the last '.' "
                "(an IP address or a trailing dot is refused)")
    return None


def path_value_problem(value: str) -> str | None:
    """Why an ALB path-pattern value is refused by the ALB, or ``None``."""
    shown = repr(value if len(value) <= 80 else value[:60] + "..." + value[-10:])
    if len(value) > MAX_PATH_CHARS:
        return f"path-pattern value {shown} has {len(value)} characters; an ALB takes at most {MAX_PATH_CHARS}"
    if not _PATH_CHARS.fullmatch(value):
        bad = next((c for c in value if not _PATH_CHARS.fullmatch(c)), "")
        return (f"path-pattern value {shown} contains {bad!r}; an ALB path condition takes only "
                "A-Z a-z 0-9 _ - . $ / ~ \" ' @ : + & * ?")
    return None


def condition_values(conditions: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``[(field, value)]`` of host-header and path-pattern conditions, in order."""
    out = []
    for cond in conditions:
        field = cond.get("Field")
        config = cond.get("HostHeaderConfig") if field == "host-header" else cond.get("PathPatternConfig")
        for value in (config or {}).get("Values") or cond.get("Values") or ():
            out.append((str(field), str(value)))
    return out


def conditions_problems(conditions: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every ALB rule one listener rule's conditions break (values already filled)."""
    values = condition_values(conditions)
    problems = []
    for field, value in values:
        problem = host_value_problem(value) if field == "host-header" else path_value_problem(value)
        if problem:
            problems.append(problem)
    wildcards = sum(value.count("*") + value.count("?") for _, value in values)
    if wildcards > MAX_WILDCARDS_PER_RULE:
        problems.append(f"the rule's conditions hold {wildcards} wildcards ('*', '?'); an ALB rule takes at most "
                        f"{MAX_WILDCARDS_PER_RULE}")
    if len(values) > MAX_CONDITION_VALUES_PER_RULE:
        problems.append(f"the rule has {len(values)} condition values; an ALB rule takes at most "
                        f"{MAX_CONDITION_VALUES_PER_RULE}")
    return problems


def choose_priority(used: Iterable[int], first: int, last: int) -> int | None:
    """The priority of a new rule in ``first..last``: after the highest used one in the range when
    that fits, else the lowest free one; ``None`` when the range is full."""
    taken = {p for p in used if first <= p <= last}
    after = max(taken, default=first - 1) + 1
    if after <= last:
        return after
    return next((p for p in range(first, last + 1) if p not in taken), None)
