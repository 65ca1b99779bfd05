"""Fixtures of the dashboard's tests: real local-process environments (real revision processes
behind the real router), the dashboard as users start it (``greentic-deployer ui`` in a
subprocess) and a real Chromium (Debian's ``/usr/bin/chromium``) driven by Playwright.

Chromium is never downloaded (``playwright install`` is not used): when it is missing the
browser tests fail, they do not skip (``.ci/run`` installs it; ``apt-get install chromium``).

Screenshots go to ``$GREENTIC_UI_SCREENSHOTS`` when it is set (``docs/images`` refreshes the
ones docs/ui.md shows), else to the test's temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from ui_helpers import CHROMIUM, CHROMIUM_ARGS, Dashboard, LocalEnv


# --------------------------------------------------------------------------- local-process environments


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnv]:
    """Environment ``shop``: deployment ``web`` with v1 (100%) and v2 warmed, both real processes."""
    env = LocalEnv(tmp_path_factory.mktemp("shop"))
    try:
        env.op.add_deployment(env.env_id, "web")
        env.v1 = env.revision("web", "1")
        env.op.traffic_set(env.env_id, "web", [(env.v1, 10_000)])
        env.v2 = env.revision("web", "2")
        yield env
    finally:
        env.close()


@pytest.fixture(scope="module")
def dashboard(shop: LocalEnv) -> Iterator[Dashboard]:
    board = Dashboard(shop.home, shop.cache)
    try:
        yield board
    finally:
        board.stop()


# --------------------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: the dashboard is tested in a real Chromium "
                    "(`apt-get install chromium`; .ci/run installs it)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1200, "height": 820}, device_scale_factor=1)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: Any) -> Any:
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.dialogs = []  # window.alert/confirm/prompt would land here: the dashboard opens none
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.console_errors = []
    page.on("console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None)
    return page


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    target = os.environ.get("GREENTIC_UI_SCREENSHOTS")
    path = Path(target) if target else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
