"""The console's routes: pages and live fragments (GET), actions (POST only, logged in, CSRF-checked).

Who may see what: read pages are open when the console listens on loopback, and need a logged-in
session otherwise; every action needs a session and its CSRF token, and a configured token at all.
A GET never changes anything (the action routes answer it with 405).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import UgcwatchdError
from ..ledger import Ledger
from . import actions, pages, views
from .auth import LOGIN_COOKIE, SESSION_COOKIE, Session, cookie_flags, csrf_ok, is_loopback, same_secret, split_host
from .render import Viewer, login_page, message_page
from .report import overview_json
from .sidecars import read_within

if TYPE_CHECKING:
    from .server import Console

log = logging.getLogger("ugcwatchd.console")
Form = dict[str, str]
FORM_MAX = 16 * 1024  # bytes of a posted form
SIDECAR_WAIT = 3.0  # seconds to read an item's sidecars; a hung share shows them as unreadable
ROW_ID_MAX = 2**63 - 1  # SQLite's largest integer: a bigger id in a URL names nothing (and must not crash)


def _csp(nonce: str | None) -> str:
    own = f"'nonce-{nonce}'" if nonce else "'none'"
    return (
        f"default-src 'none'; script-src {own}; style-src {own}; img-src 'self' data:; connect-src 'self';"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


class Guard:
    """Security headers on every answer, the Host check on loopback, and the server time taken."""

    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.app, self.console = app, console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        if self.console.open_reads and not is_loopback(split_host(host)):
            # Open pages on loopback must not be readable by a site that points its name at 127.0.0.1.
            await PlainTextResponse("this console answers only to a loopback host name", 421)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = {
                    b"x-content-type-options": b"nosniff",
                    b"referrer-policy": b"no-referrer",
                    b"x-frame-options": b"DENY",
                    b"cross-origin-opener-policy": b"same-origin",
                    b"cache-control": b"no-store",
                    b"content-security-policy": _csp(None).encode(),
                }
                headers += [(k, v) for k, v in extra.items() if k not in names]
                took = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", f"app;dur={took:.1f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _next(value: str | None) -> str:
    """Where to go after an action: a path of this console, never another site."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def _row_id(text: str) -> int | None:
    """A ledger id from a URL (``123``), or None: signs, other digits (``²``), 10**30 are no id."""
    return int(text) if text.isascii() and text.isdigit() and int(text) <= ROW_ID_MAX else None


def _path_id(request: Request, key: str) -> int:
    found = _row_id(str(request.path_params[key]))
    if found is None:
        raise HTTPException(404, f"there is no {key} {request.path_params[key]}")
    return found


async def _form(request: Request) -> Form:
    """A small url-encoded form (no multipart: nothing here uploads files); {} for anything else."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX:
            raise HTTPException(413, "form too large")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


class Routes:
    def __init__(self, console: Console) -> None:
        self.console = console

    # -- who is asking --------------------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        return self.console.sessions.get(request.cookies.get(SESSION_COOKIE), self.console.token)

    def viewer(self, request: Request, session: Session | None, *, flash: bool = True) -> Viewer:
        return Viewer(
            logged_in=session is not None,
            csrf=session.csrf if session else None,
            actions=self.console.token is not None,
            nonce=secrets.token_urlsafe(16),
            flash=session.take_flash() if session and flash else None,
        )

    def html(self, text: str, viewer: Viewer, status: int = 200) -> HTMLResponse:
        return HTMLResponse(text, status, headers={"content-security-policy": _csp(viewer.nonce)})

    def reader(
        self, render: Callable[[Request, Viewer], Awaitable[Response]], *, page: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        """A read route: open on loopback, else for a logged-in session (pages send strangers to the login)."""

        async def route(request: Request) -> Response:
            session = self.session(request)
            if session is None and not self.console.open_reads:
                if page:
                    return RedirectResponse(f"/login?next={request.url.path}", 303)
                return PlainTextResponse("log in first", 401)
            return await render(request, self.viewer(request, session, flash=page))

        return route

    def actor(self, act: Callable[[Request, Form], Awaitable[str]]) -> Callable[[Request], Awaitable[Response]]:
        """An action route: a token configured, a logged-in session, its CSRF token; else 403 and no change."""

        async def route(request: Request) -> Response:
            session = self.session(request)
            viewer = self.viewer(request, session, flash=False)
            if self.console.token is None:
                return self.html(message_page("Actions are off", "No console token is set.", viewer), viewer, 403)
            if session is None:
                return self.html(message_page("Log in first", "Actions need a logged-in session.", viewer), viewer, 403)
            form = await _form(request)
            if not csrf_ok(session, form.get("csrf")):
                return self.html(
                    message_page("Refused", "The form's CSRF token is missing or wrong.", viewer), viewer, 403
                )
            try:
                session.flash = await act(request, form)
            except actions.Refused as exc:
                session.flash = f"Refused: {exc}"
            return RedirectResponse(_next(form.get("next")), 303)

        return route

    # -- pages ----------------------------------------------------------------------------------------

    async def overview(self, request: Request, viewer: Viewer) -> Response:
        provider_views = self.console.views()
        names = [v.name for v in provider_views]

        def read(ledger: Ledger) -> tuple[views.Overview, list[views.Spend]]:
            return views.overview(ledger, provider_views), self.console.spend(ledger, names)

        o, spends = await self.console.ledger_work(read)
        return self.html(pages.overview_page(o, spends, viewer), viewer)

    async def overview_live(self, request: Request, viewer: Viewer) -> Response:
        provider_views = self.console.views()
        o = await self.console.ledger_work(lambda ledger: views.overview(ledger, provider_views))
        return self.html(pages.overview_live(o, viewer), viewer)

    async def spend_live(self, request: Request, viewer: Viewer) -> Response:
        names = [v.name for v in self.console.views()]
        spends = await self.console.ledger_work(lambda ledger: self.console.spend(ledger, names))
        return self.html(pages.spend_live(spends), viewer)

    async def overview_data(self, request: Request, viewer: Viewer) -> Response:
        provider_views = self.console.views()
        o = await self.console.ledger_work(lambda ledger: views.overview(ledger, provider_views))
        return JSONResponse(overview_json(o))

    async def items(self, request: Request, viewer: Viewer) -> Response:
        q = request.query_params

        def term(key: str) -> str:  # SQLite's LIKE ends a pattern at a NUL, which no name holds anyway
            return q.get(key, "").replace("\x00", "").strip()

        filters = views.Filters(
            name=term("name"), client=term("client"), rule=term("rule"), state=term("state"),
            before=_row_id(q.get("before", "")),
        )  # fmt: skip
        page = await self.console.ledger_work(lambda ledger: views.items(ledger, filters))
        rules = [r.name for r in self.console.config().rules]
        return self.html(pages.items_page(page, rules, viewer), viewer)

    async def _item(self, request: Request) -> views.ItemView:
        item_id = _path_id(request, "item")
        try:
            return await self.console.ledger_work(lambda ledger: views.item_view(ledger, item_id))
        except UgcwatchdError:
            raise HTTPException(404, f"there is no item {item_id}") from None

    async def item(self, request: Request, viewer: Viewer) -> Response:
        v = await self._item(request)
        found = await read_within(v.item.outbox, [(j.id, j.name) for j in v.jobs], SIDECAR_WAIT)
        if found is not None:  # else shown as unreadable: the outbox did not answer in time
            v = dataclasses.replace(v, sidecars=found)
        return self.html(pages.item_page(v, viewer, time.time()), viewer)

    async def item_live(self, request: Request, viewer: Viewer) -> Response:
        v = await self._item(request)
        return self.html(pages.item_live(v, time.time()), viewer)

    # -- logging in -----------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        viewer = self.viewer(request, self.session(request), flash=False)
        nonce, csrf = self.console.sessions.login_nonce()
        response = self.html(login_page(viewer, csrf, _next(request.query_params.get("next"))), viewer)
        response.set_cookie(LOGIN_COOKIE, nonce, **cookie_flags(600))  # type: ignore[arg-type]
        return response

    async def login(self, request: Request) -> Response:
        sessions, token = self.console.sessions, self.console.token
        viewer = self.viewer(request, None, flash=False)
        form = await _form(request)
        if token is None:
            return self.html(login_page(viewer, "", "/"), viewer, 403)
        if not sessions.login_form_ok(request.cookies.get(LOGIN_COOKIE), form.get("csrf", "")):
            return self.html(message_page("Refused", "Reload the login page and try again.", viewer), viewer, 403)
        back = _next(form.get("next"))
        if not sessions.may_try():
            return self.html(
                login_page(viewer, form.get("csrf", ""), back, "Too many wrong tokens: wait a minute."), viewer, 429
            )
        if not same_secret(form.get("token", ""), token):
            sessions.failed()
            client = request.client.host if request.client else "?"
            log.warning("web console: a wrong token was given from %s", client)
            return self.html(
                login_page(viewer, form.get("csrf", ""), back, "That is not the console token."), viewer, 403
            )
        session = sessions.create(token)
        response = RedirectResponse(back, 303)
        response.set_cookie(SESSION_COOKIE, session.id, **cookie_flags())  # type: ignore[arg-type]
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    async def logout(self, request: Request) -> Response:
        session = self.session(request)
        form = await _form(request)
        if session is None or not csrf_ok(session, form.get("csrf")):
            return PlainTextResponse("refused", 403)
        self.console.sessions.end(session.id)
        response = RedirectResponse("/", 303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # -- actions --------------------------------------------------------------------------------------

    async def retry(self, request: Request, form: Form) -> str:
        item_id, config = _path_id(request, "item"), self.console.config()
        return await self.console.ledger_work(lambda ledger: actions.retry(ledger, config, item_id))

    async def approve(self, request: Request, form: Form) -> str:
        item_id = _path_id(request, "item")
        return await self.console.ledger_work(lambda ledger: actions.approve(ledger, item_id))

    async def reject(self, request: Request, form: Form) -> str:
        item_id = _path_id(request, "item")
        return await self.console.ledger_work(lambda ledger: actions.reject(ledger, item_id))

    async def adopt(self, request: Request, form: Form) -> str:
        job_id, remote_id = _path_id(request, "job"), form.get("remote_id", "")
        return await self.console.ledger_work(lambda ledger: actions.adopt(ledger, job_id, remote_id))

    async def resubmit(self, request: Request, form: Form) -> str:
        job_id, confirmed = _path_id(request, "job"), form.get("confirm") == "yes"
        return await self.console.ledger_work(lambda ledger: actions.resubmit(ledger, job_id, confirmed=confirmed))


def build_app(console: Console) -> ASGIApp:
    r = Routes(console)
    get = ["GET"]
    routes = [
        Route("/", r.reader(r.overview), methods=get),
        Route("/live/overview", r.reader(r.overview_live, page=False), methods=get),
        Route("/live/spend", r.reader(r.spend_live, page=False), methods=get),
        Route("/overview.json", r.reader(r.overview_data, page=False), methods=get),
        Route("/items", r.reader(r.items), methods=get),
        Route("/items/{item:int}", r.reader(r.item), methods=get),
        Route("/live/items/{item:int}", r.reader(r.item_live, page=False), methods=get),
        Route("/login", r.login_form, methods=get),
        Route("/login", r.login, methods=["POST"]),
        Route("/logout", r.logout, methods=["POST"]),
        Route("/items/{item:int}/retry", r.actor(r.retry), methods=["POST"]),
        Route("/items/{item:int}/approve", r.actor(r.approve), methods=["POST"]),
        Route("/items/{item:int}/reject", r.actor(r.reject), methods=["POST"]),
        Route("/jobs/{job:int}/adopt", r.actor(r.adopt), methods=["POST"]),
        Route("/jobs/{job:int}/resubmit", r.actor(r.resubmit), methods=["POST"]),
        Route("/favicon.ico", lambda request: Response(status_code=204), methods=get),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return PlainTextResponse(str(exc.detail), exc.status_code, headers=getattr(exc, "headers", None))

    async def crash(request: Request, exc: Exception) -> Response:
        log.error("web console: %s %s failed", request.method, request.url.path, exc_info=exc)
        return PlainTextResponse("the console met an unexpected error; the daemon's log says more", 500)

    handlers: dict[Any, Any] = {HTTPException: http_error, Exception: crash}
    return Guard(Starlette(routes=routes, exception_handlers=handlers), console)
