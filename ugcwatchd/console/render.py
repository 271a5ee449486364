"""HTML by string templates, every value escaped: names from the ledger or the filesystem go through
``names.shown`` (bad bytes as ``\\xNN``), then ``html.escape``. The page frame, forms and small pieces
live here; the pages themselves in :mod:`.pages`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from html import escape

from .. import __version__
from ..names import shown
from .assets import CSS, SCRIPT

ACTIONS_OFF = (
    "Actions are off: no console token is set. Put one in the credential file "
    "<code>/etc/ugcwatchd/credentials/console_token</code> (<code>openssl rand -hex 32</code>), add "
    "<code>LoadCredential=console_token:/etc/ugcwatchd/credentials/console_token</code> to the unit "
    "(<code>systemctl edit ugcwatchd</code>), or set <code>UGCWATCHD_CONSOLE_TOKEN</code>; then restart ugcwatchd."
)


def e(value: object) -> str:
    """Any value as HTML text; quotes escaped too, so it is safe in an attribute."""
    return escape(str(value), quote=True)


def name(value: str) -> str:
    """A file or job name: undecodable bytes as ``\\xNN``, then escaped."""
    return escape(shown(value), quote=True)


def when(ts: float | None, now: float | None = None) -> str:
    """Local time: ``14:03:22`` today, ``2026-11-20 14:03`` before."""
    if ts is None:
        return "-"
    moment, today = datetime.fromtimestamp(ts), datetime.fromtimestamp(now or time.time()).date()
    return moment.strftime("%H:%M:%S") if moment.date() == today else moment.strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Viewer:
    """Who looks at the page, and what the page may offer them."""

    logged_in: bool
    csrf: str | None
    actions: bool  # a token is configured
    nonce: str
    flash: str | None = None

    @property
    def may_act(self) -> bool:
        return self.actions and self.logged_in and self.csrf is not None


def action(viewer: Viewer, path: str, label: str, *, back: str, css: str = "", extra: str = "") -> str:
    """A POST form with one button and the session's CSRF token; nothing for a viewer who may not act."""
    if not viewer.may_act or viewer.csrf is None:
        return ""
    button = f'<button type="submit" class="{e(css)}">{e(label)}</button>' if css else f"<button>{e(label)}</button>"
    return (
        f'<form class="inline" method="post" action="{e(path)}">'
        f'<input type="hidden" name="csrf" value="{e(viewer.csrf)}">'
        f'<input type="hidden" name="next" value="{e(back)}">{extra}{button}</form>'
    )


def act_hint(viewer: Viewer) -> str:
    """Why no buttons are shown, when they are not."""
    if not viewer.actions:
        return f'<p class="note">{ACTIONS_OFF}</p>'
    if not viewer.logged_in:
        return '<p class="note"><a href="/login">Log in</a> to retry, approve, reject or resolve work.</p>'
    return ""


def page(title: str, body: str, viewer: Viewer, *, path: str = "/") -> str:
    """The whole document: header, the body, the footer, the inline style and script."""
    if viewer.logged_in and viewer.csrf:
        account = (
            f'<form class="inline" method="post" action="/logout"><input type="hidden" name="csrf"'
            f' value="{e(viewer.csrf)}"><button>Log out</button></form>'
        )
    elif viewer.actions:
        account = f'<a href="/login?next={e(path)}">Log in</a>'
    else:
        account = '<span class="muted">read only</span>'
    flash = f'<p class="flash" role="status">{e(viewer.flash)}</p>' if viewer.flash else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{e(title)} - ugcwatchd</title><style nonce="{e(viewer.nonce)}">{CSS}</style></head><body>'
        '<header><span class="brand">ugcwatchd</span><nav><a href="/">Overview</a><a href="/items">Items</a></nav>'
        f"{account}</header><main>{flash}{body}</main>"
        f'<footer>ugcwatchd {e(__version__)} - updated <span id="stamp">{e(when(time.time()))}</span></footer>'
        f'<script nonce="{e(viewer.nonce)}">{SCRIPT}</script></body></html>'
    )


def login_page(viewer: Viewer, login_csrf: str, back: str, problem: str | None = None) -> str:
    if not viewer.actions:
        return page("Log in", f'<h1>Log in</h1><p class="note">{ACTIONS_OFF}</p>', viewer, path="/login")
    shown_problem = f'<p class="flash bad" role="alert">{e(problem)}</p>' if problem else ""
    body = (
        f"<h1>Log in</h1>{shown_problem}"
        '<form method="post" action="/login" class="search">'
        f'<input type="hidden" name="csrf" value="{e(login_csrf)}"><input type="hidden" name="next" value="{e(back)}">'
        '<label>Console token<input type="password" name="token" autocomplete="current-password" required'
        ' autofocus></label><button class="go">Log in</button></form>'
        '<p class="muted">The token is the one in the credential <code>console_token</code> or in '
        "<code>UGCWATCHD_CONSOLE_TOKEN</code>.</p>"
    )
    return page("Log in", body, viewer, path="/login")


def message_page(title: str, text: str, viewer: Viewer) -> str:
    return page(title, f'<h1>{e(title)}</h1><p>{e(text)}</p><p><a href="/">Overview</a></p>', viewer)


def progress_cell(progress: float | None, estimated: bool) -> str:
    if progress is None:
        return '<span class="muted">-</span>'
    value = max(0.0, min(100.0, progress))
    label = f"{'~' if estimated else ''}{value:.0f}%"
    return f'<progress max="100" value="{value:.0f}"></progress> <span class="pct">{label}</span>'
