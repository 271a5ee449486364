"""The HTTP helpers: Retry-After, backoff, the answer classifier, the https-only rule."""

from __future__ import annotations

import email.utils
import random

import httpx
import pytest

from ugcwatchd.errors import (
    AuthRejected,
    Conflict,
    Forbidden,
    NotFound,
    NotUploaded,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Rejected,
    Transient,
)
from ugcwatchd.providers.dublab import belongs_to_another_user
from ugcwatchd.providers.http import backoff, check_fetchable, parse_retry_after, provider_message, raise_for_answer


def answer(status: int, body: object = None, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("POST", "https://api.example/jobs")
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers, request=request)
    return httpx.Response(
        status, json=body if body is not None else {"error": "nope"}, headers=headers, request=request
    )


def test_retry_after_in_seconds() -> None:
    assert parse_retry_after("17") == 17.0


def test_retry_after_as_http_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 42, usegmt=True), now=now) == pytest.approx(42)
    assert parse_retry_after(email.utils.formatdate(now - 42, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "Fri, 99 Foo 2026"])
def test_retry_after_unreadable_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(1)
    for attempt in range(1, 15):
        ceiling = min(300.0, 2 ** (attempt - 1))
        assert ceiling / 2 <= backoff(attempt, rng=rng) <= ceiling
    assert backoff(30, rng=rng) <= 300.0


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, {"error": "duration must be between 1 and 30 seconds"}, Rejected),
        (401, {"error": "Invalid API key"}, AuthRejected),
        (402, {"error": "Insufficient credit balance"}, OutOfCredits),
        (403, {"error": "Forbidden: API access requires an Agency plan"}, AuthRejected),
        (404, {"error": "Not found"}, NotFound),
        (409, {"error": "Dub already in progress or completed"}, Conflict),
        (412, {"error": "Source file not uploaded yet"}, NotUploaded),
        (429, {"error": "Too many requests"}, RateLimited),
        (500, "Internal Server Error", Transient),
        (502, {"error": "Bad gateway"}, Transient),
        (503, "", Transient),
    ],
)
def test_answers_are_classified_per_design_7_1(status: int, body: object, kind: type[ProviderError]) -> None:
    with pytest.raises(kind) as caught:
        raise_for_answer("facedub", answer(status, body), mutating=True)
    assert caught.value.status == status
    if kind is Transient:
        assert caught.value.outcome_unknown  # a 5xx to a paid request may have taken effect


def test_dublab_403_for_another_users_file_is_not_an_account_problem() -> None:
    with pytest.raises(Forbidden):
        raise_for_answer(
            "dublab",
            answer(403, {"error": "Forbidden: file belongs to another user"}),
            mutating=True,
            forbidden_resource=belongs_to_another_user,
        )


def test_raise_for_answer_403_without_resource_hook_is_auth_rejected() -> None:
    """Only the client's hook makes a 403 about one resource: the provider's name decides nothing."""
    with pytest.raises(AuthRejected):
        raise_for_answer("dublab", answer(403, {"error": "Forbidden: file belongs to another user"}), mutating=True)


def test_raise_for_answer_403_hook_declining_is_auth_rejected() -> None:
    with pytest.raises(AuthRejected):
        raise_for_answer(
            "dublab",
            answer(403, {"error": "Forbidden: API access requires a plan"}),
            mutating=True,
            forbidden_resource=belongs_to_another_user,
        )


def test_429_carries_its_retry_after() -> None:
    with pytest.raises(RateLimited) as caught:
        raise_for_answer("facedub", answer(429, headers={"Retry-After": "9"}), mutating=True)
    assert caught.value.retry_after == 9


def test_5xx_to_a_read_is_not_an_unknown_outcome() -> None:
    with pytest.raises(Transient) as caught:
        raise_for_answer("dublab", answer(500), mutating=False)
    assert not caught.value.outcome_unknown


def test_success_raises_nothing() -> None:
    raise_for_answer("facedub", answer(200, {"ok": True}), mutating=True)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"error": "a"}, "a"),
        ({"detail": "b"}, "b"),
        ({"message": "c"}, "c"),
        ("plain text", "plain text"),
        ([1, 2], "[1, 2]"),
    ],
)
def test_provider_message_keeps_the_providers_words(body: object, said: str) -> None:
    assert provider_message(answer(400, body)) == said


@pytest.mark.parametrize(
    "url",
    ["https://cdn.facedub.io/x.mp4", "http://127.0.0.1:8787/cdn/x.mp4", "http://localhost/x", "http://[::1]:80/x"],
)
def test_fetchable_urls(url: str) -> None:
    check_fetchable(url)


@pytest.mark.parametrize(
    "url", ["http://cdn.facedub.io/x.mp4", "ftp://127.0.0.1/x", "file:///etc/passwd", "http://10.0.0.1/x"]
)
def test_unfetchable_urls_are_refused_without_their_query(url: str) -> None:
    with pytest.raises(Rejected) as caught:
        check_fetchable(url + "?X-Amz-Signature=secret")
    assert "secret" not in str(caught.value)
