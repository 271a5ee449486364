"""The provider registry: every adapter answers what the core asks, without the core naming it."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from ugcwatchd.providers import registry
from ugcwatchd.providers.base import InputRef, JobSpec
from ugcwatchd.providers.dublab import DubLab
from ugcwatchd.providers.facedub import FaceDub
from ugcwatchd.rules import DubLabProvider, FaceDubProvider, ProviderSettings
from ugcwatchd.settings import Settings, api_key

FD_URL, DL_URL = "https://api.facedub.test", "https://dublab.test"
KEY = SecretStr("k_registry_test")

PHOTO = InputRef("photo", "alice.jpg", Path("/in/alice.jpg"))
VIDEO = InputRef("video", "alice.mp4", Path("/in/alice.mp4"))
MEDIA = InputRef("media", "pitch.mp4", Path("/in/pitch.mp4"))
DUB_PARAMS = {"to": "de", "from": "auto", "studio_quality": True, "seconds": 3.2, "content_type": "video/mp4"}


def block(name: str) -> ProviderSettings:
    return FaceDubProvider(base_url=FD_URL) if name == "facedub" else DubLabProvider(base_url=DL_URL)


@pytest.mark.parametrize("name", registry.names())
def test_registry_every_adapter_has_the_interface_members(name: str) -> None:
    cls: Any = registry.adapter_class(name)
    assert cls.name == name
    assert isinstance(cls.budget_unit, str) and cls.budget_unit
    assert isinstance(cls.submissions_at_once, int) and cls.submissions_at_once >= 1
    assert isinstance(cls.reconcile_serially, bool)
    for method in ("job_spec", "estimate", "account", "languages", "submit", "refresh", "fetch", "reconcile"):
        assert callable(getattr(cls, method, None)), method
    for method in ("account", "languages", "submit", "refresh", "fetch", "reconcile", "remember", "aclose"):
        assert inspect.iscoroutinefunction(getattr(cls, method)), method


def test_registry_names_lists_facedub_then_dublab() -> None:
    assert registry.names() == ("facedub", "dublab")


def test_registry_unknown_name_raises_key_error_naming_the_known_ones() -> None:
    with pytest.raises(KeyError, match="facedub, dublab"):
        registry.adapter_class("heygen")


@pytest.mark.parametrize(
    ("name", "unit", "at_once", "serially"),
    [("facedub", "credits", 1, True), ("dublab", "seconds", 2, False)],
)
def test_registry_adapter_policies_match_the_providers(name: str, unit: str, at_once: int, serially: bool) -> None:
    cls: Any = registry.adapter_class(name)
    assert registry.budget_unit(name) == unit
    assert (cls.budget_unit, cls.submissions_at_once, cls.reconcile_serially) == (unit, at_once, serially)


def test_job_spec_facedub_by_role_takes_photo_then_video() -> None:
    spec = FaceDub.job_spec("tok1", [VIDEO, PHOTO], {"duration": 7})
    assert spec == JobSpec("tok1", (PHOTO.path, VIDEO.path), {"duration": 7})


def test_job_spec_facedub_batch_takes_the_pair_its_params_name() -> None:
    bob_photo = InputRef("photo", "bob.png", Path("/in/bob.png"))
    bob_video = InputRef("video", "bob.mp4", Path("/in/bob.mp4"))
    params = {"photo": "bob.png", "video": "bob.mp4", "duration": 12}
    spec = FaceDub.job_spec("tok2", [PHOTO, VIDEO, bob_photo, bob_video], params)
    assert spec == JobSpec("tok2", (bob_photo.path, bob_video.path), {"duration": 12})


def test_job_spec_dublab_takes_the_media_and_every_param() -> None:
    spec = DubLab.job_spec("tok3", [MEDIA], DUB_PARAMS)
    assert spec == JobSpec("tok3", (MEDIA.path,), DUB_PARAMS)


@pytest.mark.parametrize(
    ("name", "params", "cost"),
    [
        ("facedub", {"duration": 7}, 2),
        ("facedub", {"duration": "10"}, 2),
        ("facedub", {"duration": 30}, 6),
        ("dublab", {"seconds": 3.2}, 4),
        ("dublab", {"seconds": 3.2, "studio_quality": True}, 8),
        ("dublab", {"seconds": 60.0, "studio_quality": False}, 60),
    ],
)
def test_estimate_params_by_name_gives_the_providers_cost(name: str, params: dict[str, object], cost: int) -> None:
    assert registry.estimate_params(name, params) == cost


@pytest.mark.parametrize(
    ("name", "params", "text"),
    [
        ("facedub", {"duration": 7}, "duration 7 s, ~2 credits"),
        ("dublab", {"seconds": 3.04, "studio_quality": True}, "3.0 s, ~8 seconds of credit"),
    ],
)
def test_describe_job_by_name_states_params_and_cost(name: str, params: dict[str, object], text: str) -> None:
    assert registry.describe_job(name, params) == text


# -- build_provider against canned answers -------------------------------------------------------------


def canned(requests: list[httpx.Request]) -> httpx.MockTransport:
    answers: dict[str, object] = {
        "/usage": {
            "plan": "agency",
            "credits_used": 30,
            "credits_limit": 150,
            "bonus_credits": 10,
            "credits_remaining": 130,
        },
        "/api/v1/me": {"id": "u1", "seconds": 3597, "subscriptionStatus": "active", "subscriptionPlan": "hobby"},
        "/api/langs": [{"code": "de", "name": "German"}, {"code": "fr", "name": "French"}],
    }

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        body = answers.get(request.url.path)
        return httpx.Response(200, json=body) if body is not None else httpx.Response(404, json={"error": "Not found"})

    return httpx.MockTransport(handle)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "remaining", "description", "auth"),
    [
        ("facedub", 130, "plan agency, 130 of 160 credits left", ("authorization", f"Bearer {KEY.get_secret_value()}")),
        ("dublab", 3597, "plan hobby, active, 3597 seconds of credit left", ("apikey", KEY.get_secret_value())),
    ],
)
async def test_build_provider_with_mock_transport_account_parses_the_answer(
    name: str, remaining: int, description: str, auth: tuple[str, str]
) -> None:
    requests: list[httpx.Request] = []
    statuses: list[int] = []
    provider = registry.build_provider(name, block(name), KEY, transport=canned(requests), on_answer=statuses.append)
    try:
        account = await provider.account()
    finally:
        await provider.aclose()
    assert provider.name == name
    assert (account.provider, account.remaining, account.description) == (name, remaining, description)
    assert [str(r.url.copy_with(path="/")) for r in requests] == [f"{FD_URL if name == 'facedub' else DL_URL}/"]
    assert requests[0].headers[auth[0]] == auth[1]
    assert statuses == [200]


@pytest.mark.anyio
async def test_build_provider_facedub_takes_its_slots_from_the_settings_block() -> None:
    provider = registry.build_provider(
        "facedub", FaceDubProvider(base_url=FD_URL, max_concurrent_jobs=1), KEY, transport=canned([])
    )
    try:
        assert isinstance(provider, FaceDub)
        assert (provider.max_concurrent_jobs, provider.slot_poll) == (1, 1.0)
    finally:
        await provider.aclose()


def test_build_provider_facedub_with_another_providers_block_raises_type_error() -> None:
    with pytest.raises(TypeError, match=r"providers\.facedub"):
        registry.build_provider("facedub", DubLabProvider(base_url=DL_URL), KEY)


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "codes"), [("facedub", None), ("dublab", frozenset({"de", "fr"}))])
async def test_languages_per_provider_live_list_or_none(name: str, codes: frozenset[str] | None) -> None:
    requests: list[httpx.Request] = []
    provider = registry.build_provider(name, block(name), KEY, transport=canned(requests))
    try:
        assert await provider.languages() == codes
    finally:
        await provider.aclose()
    assert len(requests) == (0 if codes is None else 1)  # FaceDub's jobs take no language: nothing asked


@pytest.mark.parametrize("name", registry.names())
def test_api_key_every_registered_provider_found_in_its_env_variable(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"UGCWATCHD_{name.upper()}_API_KEY", f"{name}_from_env")
    key = api_key(name, None, Settings.from_env(), env={})
    assert key.value is not None and key.value.get_secret_value() == f"{name}_from_env"
    assert key.origin == f"UGCWATCHD_{name.upper()}_API_KEY"


def test_api_key_provider_without_settings_field_read_from_env_variable() -> None:
    env = {"UGCWATCHD_THIRD_API_KEY": "k3"}
    key = api_key("third", None, Settings.from_env(), env=env)
    assert (key.value, key.origin) == (SecretStr("k3"), "UGCWATCHD_THIRD_API_KEY")
    assert not api_key("third", None, Settings.from_env(), env={}).present
