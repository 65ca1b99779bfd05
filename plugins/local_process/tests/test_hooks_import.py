"""The hooks module is imported by every ``greentic-deployer`` command: it must stay light."""

import json
import subprocess
import sys


def test_importing_the_hooks_does_not_import_aiohttp() -> None:
    code = (
        "import json, sys\n"
        "import greentic_local_process.hooks as hooks\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'yarl', 'multidict'))\n"
        "print(json.dumps({'heavy': heavy, 'has_warm': hasattr(hooks, 'greentic_warm_revision')}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"heavy": [], "has_warm": True}


def test_the_router_module_is_the_one_that_needs_aiohttp() -> None:
    # guards the test above against passing vacuously (e.g. aiohttp imported under another name)
    code = "import sys, greentic_local_process.router\nprint('aiohttp' in sys.modules)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
