"""Who may do what in the console: the token, sessions, CSRF tokens, and which hosts a request may name.

- The token is compared in constant time (digests of equal length), and never stored in a session:
  a session keeps the digest of the token it logged in with, so a new token ends every session.
- A session is a random id in a cookie that is HttpOnly and SameSite=Strict; it carries its own CSRF
  token, which every form posts back. The login form itself is guarded by a signed nonce in a cookie.
- On loopback, a request must name a loopback host: a web page elsewhere cannot reach the console by
  pointing its own domain at 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretStr

from .. import urls

SESSION_COOKIE = "ugcwatchd_session"
LOGIN_COOKIE = "ugcwatchd_login"
SESSION_IDLE = 12 * 3600.0  # an unused session ends after this long
SESSIONS_KEPT = 100  # at most this many at once; logging in beyond ends the least recently used
FAILED_LOGINS = (10, 60.0)  # at most 10 wrong tokens a minute; then logins wait


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def same_secret(given: str, expected: SecretStr) -> bool:
    """Whether ``given`` is the token, in time that does not depend on where they differ (or their lengths)."""
    return hmac.compare_digest(digest(given), digest(expected.get_secret_value()))


def cookie_flags(max_age: int | None = None) -> dict[str, object]:
    """What every console cookie is set with: not readable by scripts, never sent from another site."""
    return {"httponly": True, "samesite": "strict", "path": "/", "max_age": max_age}


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``[::1]``, ``localhost``: only this machine can connect.

    Not ``*.localhost``: some browsers ask DNS for those names, and a hostile resolver can point one at
    a page of its own, then at 127.0.0.1 (DNS rebinding).
    """
    return urls.is_loopback(host.strip("[]"))


def split_host(header: str) -> str:
    """The host of a ``Host`` header without its port: ``[::1]:8790`` -> ``::1``."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


@dataclass
class Session:
    id: str
    csrf: str
    token_digest: bytes
    seen: float
    flash: str | None = None

    def take_flash(self) -> str | None:
        message, self.flash = self.flash, None
        return message


class Sessions:
    """The logged-in sessions, in memory: a restart asks everyone to log in again."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._failures: deque[float] = deque()
        self.login_secret = secrets.token_bytes(32)

    def create(self, token: SecretStr) -> Session:
        while len(self._sessions) >= SESSIONS_KEPT:
            self._sessions.popitem(last=False)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), digest(token.get_secret_value()), 0.0)
        session.seen = self.clock()
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None, token: SecretStr | None) -> Session | None:
        """The live session of that id, logged in with the current token; None otherwise."""
        if not session_id or token is None:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > SESSION_IDLE or not hmac.compare_digest(
            session.token_digest, digest(token.get_secret_value())
        ):
            del self._sessions[session_id]
            return None
        session.seen = now
        self._sessions.move_to_end(session_id)
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def clear(self) -> None:
        self._sessions.clear()

    def __len__(self) -> int:
        return len(self._sessions)

    # -- logging in ---------------------------------------------------------------------------------

    def login_nonce(self) -> tuple[str, str]:
        """A fresh nonce for the login cookie, and the CSRF token the login form carries for it."""
        nonce = secrets.token_urlsafe(24)
        return nonce, self.login_csrf(nonce)

    def login_csrf(self, nonce: str) -> str:
        return hmac.new(self.login_secret, nonce.encode(), hashlib.sha256).hexdigest()

    def login_form_ok(self, nonce: str | None, csrf: str) -> bool:
        return bool(nonce) and hmac.compare_digest(self.login_csrf(nonce or ""), csrf)

    def may_try(self) -> bool:
        """False while too many wrong tokens were given in the last minute."""
        count, window = FAILED_LOGINS
        now = self.clock()
        while self._failures and now - self._failures[0] > window:
            self._failures.popleft()
        return len(self._failures) < count

    def failed(self) -> None:
        self._failures.append(self.clock())


def csrf_ok(session: Session | None, given: str | None) -> bool:
    """Whether a form carries its session's CSRF token (compared in constant time)."""
    if session is None or not given:
        return False
    return hmac.compare_digest(session.csrf.encode(), given.encode("utf-8", "surrogatepass"))
