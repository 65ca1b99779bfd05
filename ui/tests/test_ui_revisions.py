"""The revision table of a large environment in a real Chromium: a page of it at first (routed
revisions first, then live ones, newest first), a control to show more or all of them, a
lifecycle filter kept in the URL, and live updates that keep the filter.

Environment ``many``: deployment ``web`` with 75 revisions recorded (record-only: no process is
started, the provider observes none of them): 60 staged, 15 warmed to ready, two of those
carrying the traffic. The JSON API still answers with every revision.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from ui_helpers import Dashboard, LocalEnv, login

pytestmark = pytest.mark.timeout(120)

SHOWN = 50  # greentic_ui.app.REVISIONS_SHOWN


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnv]:
    env = LocalEnv(tmp_path_factory.mktemp("many"), "many")
    try:
        env.op.add_deployment(env.env_id, "web")
        env.rids = [env.op.stage(env.env_id, "web", record_only=True).revision.revision_id for _ in range(75)]
        env.ready = env.rids[:15]  # the oldest 15: the table must bring them before newer staged ones
        for rid in env.ready:
            env.op.warm(env.env_id, rid, record_only=True)
        env.routed = [env.ready[0], env.ready[1]]
        env.op.traffic_set(env.env_id, "web", [(env.routed[0], 9000), (env.routed[1], 1000)], record_only=True)
        yield env
    finally:
        env.close()


@pytest.fixture(scope="module")
def board(many: LocalEnv) -> Iterator[Dashboard]:
    dashboard = Dashboard(many.home, many.cache)
    try:
        yield dashboard
    finally:
        dashboard.stop()


def rows(page) -> list[tuple[str, str]]:
    return page.eval_on_selector_all("#revisions tbody tr",
                                     "trs => trs.map(tr => [tr.dataset.rid, tr.dataset.lifecycle])")


def test_the_table_shows_a_page_routed_and_live_revisions_first_then_more_then_all(
        many: LocalEnv, board: Dashboard, page) -> None:
    login(page, board, "/env/many")
    shown = rows(page)
    assert len(shown) == SHOWN
    # routed first (newest first among them), then the other ready ones newest first, then staged
    newest_first = list(reversed(many.rids))
    ready = [rid for rid in newest_first if rid in many.ready and rid not in many.routed]
    staged = [rid for rid in newest_first if rid not in many.ready]
    expected = [many.routed[1], many.routed[0], *ready, *staged]
    assert [rid for rid, _ in shown] == expected[:SHOWN]
    assert [lc for _, lc in shown[:15]] == ["ready"] * 15 and shown[15][1] == "staged"
    assert "50 of 75 shown" in page.inner_text("#revisions h2")
    # the split control still has every ready revision, the legend every routed one
    assert page.locator("form.split-form .weight-row").count() == 15
    assert page.locator(".legend li").count() == 2

    page.click("#revisions a.show-more")
    page.wait_for_url("**show=100**")
    assert rows(page) == [[rid, lc] for rid, lc in zip(expected, ["ready"] * 15 + ["staged"] * 60)]
    assert page.locator("#revisions a.show-more").count() == 0  # nothing more to show
    page.click("#revisions a.show-less")
    assert len(rows(page)) == SHOWN
    page.click("#revisions a.show-all")
    page.wait_for_url("**show=all**")
    assert len(rows(page)) == 75
    assert len(board.api("/api/environments/many")["environment"]["revisions"]) == 75  # the API: all of them
    assert not page.dialogs and not page.console_errors


def test_the_lifecycle_filter_is_in_the_url_and_survives_live_updates(many: LocalEnv, board: Dashboard,
                                                                      page, screenshots) -> None:
    login(page, board, "/env/many")
    options = page.eval_on_selector_all("#revisions select[name=lifecycle] option", "os => os.map(o => o.textContent)")
    assert options == ["all (75)", "routed (2)", "ready (15)", "staged (60)"]
    page.select_option("#revisions select[name=lifecycle]", "ready")  # sent on change, no button needed
    page.wait_for_url("**lifecycle=ready**")
    assert {lc for _, lc in rows(page)} == {"ready"} and len(rows(page)) == 15
    assert "15 of 15 ready shown, 75 in all" in page.inner_text("#revisions h2")
    page.screenshot(path=str(screenshots / "ui-revisions.png"), full_page=False)
    page.select_option("#revisions select[name=lifecycle]", "routed")
    page.wait_for_url("**lifecycle=routed**")
    assert [rid for rid, _ in rows(page)] == [many.routed[1], many.routed[0]]

    # a revision warmed elsewhere (the CLI, the agent) shows up live, and the filter stays
    page.select_option("#revisions select[name=lifecycle]", "ready")
    page.wait_for_url("**lifecycle=ready**")
    page.evaluate("window.__samePage = true")
    newest = many.rids[-1]
    many.op.warm(many.env_id, newest, record_only=True)
    page.locator(f'#revisions tr[data-rid="{newest}"][data-lifecycle="ready"]').wait_for()
    assert page.evaluate("window.__samePage") is True
    assert len(rows(page)) == 16 and {lc for _, lc in rows(page)} == {"ready"}
    assert rows(page)[2][0] == newest  # after the routed two: the newest ready one
    assert page.locator("form.split-form .weight-row").count() == 16

    # a lifecycle nothing has: an empty table that says so
    page.goto(board.base + "/env/many?lifecycle=failed")
    assert rows(page) == [] and "No failed revision" in page.inner_text("#revisions")
    assert not page.dialogs and not page.console_errors
