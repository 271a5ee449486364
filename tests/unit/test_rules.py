"""The rules file: defaults, every kind of mistake with its line, resolution to folders."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ugcwatchd.errors import ConfigError, ConfigProblems
from ugcwatchd.rules import Config, DubLabAction, FaceDubAction, load_rules, parse_duration

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_rules(write(tmp_path, text), env or {})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigProblems) as caught:
        load(tmp_path, text, env)
    path = str(tmp_path / "rules.yaml")
    return [str(p).replace(path, "rules.yaml") for p in caught.value.problems]


def two_rules(first: str, second: str) -> str:
    """A rules file of two one-line rules, each given as the inside of a flow mapping."""
    return f"rules:\n  - {{{first}}}\n  - {{{second}}}\n"


def test_rules_minimal_two_rules_take_every_default(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"""\
        rules:
          - inbox: {tmp_path}/faces/inbox
            facedub: {{}}
          - inbox: {tmp_path}/dub/inbox
            dublab: {{to: [de]}}
        """,
    )
    faces, dub = config.rules
    assert faces.name == "faces-inbox" and dub.name == "dub-inbox"
    assert isinstance(faces.action, FaceDubAction) and faces.provider == "facedub"
    assert faces.action.pair_by == "stem" and faces.action.duration == "auto" and faces.action.pair_timeout == 600
    assert (
        faces.behaviour.stable_after == 5
        and faces.behaviour.watch_mode == "auto"
        and faces.behaviour.rescan_every == 60
    )
    assert faces.behaviour.on_success == "archive" and faces.behaviour.on_failure == "move"
    assert ".*" in faces.behaviour.ignore and "@eaDir" in faces.behaviour.ignore
    assert isinstance(dub.action, DubLabAction) and dub.action.from_ == "auto" and dub.action.studio_quality is False
    assert "*.mp3" in dub.match and "*.jpg" not in dub.match and "*.jpg" in faces.match
    assert config.providers.facedub.base_url == "https://api.facedub.io"
    assert config.providers.facedub.max_concurrent_jobs == 2 and config.providers.facedub.allow_overage is False
    assert config.providers.dublab.poll_every == 15
    inbox = faces.inboxes()[0]
    assert inbox.outbox == tmp_path / "faces" / "outbox"
    assert inbox.archive_dir == tmp_path / "faces" / "outbox" / "originals"
    assert inbox.failed_dir == tmp_path / "faces" / "outbox" / "failed"


def test_rules_example_file_is_valid() -> None:
    config = load_rules(ROOT / "rules.example.yaml", {})
    assert [r.name for r in config.rules] == ["faces", "dub"]
    assert config.rules[1].behaviour.stable_after == 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules: [\n  {inbox: a\n", "rules.yaml:3:1: not valid YAML"),
        (
            "rules:\n  - inbox: /x\n    facedub: {}\n    stable_afer: 5s\n",
            "rules.yaml:4:5: rules[0].stable_afer: unknown key (did you mean 'stable_after'?)",
        ),
        (
            "rules:\n  - inbox: /x\n    facedub: {}\n    stable_after: soon\n",
            "rules.yaml:4:19: rules[0].stable_after: 'soon' is not a duration",
        ),
        (
            "rules:\n  - inbox: /x\n    facedub: {}\n    dublab: {to: [de]}\n",
            "rules.yaml:2:5: rules[0]: a rule has exactly one action block",
        ),
        ("rules:\n  - inbox: /x\n", "rules.yaml:2:5: rules[0]: a rule needs an action block"),
        (
            "rules:\n  - inbox: /x\n    dublab:\n      to: [de, xx]\n",
            "rules.yaml:4:16: rules[0].dublab.to[1]: 'xx' is not a supported language",
        ),
        (
            "rules:\n  - inbox: /x\n    dublab:\n      to: [Spanish]\n",
            "rules.yaml:4:12: rules[0].dublab.to[0]: 'Spanish' is not a supported language (did you mean 'es'?)",
        ),
        ("rules:\n  - inbox: /x\n    dublab: {to: [auto]}\n", "rules[0].dublab.to[0]: 'auto' is not a dub target"),
        (
            "rules:\n  - inbox: /x\n    dublab: {to: [de], from: de}\n",
            "rules.yaml:3:13: rules[0].dublab: to includes the source language 'de'",
        ),
        ("rules:\n  - inbox: /x\n    dublab: {to: [de, de]}\n", "rules[0].dublab: to lists de more than once"),
        (
            "providers:\n  facedub:\n    api_key: ${NOT_SET}\nrules:\n  - {inbox: /x, facedub: {}}\n",
            "rules.yaml:3:14: providers.facedub.api_key: environment variable NOT_SET is not set",
        ),
        (
            "rules:\n  - inbox: /x\n    facedub: {duration: 31}\n",
            "rules[0].facedub.duration: 31 is not 'auto' or a whole number of seconds from 1 to 30",
        ),
        (
            "rules:\n  - inbox: /x\n    facedub: {done_marker: READY}\n",
            "rules[0].facedub: done_marker applies only with pair_by: folder",
        ),
        (
            "rules:\n  - inbox: /x\n    facedub: {pair_by: pairs}\n",
            "rules[0].facedub.pair_by: 'pairs' is not one of 'stem' or 'folder'",
        ),
        (
            "rules:\n  - inbox: /x\n    facedub: {}\n    on_success: shred\n",
            "rules[0].on_success: 'shred' is not one of 'archive', 'delete' or 'keep'",
        ),
        (
            "rules:\n  - inbox: /x\n    facedub: {}\n    recursive: maybe\n",
            "rules[0].recursive: expected true or false, got 'maybe'",
        ),
        (
            "rules:\n  - inbox: /x\n    facedub: {}\n    outbox: '{nope}/out'\n",
            "rules[0].outbox: unknown template {nope}",
        ),
        (
            "providers:\n  facedub: {base_url: 'http://api.facedub.io'}\nrules:\n  - {inbox: /x, facedub: {}}\n",
            "providers.facedub.base_url: 'http://api.facedub.io' is not an https URL",
        ),
        (
            "providers:\n  facedub: {max_concurrent_jobs: 3}\nrules:\n  - {inbox: /x, facedub: {}}\n",
            "providers.facedub.max_concurrent_jobs: must be at most 2, got 3",
        ),
        ("metrics_listen: 9464\nrules:\n  - {inbox: /x, facedub: {}}\n", "metrics_listen: expected text, got 9464"),
        ("rules: []\n", "rules.yaml:1:8: rules: must not be empty"),
        ("rules:\n  - inbox: /x\n    facedub: {}\n    inbox: /y\n", "rules.yaml:4:5: rules[0].inbox: duplicate key"),
        ("- just\n- a list\n", "the rules file must be a mapping"),
        (
            "rules:\n  - {name: a, inbox: /x, facedub: {}}\n  - {name: a, inbox: /y, facedub: {}}\n",
            "rules.yaml:3:12: rules[1].name: another rule is already named 'a'",
        ),
        ("rulez:\n  - {inbox: /x, facedub: {}}\n", "rules.yaml:1:1: rulez: unknown key (did you mean 'rules'?)"),
    ],
)
def test_rules_each_mistake_names_its_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found


def test_rules_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        defaults:
          stable_after: never
          watch_mode: inotify
        rules:
          - inbox: /x
            dublab: {to: [xx], quality: high}
          - inbox: /y
        """,
    )
    assert len(found) == 5
    assert [p.split(":")[1] for p in found] == ["2", "3", "6", "6", "7"]


def test_rules_environment_variables_expand(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "providers:\n  dublab: {api_key: '${DL_KEY}'}\nrules:\n  - {inbox: '${BASE}/in', dublab: {to: [fr]}}\n",
        {"DL_KEY": "dl_secret_value", "BASE": str(tmp_path)},
    )
    key = config.providers.dublab.api_key
    assert key is not None and key.get_secret_value() == "dl_secret_value"
    assert "dl_secret_value" not in repr(config.providers) and "dl_secret_value" not in str(config.providers)
    assert config.rules[0].pattern == str(tmp_path / "in")


def test_rules_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_rules(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5s", 5), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("250ms", 0.25), (90, 90), ("90", 90), (1.5, 1.5),
    ],
)  # fmt: skip
def test_rules_durations_parse(text: object, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["5 minutes", "", "-5", "5x", True, None, "m"])
def test_rules_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_rules_override_defaults_per_rule_and_inherit_the_rest(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"""\
        defaults: {{stable_after: 10s, on_success: keep, recursive: true}}
        rules:
          - {{inbox: {tmp_path}/a, facedub: {{}}, stable_after: 1m}}
          - {{inbox: {tmp_path}/b, facedub: {{}}}}
        """,
    )
    a, b = config.rules
    assert (a.behaviour.stable_after, a.behaviour.on_success, a.behaviour.recursive) == (60, "keep", True)
    assert (b.behaviour.stable_after, b.behaviour.on_success) == (10, "keep")
    assert a.key_path("stable_after") == ("rules", 0, "stable_after")
    assert a.key_path("on_success") == ("defaults", "on_success")


def test_rules_templates_and_relative_paths_resolve_per_inbox(tmp_path: Path) -> None:
    (tmp_path / "clients" / "acme" / "in").mkdir(parents=True)
    (tmp_path / "clients" / "zeta" / "in").mkdir(parents=True)
    config = load(
        tmp_path,
        """\
        rules:
          - inbox: clients/*/in
            outbox: "{inbox}/../results"
            archive_dir: "{outbox}/done-{name}"
            failed_dir: failed
            facedub: {}
        """,
    )
    acme, zeta = config.rules[0].inboxes()
    assert acme.path == tmp_path / "clients" / "acme" / "in"
    assert acme.outbox == tmp_path / "clients" / "acme" / "results"
    assert acme.archive_dir == tmp_path / "clients" / "acme" / "results" / "done-in"
    assert acme.failed_dir == tmp_path / "clients" / "acme" / "in" / "failed"
    assert zeta.outbox == tmp_path / "clients" / "zeta" / "results"


def test_rules_glob_picks_up_new_folders(tmp_path: Path) -> None:
    (tmp_path / "a" / "inbox").mkdir(parents=True)
    config = load(tmp_path, f"rules:\n  - {{inbox: '{tmp_path}/*/inbox', facedub: {{}}}}\n")
    assert [i.path.parent.name for i in config.rules[0].inboxes()] == ["a"]
    (tmp_path / "b" / "inbox").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "inbox").write_text("a file, not a folder")
    assert [i.path.parent.name for i in config.rules[0].inboxes()] == ["a", "b"]


def test_rules_two_rules_on_one_folder_are_refused(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        f"rules:\n  - {{inbox: {tmp_path}/in, facedub: {{}}}}\n  - {{inbox: {tmp_path}/in/, dublab: {{to: [de]}}}}\n",
    )
    assert found == [f"rules.yaml:3:13: rules[1].inbox: {tmp_path}/in is already watched by rule '{tmp_path.name}-in'"]


@pytest.mark.parametrize("outer", ["{recursive: true, dublab: {to: [de]}}", "{facedub: {pair_by: folder}}"])
def test_rules_inbox_inside_one_that_takes_subfolders_is_refused(tmp_path: Path, outer: str) -> None:
    text = f"rules:\n  - {{inbox: {tmp_path}/in, {outer[1:-1]}}}\n  - {{inbox: {tmp_path}/in/sub, facedub: {{}}}}\n"
    found = problems(tmp_path, text)
    assert len(found) == 1 and "rules[1].inbox" in found[0] and "already takes with its subfolders" in found[0]


def test_rules_nested_inbox_without_subfolders_is_allowed(tmp_path: Path) -> None:
    config = load(
        tmp_path, two_rules(f"inbox: {tmp_path}/in, facedub: {{}}", f"inbox: {tmp_path}/in/sub, dublab: {{to: [de]}}")
    )
    assert len(config.rules) == 2


def test_rules_inbox_that_is_another_rules_outbox_is_refused(tmp_path: Path) -> None:
    text = two_rules(f"inbox: {tmp_path}/a/in, facedub: {{}}", f"inbox: {tmp_path}/a/outbox, dublab: {{to: [de]}}")
    found = problems(tmp_path, text)
    assert found == [
        f"rules.yaml:3:13: rules[1].inbox: {tmp_path}/a/outbox is the outbox of rule 'a-in'; "
        "the daemon never takes its own output as input"
    ]
