"""Every distribution builds, and users install only what they need.

One session-scoped build makes a wheel and an sdist of each distribution (``python -m build``
builds the wheel *from the unpacked sdist*, so a file missing from the sdist fails here).
The dependency closure of those wheels is fetched once into a session wheelhouse (``pip
wheel``; pip's own HTTP cache makes it cheap after the first run), and four fresh virtual
environments are installed from the two directories with ``--no-index``:

* core alone: ``plugins list`` shows no provider and says how to install one;
* core + aws: no Kubernetes library at all, only the aws provider listed;
* core + k8s: no boto3/botocore, only the k8s provider listed;
* everything: every provider ok and ``pip check`` passes (the providers' dependencies
  co-install: lightkube instead of the ``kubernetes`` client, whose python-dateutil>=3
  requirement conflicts with botocore's <3).

The venvs are created ``--without-pip`` and filled by this interpreter's pip through
``pip --python``: the installed result is the same, without ensurepip's cost four times.
Machine-wide pip configuration is switched off for the installs, so nothing but the built
wheels and the wheelhouse can be installed.
"""

from __future__ import annotations

import ast
import concurrent.futures
import email
import email.message
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parent.parent
LICENSE = (REPO / "LICENSE").read_text(encoding="utf-8")

#: distribution name -> (source directory, import package, provider entry-point name or None)
DISTRIBUTIONS: dict[str, tuple[Path, str, str | None]] = {
    "greentic-core": (REPO, "greentic_core", None),
    "greentic-deployer-local-process": (REPO / "plugins" / "local_process", "greentic_local_process",
                                        "greentic.deployer.local-process"),
    "greentic-deployer-k8s": (REPO / "plugins" / "k8s", "greentic_k8s", "greentic.deployer.k8s"),
    "greentic-deployer-aws": (REPO / "plugins" / "aws", "greentic_aws", "greentic.deployer.aws-ecs"),
    "greentic-conformance": (REPO / "conformance", "greentic_conformance", None),
    "greentic-store-postgres": (REPO / "plugins" / "store_postgres", "greentic_store_postgres", None),
    "greentic-store-s3": (REPO / "plugins" / "store_s3", "greentic_store_s3", None),
    "greentic-deployer-ui": (REPO / "ui", "greentic_ui", None),
}
PROVIDERS = {name: ep for name, (_, _, ep) in DISTRIBUTIONS.items() if ep}

#: requirement name -> the top-level module it provides, where the two differ
IMPORT_NAMES = {"pyyaml": "yaml", "python-ulid": "ulid", "python-dateutil": "dateutil"}

#: the environments of the "install only what you need" tests: name -> distributions installed
ENVIRONMENTS = {
    "core": ["greentic-core"],
    "aws": ["greentic-core", "greentic-deployer-aws"],
    "k8s": ["greentic-core", "greentic-deployer-k8s"],
    "all": list(DISTRIBUTIONS),
}


def _run(cmd: list[str | Path], *, timeout: float = 300, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _hermetic_pip_env() -> dict[str, str]:
    """No machine-wide pip configuration (extra indexes, find-links): only what we pass."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


# --------------------------------------------------------------------------- the session build


class Built:
    """The wheels and sdists of one build, with their metadata."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.wheels: dict[str, Path] = {}
        self.sdists: dict[str, Path] = {}
        for path in directory.iterdir():
            stem = path.name.split("-")[0]
            name = canonicalize_name(stem)
            if path.suffix == ".whl":
                self.wheels[name] = path
            elif path.name.endswith(".tar.gz"):
                self.sdists[name] = path

    def metadata(self, dist: str) -> email.message.Message:
        with zipfile.ZipFile(self.wheels[dist]) as wheel:
            name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            return email.message_from_bytes(wheel.read(name))

    def runtime_requirements(self, dist: str) -> list[Requirement]:
        """Requires-Dist without extras (what ``pip install DIST`` installs)."""
        reqs = [Requirement(r) for r in self.metadata(dist).get_all("Requires-Dist") or []]
        return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("dist")
    # Without build isolation when hatchling is here (the test extra installs it): seconds
    # instead of a fresh build environment per distribution. `dev.py build` uses isolation.
    isolation = ["--no-isolation"] if importlib.util.find_spec("hatchling") is not None else []
    if importlib.util.find_spec("build") is None:
        pytest.fail("the `build` package is missing: pip install -e '.[test]' (or run python3 dev.py setup)")

    def build_one(source: Path) -> subprocess.CompletedProcess[str]:
        return _run([sys.executable, "-m", "build", *isolation, "--outdir", out, source], cwd=source)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for result in pool.map(build_one, [source for source, _, _ in DISTRIBUTIONS.values()]):
            _ok(result)
    return Built(out)


@pytest.fixture(scope="session")
def wheelhouse(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of every third-party requirement of our distributions, fetched once."""
    house = tmp_path_factory.mktemp("wheelhouse")
    ours = {canonicalize_name(name) for name in DISTRIBUTIONS}
    requirements = sorted({str(r) for dist in built.wheels for r in built.runtime_requirements(dist)
                           if canonicalize_name(r.name) not in ours})
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-input",
              "--wheel-dir", house, *requirements], timeout=600))
    return house


class Venv:
    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self.python = path / "bin" / "python"
        self.home = home

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GREENTIC_", "PYTHON", "VIRTUAL_ENV")) and k != "COLUMNS"}
        env.update(HOME=str(self.home), GREENTIC_HOME=str(self.home / "greentic"),
                   GREENTIC_CACHE_DIR=str(self.home / "cache"), PATH=f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', '')}",
                   VIRTUAL_ENV=str(self.path), COLUMNS="200")
        return env

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([self.path / "bin" / "greentic-deployer", *args], env=self.env(), timeout=120)

    def plugins(self) -> dict:
        result = _ok(self.cli("--json", "plugins", "list"))
        return json.loads(result.stdout)

    def importable(self, *modules: str) -> dict[str, bool]:
        code = ("import importlib.util, json, sys; "
                "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))")
        return json.loads(_ok(_run([self.python, "-c", code, *modules], env=self.env())).stdout)

    def pip(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([sys.executable, "-m", "pip", "--python", self.python, *args], env=_hermetic_pip_env(), timeout=300)

    def installed(self) -> set[str]:
        listing = json.loads(_ok(self.pip("list", "--format", "json")).stdout)
        return {canonicalize_name(item["name"]) for item in listing}


@pytest.fixture(scope="session")
def venvs(built: Built, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Venv]:
    base = tmp_path_factory.mktemp("venvs")

    def create(name: str) -> Venv:
        venv = Venv(base / name, base / f"{name}-home")
        venv.home.mkdir()
        _ok(_run([sys.executable, "-m", "venv", "--without-pip", venv.path]))
        _ok(venv.pip("install", "--quiet", "--no-index", "--find-links", built.directory,
                     "--find-links", wheelhouse, *ENVIRONMENTS[name]))
        return venv

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(ENVIRONMENTS, pool.map(create, ENVIRONMENTS)))


# --------------------------------------------------------------------------- building


def test_every_distribution_builds_a_wheel_and_an_sdist(built: Built) -> None:
    expected = {canonicalize_name(name) for name in DISTRIBUTIONS}
    assert set(built.wheels) == expected
    assert set(built.sdists) == expected


@pytest.mark.parametrize("dist", list(DISTRIBUTIONS))
def test_metadata_is_complete(built: Built, dist: str) -> None:
    source, package, _ = DISTRIBUTIONS[dist]
    meta = built.metadata(dist)

    assert meta["Name"] == dist
    assert meta["Summary"], "no description"
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().strip() == (source / "README.md").read_text(encoding="utf-8").strip()
    urls = dict(item.split(", ", 1) for item in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(urls), urls
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")], "the license is the SPDX License-Expression"

    with zipfile.ZipFile(built.wheels[dist]) as wheel:
        names = wheel.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert wheel.read(f"{info}/licenses/LICENSE").decode() == LICENSE
        typed = f"{package}/py.typed" in names
        assert typed == ("Typing :: Typed" in classifiers), "py.typed and the Typing :: Typed classifier disagree"
        assert typed, f"{package} ships no py.typed"
        assert {n.split("/")[0] for n in names} == {package, info}, "the wheel holds more than its package"

    root = built.sdists[dist].name.removesuffix(".tar.gz")
    with tarfile.open(built.sdists[dist]) as sdist:
        members = {m.name.removeprefix(root + "/") for m in sdist.getmembers()}
        assert {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "PKG-INFO"} <= members
        assert sdist.extractfile(f"{root}/LICENSE").read().decode() == LICENSE
    # only this distribution's files: the core's sdist must not sweep up plugins/ or tests/
    assert not {m.split("/")[0] for m in members} & {"plugins", "conformance", "examples", "benchmarks"}


def test_license_copies_match_the_root_license() -> None:
    for source, _, _ in list(DISTRIBUTIONS.values()) + [(REPO / "examples" / "greentic-deployer-example", "", None)]:
        assert (source / "LICENSE").read_text(encoding="utf-8") == LICENSE, source


def test_twine_check_passes(built: Built) -> None:
    if importlib.util.find_spec("twine") is None:
        pytest.fail("the `twine` package is missing: pip install -e '.[test]' (or run python3 dev.py setup)")
    result = _ok(_run([sys.executable, "-m", "twine", "check", "--strict",
                       *sorted(built.wheels.values()), *sorted(built.sdists.values())]))
    assert result.stdout.count("PASSED") == 2 * len(DISTRIBUTIONS), result.stdout


def _top_level_imports(wheel_path: Path, package: str) -> set[str]:
    found: set[str] = set()
    with zipfile.ZipFile(wheel_path) as wheel:
        for name in wheel.namelist():
            if name.startswith(package + "/") and name.endswith(".py"):
                for node in ast.walk(ast.parse(wheel.read(name))):
                    if isinstance(node, ast.Import):
                        found.update(alias.name.split(".")[0] for alias in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                        found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("dist", list(DISTRIBUTIONS))
def test_depends_on_core_compatibly_and_on_nothing_unused(built: Built, dist: str) -> None:
    _, package, _ = DISTRIBUTIONS[dist]
    requirements = built.runtime_requirements(dist)
    if dist != "greentic-core":
        core = [r for r in requirements if r.name == "greentic-core"]
        assert [str(r.specifier) for r in core] == ["~=0.1"], "depend on greentic-core with a compatible-release range"
    imported = _top_level_imports(built.wheels[dist], package)
    unused = [str(r) for r in requirements if r.name != "greentic-core"
              and IMPORT_NAMES.get(canonicalize_name(r.name), r.name.replace("-", "_")) not in imported]
    assert not unused, f"{dist} declares dependencies it never imports: {unused}"


# --------------------------------------------------------------------------- install only what you need


def test_core_alone_lists_no_provider_and_says_how_to_install_one(venvs: dict[str, Venv]) -> None:
    venv = venvs["core"]
    assert venv.installed().isdisjoint({"greentic-deployer-aws", "greentic-deployer-k8s", "boto3", "lightkube",
                                        "aiohttp", "greentic-deployer-local-process"})
    doc = venv.plugins()
    assert doc["plugins"] == []
    assert "plugins install local-process" in doc["hint"]
    human = _ok(venv.cli("plugins", "list")).stdout
    assert "no deployer plugins are installed" in human and "greentic-deployer plugins install" in human
    _ok(venv.pip("check"))


def test_core_and_aws_installs_no_kubernetes_library(venvs: dict[str, Venv]) -> None:
    venv = venvs["aws"]
    assert venv.importable("boto3", "lightkube", "lightkube_models", "kubernetes", "kmock", "aiohttp") == {
        "boto3": True, "lightkube": False, "lightkube_models": False, "kubernetes": False, "kmock": False,
        "aiohttp": False}
    probe = _run([venv.python, "-c", "import lightkube"], env=venv.env())
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr
    doc = venv.plugins()
    assert [(p["name"], p["status"]) for p in doc["plugins"]] == [("greentic.deployer.aws-ecs", "ok")], doc
    _ok(venv.pip("check"))


def test_core_and_k8s_installs_no_aws_sdk(venvs: dict[str, Venv]) -> None:
    venv = venvs["k8s"]
    assert venv.importable("lightkube", "boto3", "botocore", "dateutil", "aiohttp") == {
        "lightkube": True, "boto3": False, "botocore": False, "dateutil": False, "aiohttp": False}
    doc = venv.plugins()
    assert [(p["name"], p["status"]) for p in doc["plugins"]] == [("greentic.deployer.k8s", "ok")], doc
    _ok(venv.pip("check"))


def test_everything_co_installs_and_every_provider_is_ok(venvs: dict[str, Venv]) -> None:
    venv = venvs["all"]
    assert {canonicalize_name(d) for d in DISTRIBUTIONS} <= venv.installed()
    assert "kubernetes" not in venv.installed()
    result = _ok(venv.pip("check"))
    assert "No broken requirements found" in result.stdout
    doc = venv.plugins()
    statuses = {p["name"]: p["status"] for p in doc["plugins"]}
    assert statuses == {ep: "ok" for ep in PROVIDERS.values()}, doc
    assert all(not p["warnings"] for p in doc["plugins"]), "a provider imports an SDK when loaded"
    # the conformance suite is installed as a pytest plugin and as a CLI command
    listed = _ok(venv.cli("--help")).stdout
    assert re.search(r"^\s+conformance\b", listed, re.M), listed
    # the dashboard adds the ui command, and its templates and static files are in the wheel
    assert re.search(r"^\s+ui\b", listed, re.M), listed
    assert "--allow-actions" in _ok(venv.cli("ui", "--help")).stdout
    shipped = _run([venv.python, "-c", "import importlib.resources as r; p = r.files('greentic_ui'); "
                    "print(all((p / f).is_file() for f in ('templates/environment.html', 'static/app.js', "
                    "'static/app.css', 'py.typed')))"], env=venv.env())
    assert _ok(shipped).stdout.strip() == "True", shipped.stderr
