"""Human output off a terminal: the plain path prints exactly what rich would.

``greentic_core.cli.output.Console`` writes strings and tables itself when rich's rendering is
known to be the text itself, and hands everything else to rich. These tests print the same
things through both and compare the bytes, so the shortcut can never change an output.
"""

from __future__ import annotations

import io
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console as RichConsole
from rich.table import Table as RichTable

from greentic_core.cli import output
from greentic_core.cli.output import PLAIN_WIDTH, Console, Table


@pytest.fixture(autouse=True)
def _no_forced_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


def rich_prints(*objects, **kwargs) -> str:
    buf = io.StringIO()
    RichConsole(file=buf, soft_wrap=True, highlight=False, width=PLAIN_WIDTH).print(*objects, **kwargs)
    return buf.getvalue()


def ours_prints(*objects, **kwargs) -> tuple[str, bool]:
    """What our console prints to a non-terminal stdout, and whether it needed rich."""
    buf, saved = io.StringIO(), sys.stdout
    sys.stdout = buf
    try:
        console = Console(stderr=False)
        console.print(*objects, **kwargs)
    finally:
        sys.stdout = saved
    return buf.getvalue(), console._rich is not None


def as_rich(table: Table) -> RichTable:
    rich_table = RichTable(box=None, pad_edge=False)
    for column in table.columns:
        rich_table.add_column(column)
    for row in table.rows:
        rich_table.add_row(*row)
    return rich_table


# Letters, digits and the characters that make rich change a text: markup brackets, emoji
# colons, control characters, tabs, non-ASCII and wide characters.
TEXT = st.text(st.sampled_from(list("ab Z09_-.:/@=%[]\\\n\t\r\x07é漢😀")), max_size=40) | st.sampled_from(
    ["2026-12-03T13:10:00Z", ":smile:", "a :100: b", ":thumbs_up-emoji:", "[bold]x[/bold]", "x [y] z",
     "13:10:00:05", "", "\n", "a\n", ":+1:", "10:20"])


@settings(max_examples=400)
@given(text=TEXT, markup=st.sampled_from([None, False, True]))
def test_a_string_prints_as_rich_prints_it(text: str, markup: bool | None) -> None:
    ours, _ = ours_prints(text, markup=markup)
    assert ours == rich_prints(text, markup=markup)


def test_plain_text_does_not_need_rich() -> None:
    for text in ("created environment dev (deployer greentic.deployer.local-process@0.1.0)",
                 "deployment 01M8 split generation 3 applied: 01M8=10000", '{\n  "at": "2026-12-03T13:10:00Z"\n}'):
        ours, used_rich = ours_prints(text, markup=False)
        assert ours == text + "\n" and not used_rich


CELL = st.text(st.sampled_from(list("abZ09 _-.:[]é\n漢")), max_size=12) | st.sampled_from(
    ["01M8Y0EA0DFKNR3NKYATBBGPKY", "10000 bps", "-", "", ":smile:", "x" * 130])


@settings(max_examples=300)
@given(columns=st.lists(st.text(st.sampled_from(list("ABCZ .[:")), max_size=10), min_size=1, max_size=6),
       rows=st.lists(st.lists(CELL, max_size=7), max_size=5))
def test_a_table_prints_as_rich_prints_it(columns: list[str], rows: list[list[str]]) -> None:
    table = Table(*columns)
    for row in rows:
        if len(row) <= len(columns):  # rich refuses more cells than columns
            table.add_row(*row)
    ours, _ = ours_prints(table)
    assert ours == rich_prints(as_rich(table))


def test_a_revision_table_does_not_need_rich() -> None:
    table = Table("REVISION", "DEPLOYMENT", "BUNDLE", "SEQ", "LIFECYCLE", "WEIGHT")
    table.add_row("01M8Y0EA0DFKNR3NKYATBBGPKY", "01M8Y0E9KMBFXWS2F299NZPC7B", "hello", "1", "ready", "10000 bps")
    table.add_row("01M8Y0EAK4ZMXYM2N8WF7V227M", "01M8Y0E9KMBFXWS2F299NZPC7B", "hello", "2", "staged", "-")
    ours, used_rich = ours_prints(table)
    assert not used_rich and ours == rich_prints(as_rich(table))


def test_forced_colour_goes_through_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    _, used_rich = ours_prints("hello", markup=False)
    assert used_rich


def test_no_emoji_is_named_by_one_or_two_digits() -> None:
    """The plain path leaves ``:10:`` (in ``13:10:00``) alone; rich agrees only while this holds."""
    from rich._emoji_codes import EMOJI

    assert not [name for name in EMOJI if output._DIGITS.fullmatch(name)]
