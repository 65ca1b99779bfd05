"""Start-up guard: read commands never import the machinery they do not use.

Each command runs in a fresh interpreter through the real entry point; at exit the interpreter
reports ``sys.modules``. A module named here costs start-up time on every call (the figures are
in ``benchmarks/cli.py`` and docs/performance.md); this checks which modules were *not*
imported, never how long anything took.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import recording_plugin

PROBE = """
import atexit, json, sys
atexit.register(lambda: sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n"))
sys.argv[0] = "greentic-deployer"
from greentic_core.cli import main
main()
"""

#: Never needed to read or list anything: desired state, schemas, rollouts, the operator and the
#: plugin machinery, answer validation, YAML.
NEVER_ON_READ = ("greentic_core.desired", "greentic_core.schema", "greentic_core.rollout", "greentic_core.plan",
                 "greentic_core.apply", "greentic_core.operator", "greentic_core.lifecycle", "jsonschema", "yaml")
#: Loading plugins: only commands that call a provider or list plugins need these.
PLUGIN_MACHINERY = ("pluggy", "packaging", "greentic_core.registry", "greentic_core.contract",
                    "greentic_core.hookspecs", "greentic_core.outcomes")
#: Decoding a document (the cattrs converters) and rich's rendering.
DECODING = ("cattrs", "greentic_core.validation")
RICH = ("rich",)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A store with environment ``dev``: one deployment, two revisions, a split (record-only)."""
    root = tmp_path_factory.mktemp("startup")
    site = recording_plugin.install(root / "site")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}
    env.update(GREENTIC_HOME=str(root / "home"), GREENTIC_CACHE_DIR=str(root / "cache"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")])))

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "greentic_core", *args], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    run("env", "init", "dev", "--deployer", recording_plugin.NAME)
    run("deployment", "add", "dev", "shop")
    first = run("revision", "stage", "dev", "shop", "--record-only")
    run("revision", "warm", "dev", first, "--record-only")
    run("traffic", "set", "dev", "shop", f"{first}=10000", "--record-only")
    run("revision", "stage", "dev", "shop", "--record-only")
    return root, env


def imported(env: dict[str, str], *args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stderr.splitlines() if line.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (or their submodules) were imported."""
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


READ_COMMANDS = [
    ("env", "list"),
    ("env", "show", "dev"),
    ("revision", "list", "dev"),
    ("revision", "show", "dev", "latest"),
    ("traffic", "show", "dev"),
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_read_command_imports_neither_the_operator_nor_the_plugin_machinery(home, command):
    modules = imported(home[1], *command)
    assert loaded(modules, NEVER_ON_READ + PLUGIN_MACHINERY) == []
    assert "greentic_core.spec" in modules  # the probe really ran the command


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_read_command_with_json_does_not_import_rich(home, command):
    modules = imported(home[1], "--json", *command)
    assert loaded(modules, NEVER_ON_READ + PLUGIN_MACHINERY + RICH) == []


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_read_command_printing_tables_to_a_pipe_does_not_import_rich(home, command):
    """Off a terminal the tables and lines are plain text, written without rich
    (tests/test_cli_output.py checks they are the bytes rich would print)."""
    modules = imported(home[1], *command)
    assert loaded(modules, RICH) == []


#: Spec types and the attrs they are made of: not needed to print help or a version.
TYPES = ("greentic_core.spec", "attrs", "attr")


def test_version_imports_no_document_or_plugin_code(home):
    modules = imported(home[1], "--version")
    assert loaded(modules, NEVER_ON_READ + PLUGIN_MACHINERY + DECODING + RICH + TYPES) == []


def test_help_lists_every_command_without_importing_their_machinery(home):
    imported(home[1], "--help")  # the first run fills the discovery cache of this sys.path
    modules = imported(home[1], "--help")
    assert loaded(modules, NEVER_ON_READ + PLUGIN_MACHINERY + DECODING + RICH + TYPES + ("importlib.metadata",)) == []
    assert "greentic_core.cli.operator_commands" in modules and "greentic_core.cli.rollout_commands" in modules


#: Store drivers: imported when a store of theirs is opened, never to list the store plugins.
STORE_DRIVERS = ("psycopg", "psycopg_binary", "boto3", "botocore")


def test_plugins_list_does_not_decode_documents_or_run_the_operator(home):
    modules = imported(home[1], "--json", "plugins", "list")
    assert loaded(modules, NEVER_ON_READ + STORE_DRIVERS + ("cattrs", "rich")) == []
    assert "greentic_core.registry" in modules


def test_plugins_list_table_imports_no_store_driver_and_no_rich(home):
    modules = imported(home[1], "plugins", "list")
    assert loaded(modules, NEVER_ON_READ + STORE_DRIVERS + ("cattrs", "rich")) == []


def test_plugins_list_loads_the_plugins_without_the_spec_or_the_file_store(home):
    """Loading a plugin needs the outcome types, not the spec's classes; listing the store
    plugins opens no store."""
    modules = imported(home[1], "plugins", "list")
    assert loaded(modules, ("greentic_core.spec", "greentic_core.contract", "greentic_core.store.contract",
                            "greentic_core.store.file", "greentic_core.codec")) == []
    assert "greentic_core.outcomes" in modules and "greentic_core.registry" in modules  # it did load them


def test_completing_a_revision_reads_the_store_without_the_operator_or_plugins(home):
    env = {**home[1], "COMP_WORDS": "greentic-deployer revision show dev ", "COMP_CWORD": "4",
           "_GREENTIC_DEPLOYER_COMPLETE": "bash_complete"}
    modules = imported(env)
    assert loaded(modules, NEVER_ON_READ + PLUGIN_MACHINERY + RICH) == []
    assert "greentic_core.spec" in modules  # it did read the environment


def test_completing_a_command_name_imports_no_document_code(home):
    env = {**home[1], "COMP_WORDS": "greentic-deployer rev", "COMP_CWORD": "1", "_GREENTIC_DEPLOYER_COMPLETE": "bash_complete"}
    modules = imported(env)
    assert loaded(modules, NEVER_ON_READ + PLUGIN_MACHINERY + DECODING + RICH + TYPES) == []
    assert "click.shell_completion" in modules and "greentic_core.cli.operator_commands" in modules  # it ran


def test_a_record_only_mutation_imports_neither_jsonschema_nor_rich(home):
    """The recorded answers are checked by the answers check's fast path (simple_schema), and the
    one-line result is plain text: a mutation's own work pays for neither."""
    modules = imported(home[1], "revision", "stage", "dev", "shop", "--record-only")
    assert loaded(modules, ("jsonschema", "rich", "ulid")) == []
    assert "greentic_core.operator" in modules  # it did run the operator


def test_a_record_only_mutation_checks_versions_without_semver_or_packaging(home):
    """The version pin and a plugin's ``requires_core`` of the common form are decided by the
    registry itself (tests/test_registry.py holds them to semver's and packaging's answers);
    the host is named without ``socket``, a percentage read without ``decimal``, the save's temp file
    made without ``tempfile`` and the discovery cache keyed without ``hashlib``."""
    listing = subprocess.run([sys.executable, "-m", "greentic_core", "--json", "revision", "list", "dev"], env=home[1],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    ready = next(r["revision_id"] for r in json.loads(listing)["revisions"] if r["lifecycle"] == "ready")
    argv = ("traffic", "set", "dev", "shop", f"{ready}=100%", "--record-only")
    imported(home[1], *argv)  # the first run fills the discovery cache of this sys.path
    modules = imported(home[1], *argv)
    assert loaded(modules, ("semver", "packaging", "socket", "decimal", "difflib", "hashlib", "tempfile")) == []
    assert "greentic_core.registry" in modules  # it did bind the deployer
