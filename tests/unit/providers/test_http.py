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
    OddAnswer,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Rejected,
    Transient,
    UploadRefused,
)
from ugcwatchd.providers.dublab import Dub, Me, belongs_to_another_user
from ugcwatchd.providers.http import (
    RETRY_AFTER_CAP,
    Once,
    backoff,
    check_fetchable,
    decode_json,
    on_loopback,
    parse_answer,
    parse_records,
    parse_retry_after,
    provider_message,
    raise_for_answer,
    raise_for_upload,
)


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
    ("url", "loopback"),
    [
        ("https://cdn.facedub.io/x.mp4", False),
        ("https://cdn.facedub.io/x.mp4", True),
        ("http://127.0.0.1:8787/cdn/x.mp4", True),
        ("http://localhost/x", True),
        ("http://[::1]:80/x", True),
    ],
)
def test_fetchable_urls(url: str, loopback: bool) -> None:
    check_fetchable(url, loopback=loopback)


@pytest.mark.parametrize(
    "url", ["http://cdn.facedub.io/x.mp4", "ftp://127.0.0.1/x", "file:///etc/passwd", "http://10.0.0.1/x"]
)
def test_unfetchable_urls_are_refused_without_their_query(url: str) -> None:
    with pytest.raises(Rejected) as caught:
        check_fetchable(url + "?X-Amz-Signature=secret", loopback=True)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8787/cdn/x.mp4",
        "https://127.0.0.1/x",
        "http://localhost:631/",
        "https://LOCALHOST./x",
        "http://api.localhost/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0:9464/metrics",
        "https://127.1/x",
        "https://2130706433/x",
        "https://0x7f.1/x",
    ],
)
def test_check_fetchable_this_machine_while_the_provider_is_elsewhere_is_refused(url: str) -> None:
    with pytest.raises(Rejected, match="only https"):
        check_fetchable(url, loopback=False)


@pytest.mark.parametrize(
    ("base", "local"),
    [("http://127.0.0.1:8787", True), ("http://localhost:1", True), ("https://api.facedub.io", False)],
)
def test_on_loopback_base_url_is_the_sandbox(base: str, local: bool) -> None:
    assert on_loopback(base) is local


def test_raise_for_answer_retry_after_86400_is_capped_at_ten_minutes_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    once = Once()
    waits = []
    for _ in range(3):
        with pytest.raises(RateLimited) as limited:
            raise_for_answer(
                "facedub", answer(429, {"error": "slow"}, {"Retry-After": "86400"}), mutating=True, once=once
            )
        waits.append(limited.value.retry_after)
    assert waits == [RETRY_AFTER_CAP] * 3 == [600.0] * 3
    told = [r for r in caplog.records if "86400" in r.getMessage() and r.levelname == "WARNING"]
    assert len(told) == 1


def test_raise_for_upload_400_401_403_are_upload_refused_with_s3_words() -> None:
    xml = (
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
        "<Message>Request has expired</Message></Error>"
    )
    for status in (400, 401, 403):
        with pytest.raises(UploadRefused) as refused:
            raise_for_upload("dublab", httpx.Response(status, text=xml, headers={"Content-Type": "application/xml"}))
        assert refused.value.provider_error == "AccessDenied: Request has expired"
    with pytest.raises(Transient):
        raise_for_upload("dublab", httpx.Response(503, text="busy"))
    raise_for_upload("dublab", httpx.Response(200))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"id": "u1", "seconds": 3600.5}, "seconds: input should be a valid integer (got 3600.5)"),
        ({"id": "u1"}, "seconds: missing"),
        ({"id": "u1", "seconds": "60"}, "seconds: input should be a valid integer (got '60')"),
    ],
)
def test_parse_answer_wrong_body_is_odd_answer_saying_what(data: object, problem: str) -> None:
    with pytest.raises(OddAnswer) as odd:
        parse_answer("dublab", Me, data, "GET /api/v1/me")
    assert problem in str(odd.value) and "GET /api/v1/me" in str(odd.value)
    assert isinstance(odd.value, Transient) and not odd.value.outcome_unknown


def test_decode_json_html_after_a_paid_request_is_odd_answer_with_unknown_outcome() -> None:
    page = httpx.Response(200, text="<!DOCTYPE html><html>Just a moment</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(OddAnswer, match="not with JSON \\(text/html\\)") as odd:
        decode_json("facedub", page, "POST /jobs", mutating=True)
    assert odd.value.outcome_unknown


def test_parse_records_one_odd_record_is_set_aside_alone() -> None:
    good = {"id": "a", "name": "x.ugc-1.mp4", "externalStatusId": 3}
    listing = parse_records(
        "dublab", Dub, [good, {"id": "b", "name": None, "externalStatusId": 3}, {"name": "y"}], "GET /api/v1/dubs"
    )
    assert [d.id for d in listing] == ["a"]
    assert [odd.id for odd in listing.unreadable] == ["b", None]
    assert "record b is unreadable: name:" in listing.unreadable[0].problem
    with pytest.raises(OddAnswer, match="dict"):
        parse_records("dublab", Dub, {}, "GET /api/v1/dubs")
