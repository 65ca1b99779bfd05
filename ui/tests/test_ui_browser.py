"""The dashboard in a real Chromium against a real local-process environment.

One environment (``shop``: deployment ``web``, revisions v1 at 100% and v2 ready, real
processes behind the real router) and one dashboard (``greentic-deployer ui --allow-actions``
in a subprocess) serve the tests of this module, in order: what the tests before did is part
of the history the later ones read.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from ui_helpers import ACTOR, TOKEN, Dashboard, LocalEnv, login

pytestmark = pytest.mark.timeout(120)


def test_without_the_token_nothing_is_served(dashboard: Dashboard, page) -> None:
    for path in ("/", "/env/shop", "/env/shop/history", "/plugins", "/api/environments", "/api/environments/shop",
                 "/api/events", "/api/openapi.json"):
        status, headers, body = dashboard.get(path)
        assert status == 401, path
        assert b"shop" not in body, path
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    status, _, body = dashboard.get("/api/environments")
    assert json.loads(body)["kind"] == "unauthorized"
    assert dashboard.get("/?token=not-the-token")[0] == 401
    assert dashboard.get("/api/environments", token="not-the-token")[0] == 401
    # a page of another site that resolves its own name to 127.0.0.1 (DNS rebinding) is refused
    assert dashboard.get("/api/environments", token=TOKEN, headers={"Host": "evil.example:80"})[0] == 421

    # the token once, then an HttpOnly, SameSite=Strict cookie; the token leaves the URL
    request = urllib.request.Request(dashboard.url)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(request, timeout=10)
        raise AssertionError("no redirect")
    except urllib.error.HTTPError as exc:
        assert exc.code == 303 and exc.headers["Location"] == "/"
        cookie = exc.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie

    # a browser without the token sees the refusal, not the environment
    page.goto(dashboard.base + "/env/shop")
    assert "token is required" in page.inner_text("#refused-message")
    assert page.locator(".deployment").count() == 0
    page.goto(dashboard.url)
    assert page.url == dashboard.base + "/"
    assert page.locator("a.env-link", has_text="shop").count() == 1
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read the session


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[override]
        return None


def test_the_environments_page_shows_deployer_generation_and_health(shop: LocalEnv, dashboard: Dashboard, page,
                                                                    screenshots) -> None:
    login(page, dashboard)
    row = page.locator('tr[data-env-row="shop"]')
    assert "greentic.deployer.local-process@" in row.inner_text()
    generation = shop.store.load("shop").generation
    assert row.locator(".generation").inner_text() == str(generation)
    assert row.locator(".health-healthy").count() == 1  # observed: both ready revisions serve
    assert "2/2 ready revision(s) serving" in row.inner_text()
    page.screenshot(path=str(screenshots / "ui-environments.png"))
    assert not page.dialogs and not page.console_errors


def test_a_split_moved_with_the_control_is_enforced_by_the_router(shop: LocalEnv, dashboard: Dashboard, page,
                                                                  screenshots) -> None:
    login(page, dashboard, "/env/shop")
    did = shop.deployment_id("web")
    form = page.locator(f'form.split-form[data-deployment="{did}"]')
    v1_row, v2_row = form.locator(f'.weight-row[data-rid="{shop.v1}"]'), form.locator(f'.weight-row[data-rid="{shop.v2}"]')
    assert v1_row.locator(".w-bps").input_value() == "10000"

    # the control snaps to basis points, shows the percentage and keeps the total at 10000
    v2_row.locator(".w-bps").fill("2500")
    assert v1_row.locator(".w-bps").input_value() == "7500"
    assert v2_row.locator(".w-pct").inner_text() == "25%" and v1_row.locator(".w-pct").inner_text() == "75%"
    assert form.locator(".w-sum").inner_text() == "10000"
    v2_row.locator(".w-bps").fill("1234.6")  # a fraction of a basis point is snapped
    assert v2_row.locator(".w-bps").input_value() == "1235" and v1_row.locator(".w-bps").input_value() == "8765"
    v1_row.locator(".w-range").fill("7500")  # the slider moves the other revision too
    assert v2_row.locator(".w-bps").input_value() == "2500"

    # moving traffic asks for confirmation; cancelling changes nothing
    form.locator('button[data-action="traffic-set"]').click()
    assert page.locator("#confirm").is_visible()
    assert "75%" in page.inner_text("#confirm-text") and "25%" in page.inner_text("#confirm-text")
    page.locator('#confirm button[value="cancel"]').click()
    assert shop.split("web") == {shop.v1: 10_000}

    form.locator('button[data-action="traffic-set"]').click()
    page.screenshot(path=str(screenshots / "ui-confirm.png"))
    page.locator("#confirm-ok").click()
    page.wait_for_selector('#action-status[data-state="done"]')
    assert shop.split("web") == {shop.v1: 7500, shop.v2: 2500}

    # the router enforces it (smooth weighted round-robin: a quarter of the requests to v2)
    served = shop.served_by(200)
    assert abs(served[shop.v2] - 50) <= 4 and served[shop.v1] + served[shop.v2] == 200, served

    # the page shows the recorded split and the provider's, in sync
    section = page.locator(f"#dep-{did}")
    section.locator(f'.legend li[data-rid="{shop.v2}"][data-bps="2500"]').wait_for()
    page.wait_for_function("(did) => !!document.querySelector('#dep-' + did + ' .badge-ok')", arg=did)
    log = page.inner_text("#action-log")
    assert "applying split" in log and "done" in log  # the provider's progress, then the result
    page.locator('[data-dismiss="action-status"]').click()
    page.screenshot(path=str(screenshots / "ui-environment.png"), full_page=True)
    assert not page.dialogs and not page.console_errors


def test_a_change_made_with_the_cli_reaches_an_open_page_within_a_second(shop: LocalEnv, dashboard: Dashboard,
                                                                         page) -> None:
    login(page, dashboard, "/env/shop")
    did = shop.deployment_id("web")
    page.evaluate("window.__samePage = true")
    shop.cli("--actor", "bob", "traffic", "set", "shop", "web", f"{shop.v1}=5000,{shop.v2}=5000")
    written = time.time()
    page.locator(f'#dep-{did} .legend li[data-rid="{shop.v2}"][data-bps="5000"]').wait_for()
    shown = time.time()
    event_at = page.evaluate("window.greenticLive.lastEventAt") / 1000
    assert page.evaluate("window.__samePage") is True  # updated in place, not reloaded
    assert event_at - written < 1.0, f"the event came {event_at - written:.3f} s after the CLI returned"
    assert shown - written < 2.0


def test_actions_need_the_csrf_token_and_allow_actions(shop: LocalEnv, dashboard: Dashboard, context, page,
                                                       tmp_path) -> None:
    login(page, dashboard, "/env/shop")
    did = shop.deployment_id("web")
    url = f"{dashboard.base}/api/environments/shop/deployments/{did}/traffic"
    body = {"weights": {shop.v1: 10_000}}
    # the session cookie alone is not enough: a page of another origin could make the browser send it
    refused = context.request.post(url, data=body)
    assert refused.status == 403 and "CSRF" in refused.json()["message"]
    csrf = page.get_attribute('meta[name="csrf-token"]', "content")
    foreign = context.request.post(url, data=body, headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert foreign.status == 403
    assert shop.split("web") == {shop.v1: 5000, shop.v2: 5000}
    # a refused change is reported with the operator's error (same preconditions as the CLI)
    wrong = context.request.post(url, data={"weights": {shop.v1: 6000}}, headers={"X-CSRF-Token": csrf})
    assert wrong.status == 400 and "10000" in wrong.json()["message"]

    # a read-only dashboard (no --allow-actions) shows no controls and refuses actions
    readonly = Dashboard(shop.home, tmp_path / "cache", allow_actions=False)
    try:
        login(page, readonly, "/env/shop")
        assert page.locator("form.split-form").count() == 0 and page.locator("button[data-action]").count() == 0
        csrf = page.get_attribute('meta[name="csrf-token"]', "content")
        denied = context.request.post(f"{readonly.base}/api/environments/shop/deployments/{did}/traffic",
                                      data=body, headers={"X-CSRF-Token": csrf})
        assert denied.status == 403 and "--allow-actions" in denied.json()["message"]
    finally:
        readonly.stop()
    assert shop.split("web") == {shop.v1: 5000, shop.v2: 5000}


def test_drain_and_archive_from_the_page_with_confirmation(shop: LocalEnv, dashboard: Dashboard, page) -> None:
    shop.op.traffic_set(shop.env_id, "web", [(shop.v1, 10_000)])
    login(page, dashboard, "/env/shop")
    row = page.locator(f'#revisions tr[data-rid="{shop.v2}"]')
    row.locator('button[data-action="drain"]').click()
    assert "Drain revision" in page.inner_text("#confirm-text")
    page.locator("#confirm-ok").click()
    page.wait_for_selector('#action-status[data-state="done"]')
    page.locator(f'#revisions tr[data-rid="{shop.v2}"][data-lifecycle="inactive"]').wait_for()
    assert not shop.op.observe(shop.env_id).revision(shop.v2).present  # the process is gone

    # draining the revision that carries the traffic is refused, with the operator's message
    page.locator(f'#revisions tr[data-rid="{shop.v1}"] button[data-action="drain"]').click()
    page.locator("#confirm-ok").click()
    page.wait_for_selector('#action-status[data-state="error"]')
    assert "weight" in page.inner_text("#action-log")
    page.locator('[data-dismiss="action-status"]').click()

    page.locator(f'#revisions tr[data-rid="{shop.v2}"] button[data-action="archive"]').click()
    page.locator("#confirm-ok").click()
    page.locator(f'#revisions tr[data-rid="{shop.v2}"][data-lifecycle="archived"]').wait_for()
    assert shop.store.load("shop").revision(shop.v2).lifecycle.value == "archived"


def test_the_history_shows_each_action_with_its_actor(shop: LocalEnv, dashboard: Dashboard, page,
                                                      screenshots) -> None:
    login(page, dashboard, "/env/shop/history")
    events = page.locator("li.event")
    text = page.inner_text("#history")
    for verb in ("env.init", "deployment.add", "revision.warm", "traffic.set", "revision.drain", "revision.archive"):
        assert verb in text, verb
    mine = page.locator(f'li.event[data-actor="ui:{ACTOR}"]')
    verbs = [mine.nth(i).get_attribute("data-verb") for i in range(mine.count())]
    assert {"traffic.set", "revision.drain", "revision.archive"} <= set(verbs), verbs
    assert page.locator('li.event[data-actor="bob"][data-verb="traffic.set"]').count() == 1  # the CLI's change
    assert page.locator('li.event[data-actor="tester"]').count() >= 4
    assert "greentic-deployer ui: revision archive shop" in mine.first.inner_text()  # the audit command

    # filter by actor (a plain GET form)
    page.select_option('select[name="actor"]', f"ui:{ACTOR}")
    page.click('.filters button[type="submit"]')
    page.wait_for_url("**actor=ui%3Aalice**")
    assert events.count() == mine.count() and events.count() >= 3
    page.screenshot(path=str(screenshots / "ui-history.png"))
    api = dashboard.api(f"/api/environments/shop/history?actor=ui:{ACTOR}&verb=traffic")
    assert api["events"] and all(e["actor"] == f"ui:{ACTOR}" and e["verb"].startswith("traffic") for e in api["events"])


def test_a_hostile_bundle_name_renders_as_text(shop: LocalEnv, dashboard: Dashboard, page) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    login(page, dashboard, "/env/shop")
    page.evaluate("window.__samePage = true")
    shop.op.add_deployment(shop.env_id, hostile)
    shop.cli("--actor", "<script>alert(2)</script>", "traffic", "set", "shop", "web", f"{shop.v1}=10000")
    # arrives live (the section list changed: the page body is swapped in place)
    page.locator(".deployment .bundle", has_text=hostile).wait_for()
    assert page.evaluate("window.__samePage") is True
    assert page.locator("img").count() == 0 and page.locator("main script").count() == 0
    for path in ("/", "/env/shop", "/env/shop/history"):
        page.goto(dashboard.base + path)
        page.wait_for_load_state("load")
        assert page.locator("img").count() == 0, path
        assert page.locator("script").count() == 1, path  # /static/app.js and nothing else
    assert hostile in page.inner_text("#history")
    assert "<script>alert(2)</script>" in page.inner_text("#history")  # the actor, as text
    assert not page.dialogs, page.dialogs
    env = dashboard.api("/api/environments/shop")["environment"]
    assert hostile in [d["bundle_id"] for d in env["deployments"]]
