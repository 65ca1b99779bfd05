"""Write real installed distributions (``*.dist-info`` + modules) for the self-tests.

Copied (trimmed) from the repository's ``tests/plugin_factory.py`` so that this distribution's
tests import nothing from another distribution's tests. :func:`make_dist` lays out what
``pip install --target DIR`` leaves behind; putting ``DIR`` on ``PYTHONPATH`` of a subprocess
makes the distribution visible to the registry's ordinary discovery.
"""

from __future__ import annotations

import base64
import hashlib
import re
import textwrap
from pathlib import Path
from typing import Mapping

GROUP = "greentic.deployers"


def normalize_dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _record_line(relpath: str, data: bytes | None) -> str:
    if data is None:
        return f"{relpath},,"
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{relpath},sha256={digest},{len(data)}"


def make_dist(root: Path, dist_name: str, version: str, modules: Mapping[str, str],
              entry_points: Mapping[str, str], group: str = GROUP) -> Path:
    """Install a distribution into ``root`` the way pip would; return its ``.dist-info`` path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, bytes | None]] = []
    for filename, source in modules.items():
        rel = filename if filename.endswith(".py") else filename + ".py"
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        data = textwrap.dedent(source).encode()
        target.write_bytes(data)
        written.append((rel, data))
    info_name = f"{normalize_dist_name(dist_name)}-{version}.dist-info"
    info = root / info_name
    info.mkdir()
    ep_text = f"[{group}]\n" + "".join(f"{ep} = {value}\n" for ep, value in entry_points.items()) + "\n"
    files = {
        "METADATA": f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n"
                    f"Summary: test distribution {dist_name}\n",
        "entry_points.txt": ep_text,
        "INSTALLER": "greentic-conformance-tests\n",
    }
    for name, text in files.items():
        data = text.encode()
        (info / name).write_bytes(data)
        written.append((f"{info_name}/{name}", data))
    written.append((f"{info_name}/RECORD", None))
    (info / "RECORD").write_text("".join(_record_line(rel, data) + "\n" for rel, data in written))
    return info
