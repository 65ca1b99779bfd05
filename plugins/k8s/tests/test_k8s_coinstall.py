"""lightkube co-installs with boto3: nothing this distribution needs depends on python-dateutil, whose
newest releases the official `kubernetes` client and botocore pin to incompatible ranges."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

import pytest


def requirement_closure(distribution: str) -> set[str]:
    """Names of every distribution ``distribution`` needs at run time (no extras), recursively."""
    seen: set[str] = set()
    todo = [distribution]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requirements:
            if "extra ==" in requirement:
                continue
            marker_free = requirement.split(";")[0]
            if ";" in requirement and "python_version" in requirement and "3.11" not in requirement:
                continue
            todo.append(re.split(r"[\s<>=!~\[(]", marker_free.strip(), maxsplit=1)[0])
    return seen


def test_the_provider_needs_neither_python_dateutil_nor_the_kubernetes_client():
    closure = requirement_closure("greentic-deployer-k8s")
    assert "lightkube" in closure
    assert "python-dateutil" not in closure
    assert "kubernetes" not in closure


def test_lightkube_and_boto3_import_together():
    pytest.importorskip("boto3", reason="boto3 is not installed here (the AWS provider brings it)")
    code = "import boto3, botocore, lightkube, greentic_k8s.k8s; print(botocore.__version__, lightkube.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
