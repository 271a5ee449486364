"""Rendering: everything from the ledger or the filesystem is escaped, odd names show their bad bytes
as \\xNN, the pages load nothing from elsewhere, and buttons appear only for a viewer who may act."""

from __future__ import annotations

import re

from ugcwatchd.console.eta import Forecast
from ugcwatchd.console.pages import item_page, items_page, overview_page
from ugcwatchd.console.render import Viewer, e, login_page, name, page, progress_cell
from ugcwatchd.console.sidecars import Unshown
from ugcwatchd.console.views import (
    Filters,
    HeldGroup,
    ItemRow,
    ItemsPage,
    ItemView,
    Overview,
    ProviderRow,
    ProviderView,
)
from ugcwatchd.ledger import Failure, InputFile, Item, Job, JobDetail
from ugcwatchd.ledger.console import Event, SearchPage
from ugcwatchd.states import ErrorCode, FailStage, HoldReason, ItemState, JobState

EVIL = '<script>alert("x")</script>&'
ODD = "caf\udce9 <i>.mp4"  # the byte 0xE9 that is not UTF-8, and markup
BREAKOUT = '{"message": "</pre><script>x</script>"}'  # a sidecar that tries to leave its <pre>
VIEWER = Viewer(logged_in=True, csrf="csrf-token-1", actions=True, nonce="n0nce")
STRANGER = Viewer(logged_in=False, csrf=None, actions=True, nonce="n0nce")
NO_TOKEN = Viewer(logged_in=False, csrf=None, actions=False, nonce="n0nce")


def _item(state: ItemState = ItemState.FAILED) -> Item:
    return Item(7, EVIL, "facedub", f"/srv/{EVIL}/inbox", "/srv/out", "k", state, EVIL, None, {"client": EVIL})


def _job(state: JobState = JobState.FAILED, **detail: object) -> Job:
    failure = Failure(FailStage.POLL, ErrorCode.REMOTE_FAILED, EVIL) if state == JobState.FAILED else None
    return Job(
        3, 7, "ugc-000000000001", ODD, "facedub", "d", {}, 2, state, None, None, None, 1,
        JobDetail(failure=failure, **detail),  # type: ignore[arg-type]
    )  # fmt: skip


def _no_raw_markup(html: str) -> None:
    assert "<script>alert" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in html or "&lt;i&gt;" in html


def test_render_escapes_quotes_and_markup_and_shows_bad_bytes() -> None:
    assert e(EVIL) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;"
    assert name(ODD) == "caf\\xe9 &lt;i&gt;.mp4"


def test_render_page_loads_nothing_from_elsewhere_and_uses_its_nonce() -> None:
    html = page("t", "<p>body</p>", VIEWER)
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert '<style nonce="n0nce">' in html and '<script nonce="n0nce">' in html
    assert 'name="viewport"' in html  # readable on a phone


def test_render_item_page_escapes_every_value_from_the_ledger_and_the_outbox() -> None:
    item = _item()
    inputs = [InputFile("photo", f"/srv/in/{ODD}", ODD, "ab" * 32, 10, 1, EVIL, None, None, f"/srv/failed/{ODD}")]
    events = [Event(1e9, 3, EVIL, {"by": EVIL, "detail": {"remote": {"stage": EVIL, "progress": 12.0}}})]
    view = ItemView(
        item, inputs, [_job()], {3: 2.0}, events, {}, awaiting_approval=False, retryable=True,
        sidecars={3: {"status": None, "quote": None, "result": None, "error": BREAKOUT}},
    )  # fmt: skip
    html = item_page(view, VIEWER, 1e9)
    _no_raw_markup(html)
    assert "</pre><script>" not in html and "&lt;/pre&gt;&lt;script&gt;" in html
    assert "caf\\xe9 &lt;i&gt;.mp4" in html  # shown as \xNN, never a replacement character
    assert "\ufffd" not in html
    assert 'action="/items/7/retry"' in html and 'value="csrf-token-1"' in html


def test_render_item_page_says_when_a_sidecar_is_missing_or_unreadable() -> None:
    view = ItemView(_item(), [], [_job()], {}, [], {}, awaiting_approval=False, retryable=False)
    assert "the outbox could not be read now" in item_page(view, VIEWER, 1e9)
    missing = ItemView(
        _item(), [], [_job()], {}, [], {}, awaiting_approval=False, retryable=False,
        sidecars={3: dict.fromkeys(("status", "quote", "result", "error"))},
    )  # fmt: skip
    assert "no sidecar in the outbox" in item_page(missing, VIEWER, 1e9)


def test_render_actions_only_for_a_logged_in_viewer_and_how_to_set_a_token_without_one() -> None:
    view = ItemView(_item(), [], [_job()], {}, [], {}, awaiting_approval=True, retryable=True, sidecars={})
    assert "<form" in item_page(view, VIEWER, 1e9)
    stranger = item_page(view, STRANGER, 1e9)
    assert 'action="/items/7/retry"' not in stranger and 'href="/login' in stranger
    no_token = item_page(view, NO_TOKEN, 1e9)
    assert "UGCWATCHD_CONSOLE_TOKEN" in no_token and "console_token" in no_token and "<form" not in no_token


def test_render_items_page_escapes_the_search_it_shows_back() -> None:
    filters = Filters(name=EVIL, client='"><x', rule=EVIL, state="failed")
    row = ItemRow(_item(), [InputFile("photo", "/p", ODD, "a" * 64, 1, 1)], [_job()])
    html = items_page(ItemsPage(filters, [row], SearchPage([row.item], 5, 50)), [EVIL], VIEWER)
    _no_raw_markup(html)
    assert 'value="&quot;&gt;&lt;x"' in html
    assert 'href="/items?name=%3Cscript%3E' in html  # the next page keeps the search, URL-encoded


def test_render_overview_escapes_held_work_and_offers_approval_to_a_logged_in_viewer() -> None:
    view = ProviderView("facedub", "credits", EVIL, 1, 2, None, False, None)
    held = _job(JobState.HELD, held=HoldReason.APPROVAL)
    o = Overview(
        {"failed": 1}, {"held": 1}, [ProviderRow(view, {"held": 1}, None, Forecast([], None))],
        [HeldGroup(_item(ItemState.PLANNED), [held], HoldReason.APPROVAL, f"awaiting approval {EVIL}")],
        1, [], 0, [(_item(), _job())], 1e9,
    )  # fmt: skip
    html = overview_page(o, [], VIEWER)
    _no_raw_markup(html)
    assert 'action="/items/7/approve"' in html and 'action="/items/7/reject"' in html
    assert 'action="/items/7/retry"' in html  # the failure's item may be retried
    assert "paused: &lt;script&gt;" in html
    assert 'action="/items/7/approve"' not in overview_page(o, [], STRANGER)


def test_render_login_page_keeps_where_to_go_escaped() -> None:
    html = login_page(STRANGER, "login-csrf", '/items"><script>')
    assert 'value="/items&quot;&gt;&lt;script&gt;"' in html and 'type="password"' in html


def test_render_progress_is_clamped_and_marks_estimates() -> None:
    assert 'value="100"' in progress_cell(140.0, False) and "100%" in progress_cell(140.0, False)
    assert "~40%" in progress_cell(40.0, True)
    assert "-" in progress_cell(None, False)


def test_render_item_page_shows_a_sidecar_nested_too_deep_for_json_as_text() -> None:
    deep = "[" * 100_000 + "]" * 100_000  # under the size limit; json.loads gives up with a RecursionError
    view = ItemView(
        _item(), [], [_job()], {}, [], {}, awaiting_approval=False, retryable=False,
        sidecars={3: {"status": deep, "quote": Unshown("not shown: a symbolic link"), "result": None, "error": None}},
    )  # fmt: skip
    html = item_page(view, VIEWER, 1e9)
    assert deep in html and 'quote.json: <span class="bad">not shown: a symbolic link</span>' in html


def test_render_items_and_item_page_of_a_client_folder_not_utf8_show_its_bytes() -> None:
    item = Item(8, "faces", "facedub", "/srv/in", "/srv/out", "k", ItemState.FAILED, None, None, {"client": ODD})
    row = ItemRow(item, [], [])
    pages = (
        items_page(ItemsPage(Filters(), [row], SearchPage([item], None, 1)), ["faces"], VIEWER),
        item_page(ItemView(item, [], [], {}, [], {}, awaiting_approval=False, retryable=False), VIEWER, 1e9),
    )
    for html in pages:
        html.encode("utf-8")  # a lone surrogate would fail the response
        assert "caf\\xe9 &lt;i&gt;.mp4" in html and "<i>" not in html
