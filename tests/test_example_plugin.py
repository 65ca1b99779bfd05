"""The example third-party plugin installs with pip and works through the registry and the CLI.

``examples/greentic-deployer-example`` is what plugin authors copy, so it is tested the way a
user gets it: a real ``pip install`` (into a temporary target directory), discovery through
the installed metadata, every verb through :meth:`Registry.bind`, and the CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import greentic_core.registry as registry_module
from greentic_core import InvalidAnswers
from greentic_core.codec import load_environment
from greentic_core.registry import Registry

from plugin_factory import forget_modules

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "greentic-deployer-example"
FIXTURE = Path(__file__).parent / "fixtures" / "upstream-example.json"
NAME = "acme.deployer.files"
R1 = "01JX3M0A1B2C3D4E5F6G7H8J9K"
R2 = "01JX3N5P7Q9R1S3T5V7W9X1Y3Z"
DEP = "01JX3K8M2N4P6Q8R0S2T4V6W8X"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip install --no-deps --target`` of the example: what a user's pip would leave."""
    target = tmp_path_factory.mktemp("example-site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input", "--disable-pip-version-check",
         "--target", str(target), str(EXAMPLE)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


@pytest.fixture
def registry(installed, monkeypatch, tmp_path):
    for var in (registry_module.ALLOW_ENV, registry_module.DENY_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(installed))
    yield Registry(cache_dir=tmp_path / "cache")
    forget_modules(["greentic_example_files"])


@pytest.fixture(scope="module")
def env():
    return load_environment(FIXTURE.read_bytes())


def test_pip_install_lays_out_metadata_and_entry_point(installed):
    infos = list(installed.glob("greentic_deployer_example-1.0.0.dist-info"))
    assert len(infos) == 1
    assert "acme.deployer.files = greentic_example_files.hooks" in (infos[0] / "entry_points.txt").read_text()
    assert (installed / "greentic_example_files" / "hooks.py").is_file()


def test_registry_shows_the_example_ok(registry, installed):
    record = registry.record(NAME)

    assert record.status == "ok", record.reason
    assert (record.distribution, record.dist_version) == ("greentic-deployer-example", "1.0.0")
    assert record.descriptor.path == NAME and record.descriptor.version == "1.0.0"
    assert record.has_sandbox and record.warnings == []
    assert Path(record.plugin.__file__).is_relative_to(installed)


def test_warm_split_observe_archive_round_trip(registry, env, tmp_path):
    root = tmp_path / "files"
    deployer = registry.bind(f"{NAME}@1.0.0", {"root": str(root)}, tmp_path / "state")
    marker = root / "local" / "revisions" / f"{R1}.json"
    route = root / "local" / "routes" / f"{DEP}.json"

    deployer.stage(env, R1)
    deployer.warm(env, R1)
    deployer.warm(env, R2)
    assert deployer.warm(env, R1).detail["already_serving"] is True  # idempotent
    applied = deployer.apply_traffic_split(env, DEP)
    seen = deployer.observe(env)

    assert json.loads(marker.read_text())["serving"] is True
    assert json.loads(route.read_text())["weights_bps"] == {R1: 9000, R2: 1000}
    assert applied.applied_deployment_id == DEP and applied.provider_weights == {R1: 9000, R2: 1000}
    assert seen.revision(R1).present and seen.revision(R1).serving
    assert seen.weights(DEP) == {R1: 9000, R2: 1000}

    deployer.drain(env, R2)
    assert deployer.observe(env).revision(R2).present and not deployer.observe(env).revision(R2).serving

    deployer.archive(env, R1)
    deployer.archive(env, R1)  # idempotent: already gone
    assert not marker.exists()
    assert not deployer.observe(env).revision(R1).present
    assert not (tmp_path / "state").exists()  # the root answer wins over state_dir


def test_without_root_the_state_dir_is_used(registry, env, tmp_path):
    deployer = registry.bind(f"{NAME}@1.0.0", {}, tmp_path / "state")

    deployer.warm(env, R1)

    assert (tmp_path / "state" / "files-deployer" / "local" / "revisions" / f"{R1}.json").is_file()
    assert deployer.observe(env).revision(R1).serving


def test_unknown_answer_keys_are_refused(registry):
    with pytest.raises(InvalidAnswers, match="rooot"):
        registry.bind(f"{NAME}@1.0.0", {"rooot": "/tmp/x"})


def test_conformance_sandbox_yields_answers_for_a_temporary_root(registry, env, tmp_path):
    with registry.sandbox(NAME, tmp_path / "work") as answers:
        root = Path(answers["root"])
        assert root.is_dir()
        deployer = registry.bind(f"{NAME}@1.0.0", answers)
        deployer.warm(env, R1)
        assert deployer.observe(env).revision(R1).serving

    assert not root.exists()


def test_preflight_reports_a_writable_directory(registry, env, tmp_path):
    checks = registry.bind(f"{NAME}@1.0.0", {"root": str(tmp_path / "files")}).preflight(env)

    assert [(c.name, c.status.value) for c in checks] == [("directory", "pass")]


def test_example_imports_only_the_public_package():
    source = (EXAMPLE / "greentic_example_files" / "hooks.py").read_text()
    imports = [line.strip() for line in source.splitlines() if line.startswith(("import ", "from "))]

    assert [line for line in imports if "greentic_core" in line] == ["from greentic_core import ("]


def test_cli_plugins_list_shows_the_example_ok(installed, tmp_path):
    environ = {k: v for k, v in os.environ.items()
               if k not in (registry_module.ALLOW_ENV, registry_module.DENY_ENV)}
    environ.update(PYTHONPATH=str(installed), GREENTIC_CACHE_DIR=str(tmp_path / "cache"))

    result = subprocess.run([sys.executable, "-m", "greentic_core", "--json", "plugins", "list"],
                            env=environ, capture_output=True, text=True, timeout=120, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    plugin = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}[NAME]
    assert plugin["status"] == "ok"
    assert (plugin["distribution"], plugin["version"]) == ("greentic-deployer-example", "1.0.0")
    assert plugin["descriptor"]["answers_schema"]["additionalProperties"] is False


def test_the_minimal_hooks_py_in_the_plugin_authors_guide_is_a_working_plugin(tmp_path, monkeypatch, env):
    """docs/plugin-authors.md promises a complete plugin; install its listing and use it."""
    from plugin_factory import make_dist

    guide = (REPO / "docs" / "plugin-authors.md").read_text()
    section = guide.split("## A complete minimal hooks.py", 1)[1]
    listing = section.split("```python\n", 1)[1].split("```", 1)[0]
    site = tmp_path / "site"
    make_dist(site, "acme-deployer-minimal", "1.0.0", {"acme_minimal_hooks.py": listing},
              {"acme.deployer.minimal": "acme_minimal_hooks"})
    for var in (registry_module.ALLOW_ENV, registry_module.DENY_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(site))
    try:
        registry = Registry(cache_dir=tmp_path / "cache")
        record = registry.record("acme.deployer.minimal")
        assert record.status == "ok", record.reason
        assert record.warnings == []

        deployer = registry.bind("acme.deployer.minimal@1.0.0", {"root": str(tmp_path / "files")})
        deployer.stage(env, R1)
        deployer.warm(env, R1)
        deployer.apply_traffic_split(env, DEP)
        seen = deployer.observe(env)
        assert seen.revision(R1).serving and seen.weights(DEP) == {R1: 9000, R2: 1000}
        deployer.drain(env, R1)
        assert not deployer.observe(env).revision(R1).serving
        deployer.archive(env, R1)
        deployer.archive(env, R1)
        assert not deployer.observe(env).revision(R1).present
        with pytest.raises(InvalidAnswers):
            registry.bind("acme.deployer.minimal@1.0.0", {"rooot": "x"})
    finally:
        forget_modules(["acme_minimal_hooks"])
