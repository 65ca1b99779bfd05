"""``greentic-deployer plugins new NAME``: a complete third-party deployer distribution.

The templates (``templates/*.tmpl``, package data) are rendered with ``<<key>>`` placeholders
(not ``{{ }}``, which GitHub Actions workflows use themselves). :func:`create` writes them into a
new directory and refuses to touch an existing, non-empty one.

What comes out installs with ``pip install -e .`` and loads ``ok`` (``plugins list`` notes it
is a scaffold, from the ``scaffold`` marker in its capabilities): every verb and ``observe``
raise a clear "not implemented" :class:`~greentic_core.ProviderError`, so its generated
conformance test fails exactly on the checks that need them, until the author writes them.

This module is imported by ``plugins list`` (for :func:`is_scaffold`): keep it light.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs

from ..errors import GreenticError

#: ``DeployerDescriptor.capabilities.extra`` key marking a plugin whose verbs are still stubs.
SCAFFOLD_MARKER = "scaffold"
SCAFFOLD_NOTE = "scaffold: its verbs are not implemented yet (they raise ProviderError)"
#: The words every stubbed hook's error contains (the generated test and ours look for them).
NOT_IMPLEMENTED = "is not implemented yet"

#: output path (``<<key>>`` placeholders allowed) -> template file in ``templates/``
FILES: dict[str, str] = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    "CHANGELOG.md": "CHANGELOG.md.tmpl",
    ".gitignore": "gitignore.tmpl",
    "<<package>>/__init__.py": "package_init.py.tmpl",
    "<<package>>/hooks.py": "hooks.py.tmpl",
    "<<package>>/py.typed": "py.typed.tmpl",
    "tests/test_conformance.py": "test_conformance.py.tmpl",
    ".github/workflows/test.yml": "workflow_test.yml.tmpl",
}

_PLACEHOLDER = re.compile(r"<<([a-z_]+)>>")


class ScaffoldError(GreenticError):
    """The scaffold cannot be written (bad name, directory not empty)."""

    kind = "usage"
    exit_code = 2


class ScaffoldExists(ScaffoldError):
    kind = "conflict"
    exit_code = 3


def is_scaffold(record: Any) -> bool:
    """Whether a loaded plugin record still carries the scaffold marker."""
    descriptor = getattr(record, "descriptor", None)
    if descriptor is None:
        return False
    return bool(dict(descriptor.capabilities.extra).get(SCAFFOLD_MARKER))


@attrs.frozen(kw_only=True)
class Names:
    """Every name the templates use, derived from the descriptor path."""

    path: str  # acme.deployer.nomad (entry-point name == descriptor path)
    distribution: str  # acme-deployer-nomad
    package: str  # acme_deployer_nomad
    short: str  # nomad
    author_name: str
    author_email: str
    core_version: str
    core_dependency: str  # greentic-core~=0.1
    conformance_dependency: str  # greentic-conformance~=0.1
    requires_core: str  # >=0.1,<1

    def context(self) -> dict[str, str]:
        from datetime import date

        authors = {"name": self.author_name}
        if self.author_email:
            authors["email"] = self.author_email
        return {
            **attrs.asdict(self),
            # TOML inline table; JSON string escaping is valid TOML basic-string escaping
            "authors_toml": "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in authors.items()) + " }",
            "year": str(date.today().year),
        }


def names_for(path: str, author: str | None = None) -> Names:
    """Check ``path`` (a descriptor path) and derive the distribution and package names."""
    from email.utils import parseaddr

    from .. import __version__
    from ..errors import SpecError
    from ..ids import check_descriptor_path

    try:
        check_descriptor_path(path)
    except SpecError as exc:
        raise ScaffoldError(str(exc), hint="a descriptor path is dotted lower case, a-z 0-9 . -, "
                                           "e.g. acme.deployer.nomad") from None
    if path.startswith(".") or path.endswith(".") or ".." in path:
        raise ScaffoldError(f"descriptor path {path!r} has an empty segment", hint="e.g. acme.deployer.nomad")
    if path.startswith("greentic.deployer."):
        raise ScaffoldError(f"{path!r}: the greentic.deployer.* names belong to this project's own deployers",
                            hint="use your own prefix, e.g. acme.deployer." + path.rsplit(".", 1)[-1])
    package = re.sub(r"[.-]+", "_", path)
    if not package.isidentifier() or package[0].isdigit():
        raise ScaffoldError(f"{path!r} does not make a Python package name ({package!r})",
                            hint="start the path with a letter, e.g. acme.deployer.nomad")
    name, email = parseaddr(author or "")
    if author and not name and not email:
        name = author.strip()
    if email and not name:
        name = email
    major, minor = (int(part) for part in __version__.split(".")[:2])
    line = f"{major}.{minor}"
    return Names(
        path=path,
        distribution=re.sub(r"[._]+", "-", path),
        package=package,
        short=path.rsplit(".", 1)[-1],
        author_name=name or "Your Name",
        author_email=email,
        core_version=__version__,
        core_dependency=f"greentic-core~={line}",
        conformance_dependency=f"greentic-conformance~={line}",
        requires_core=f">={line},<{major + 1}",
    )


def render(template: str, context: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in context:
            raise KeyError(f"template placeholder <<{key}>> has no value")
        return context[key]

    return _PLACEHOLDER.sub(substitute, template)


def template_text(name: str) -> str:
    from importlib.resources import files

    return files(__name__).joinpath("templates", name).read_text(encoding="utf-8")


def render_all(names: Names) -> dict[str, str]:
    """Relative output path -> file content."""
    context = names.context()
    return {render(out, context): render(template_text(tmpl), context) for out, tmpl in FILES.items()}


def create(path: str, directory: Path | None = None, *, author: str | None = None) -> tuple[Names, Path, list[str]]:
    """Write the scaffold; return the names, the directory and the files written (relative)."""
    names = names_for(path, author)
    target = Path(directory) if directory is not None else Path.cwd() / names.distribution
    if target.exists():
        if not target.is_dir():
            raise ScaffoldExists(f"{target} exists and is not a directory", hint="choose another --directory")
        if any(target.iterdir()):
            raise ScaffoldExists(f"{target} already exists and is not empty; nothing was written",
                                 hint="choose another --directory, or remove it first")
    files = render_all(names)
    target.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        out = target / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(content, encoding="utf-8")
    return names, target, sorted(files)
