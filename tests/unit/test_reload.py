"""What a reload may change about a provider, and when it must refuse."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from ugcwatchd.lifecycle import ProviderState
from ugcwatchd.providers.registry import build_provider
from ugcwatchd.reload import ReloadRefused, provider_changes
from ugcwatchd.rules import Config, load_rules
from ugcwatchd.settings import Settings


def _config(tmp_path: Path, facedub: str) -> Config:
    (tmp_path / "in").mkdir(exist_ok=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"providers:\n  facedub: {{base_url: 'https://fd.example', {facedub}}}\n"
        f"rules:\n  - {{name: faces, inbox: {tmp_path}/in, outbox: {tmp_path}/out, facedub: {{}}}}\n"
    )
    return load_rules(rules, {})


def _running(config: Config, key: str) -> dict[str, ProviderState]:
    block = config.providers.settings("facedub")
    return {"facedub": ProviderState("facedub", build_provider("facedub", block, SecretStr(key)), block)}


def test_reload_budget_change_applies_in_place(tmp_path: Path) -> None:
    before = _config(tmp_path, "api_key: fdb_a")
    after = _config(tmp_path, "api_key: fdb_a, daily_credit_budget: 1, poll_every: 3s")
    changes = provider_changes(_running(before, "fdb_a"), {"facedub": "fdb_a"}, after, Settings())
    assert set(changes.settings) == {"facedub"} and not changes.rebuilt and changes.polls == {"facedub"}


def test_reload_new_key_with_an_unresolved_submission_is_refused(tmp_path: Path) -> None:
    before = _config(tmp_path, "api_key: fdb_a")
    after = _config(tmp_path, "api_key: fdb_b")
    with pytest.raises(ReloadRefused, match="under way"):
        provider_changes(_running(before, "fdb_a"), {"facedub": "fdb_a"}, after, Settings(), in_flight=lambda n: [7])


def test_reload_new_key_of_a_paused_provider_is_let_through_to_reconcile_with_it(tmp_path: Path) -> None:
    before = _config(tmp_path, "api_key: fdb_a")
    after = _config(tmp_path, "api_key: fdb_b")
    running = _running(before, "fdb_a")
    running["facedub"].paused = "facedub rejected the API key (401)"
    changes = provider_changes(running, {"facedub": "fdb_a"}, after, Settings(), in_flight=lambda n: [7])
    assert set(changes.rebuilt) == {"facedub"}


def test_reload_other_address_of_a_paused_provider_with_work_under_way_is_refused(tmp_path: Path) -> None:
    running = _running(_config(tmp_path, "api_key: fdb_a"), "fdb_a")
    running["facedub"].paused = "refused"
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules.read_text().replace("https://fd.example", "https://elsewhere.example"))
    moved = load_rules(rules, {})
    with pytest.raises(ReloadRefused, match="under way"):
        provider_changes(running, {"facedub": "fdb_a"}, moved, Settings(), in_flight=lambda n: [7])
