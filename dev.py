#!/usr/bin/env python3
"""Developer entry point: needs nothing but Python 3.11+ and pip.

    python3 dev.py setup   create .venv with every distribution of the repo installed editable
    python3 dev.py test    setup, then run the whole test suite (what CI runs)
    python3 dev.py demo    setup, then run the local-process demo
    python3 dev.py bench   setup, then run every benchmark
    python3 dev.py build   build every distribution (wheel + sdist) into dist/, then `twine check` them
                           (extra arguments go to `python -m build`, e.g. --no-isolation)

Why a script and not uv or make: a fresh machine has only Python and pip, and this file
uses only the standard library, so the two README commands work there unchanged.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".greentic-setup-stamp"


def distributions() -> list[Path]:
    """Every distribution in the repository, core first (plugins depend on it)."""
    found = [ROOT]
    for parent in ("plugins", "conformance", "ui"):
        base = ROOT / parent
        if (base / "pyproject.toml").exists():
            found.append(base)
        elif base.is_dir():
            found.extend(sorted(p.parent for p in base.glob("*/pyproject.toml")))
    return found


def _has_test_extra(dist: Path) -> bool:
    with open(dist / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle).get("project", {})
    return "test" in project.get("optional-dependencies", {})


def _fingerprint(dists: list[Path]) -> str:
    digest = hashlib.sha256()
    for dist in dists:
        digest.update((dist / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def run(*cmd: str | Path, **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def setup() -> None:
    dists = distributions()
    fingerprint = _fingerprint(dists)
    if STAMP.exists() and STAMP.read_text() == fingerprint and PY.exists():
        return
    if not PY.exists():
        run(sys.executable, "-m", "venv", VENV)
        run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    args: list[str | Path] = []
    for dist in dists:
        args += ["-e", f"{dist}{'[test]' if _has_test_extra(dist) else ''}"]
    run(PY, "-m", "pip", "install", "--quiet", *args)
    STAMP.write_text(fingerprint)


def test(extra: list[str]) -> int:
    setup()
    paths = ["tests"] + [str(d.relative_to(ROOT) / "tests") for d in distributions()[1:] if (d / "tests").is_dir()]
    return subprocess.call([str(PY), "-m", "pytest", *paths, *extra], cwd=ROOT)


DIST = ROOT / "dist"


def _ensure_tools(*modules: str) -> None:
    """Create .venv if needed and pip-install the given tools into it when one is missing."""
    if not PY.exists():
        run(sys.executable, "-m", "venv", VENV)
        run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    probe = "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in sys.argv[1:]))"
    if subprocess.call([str(PY), "-c", probe, *modules]) != 0:
        run(PY, "-m", "pip", "install", "--quiet", *modules)


def build(extra: list[str]) -> int:
    """Wheel and sdist of every distribution into dist/ (old artifacts removed), then twine check."""
    _ensure_tools("build", "twine")
    DIST.mkdir(exist_ok=True)
    for old in [*DIST.glob("*.whl"), *DIST.glob("*.tar.gz")]:
        old.unlink()
    for dist in distributions():
        # `python -m build` makes the sdist first and the wheel from the unpacked sdist, so a
        # file missing from the sdist breaks the build here rather than on a user's machine.
        code = subprocess.call([str(PY), "-m", "build", "--outdir", str(DIST), *extra, str(dist)], cwd=ROOT)
        if code != 0:
            print(f"build of {dist.relative_to(ROOT) if dist != ROOT else 'greentic-core'} failed", file=sys.stderr)
            return code
    artifacts = sorted(str(p) for p in [*DIST.glob("*.whl"), *DIST.glob("*.tar.gz")])
    return subprocess.call([str(PY), "-m", "twine", "check", "--strict", *artifacts], cwd=ROOT)


def demo(extra: list[str]) -> int:
    setup()
    return subprocess.call([str(BIN / "greentic-deployer"), "demo", *extra], cwd=ROOT)


def bench(extra: list[str]) -> int:
    setup()
    return subprocess.call([str(PY), "-m", "benchmarks", *extra], cwd=ROOT)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    command, extra = argv[0], argv[1:]
    if command == "setup":
        setup()
        return 0
    handlers = {"test": test, "demo": demo, "bench": bench, "build": build}
    if command not in handlers:
        print(f"unknown command {command!r}; see `python3 dev.py --help`", file=sys.stderr)
        return 2
    return handlers[command](extra)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
