"""Every rules example in the README loads as written: a reader who pastes one gets no surprise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ugcwatchd.rules import load_rules

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = [b for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S) if b.lstrip().startswith("rules:")]


def test_readme_rules_examples_are_found() -> None:
    assert len(BLOCKS) >= 2  # the short configuration and the agency example


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{n}" for n in range(len(BLOCKS))])
def test_readme_rules_example_loads_without_a_problem(block: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(block)
    config = load_rules(rules)
    assert config.rules and all(rule.name for rule in config.rules)
