"""What a drop becomes: option folders, per-language studio quality, duplicates per client, parts shown.

Real folders, real media, a real ledger; each inbox's ingestion is ticked as the daemon's scheduler would.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import until
from ugcwatchd import languages, ops
from ugcwatchd.errors import ConfigProblems
from ugcwatchd.inbox.ingest import InboxIngest
from ugcwatchd.ledger import Item, Job, Ledger
from ugcwatchd.providers.registry import estimate_params
from ugcwatchd.rules import Config, Inbox, load_rules
from ugcwatchd.states import JobState

from .test_ingest import deliver, ingesting

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def built_in_languages() -> Iterator[None]:
    languages.use(None)
    yield
    languages.use(None)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger.open(tmp_path / "state")
    yield ledger
    ledger.close()


def load(tmp_path: Path, rule: str) -> Config:
    path = tmp_path / "rules.yaml"
    path.write_text(f"defaults: {{stable_after: 0.4s, rescan_every: 1s}}\nrules:\n  - {rule}\n")
    return load_rules(path, {})


async def take(inbox: Inbox, ledger: Ledger) -> None:
    """Ingest what the inbox holds now, every file taken as complete (as ``plan`` does)."""
    ingest = InboxIngest(inbox, ledger, poll=True)
    ingest.stability.stable_after = 0.0
    await ingest.tick()


def jobs_by_name(ledger: Ledger) -> dict[str, tuple[Item, Job]]:
    return {job.name: (item, job) for item, job in ledger.all_jobs()}


def options_world(tmp_path: Path, media: dict[str, Path]) -> Path:
    inbox = tmp_path / "in"
    for folder in ("de+es@studio", "fr", "fr/deeper", "xx", ".hidden", "out-of-mind"):
        (inbox / folder).mkdir(parents=True)
    (tmp_path / "out").mkdir()
    shutil.copy(media["video.mp4"], inbox / "root.mp4")
    shutil.copy(media["long.mp4"], inbox / "de+es@studio" / "clip.mp4")
    shutil.copy(media["speech.mov"], inbox / "fr" / "talk.mov")
    shutil.copy(media["voice.mp3"], inbox / "xx" / "bad.mp3")
    shutil.copy(media["video.mp4"], inbox / "fr" / "deeper" / "skip.mp4")  # two levels down: not recursive
    shutil.copy(media["video.mp4"], inbox / ".hidden" / "skip.mp4")
    shutil.copy(media["notes.mp4"], inbox / "fr" / "notes.mp4")  # not media: refused for the folder's language
    return inbox


async def test_ingest_option_folders_set_languages_studio_and_job_names(
    tmp_path: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    options_world(tmp_path, media)
    config = load(
        tmp_path,
        f"{{name: dub, inbox: {tmp_path}/in, outbox: {tmp_path}/out,"
        " dublab: {to: [de, es], studio_quality: [de], options_from_folders: true}}",
    )
    (inbox,) = config.inboxes()
    await take(inbox, ledger)
    jobs = jobs_by_name(ledger)
    assert sorted(jobs) == [
        "de+es@studio/clip.de",
        "de+es@studio/clip.es",
        "fr/notes.fr",
        "fr/talk.fr",
        "root.de",
        "root.es",
        "xx/bad.dublab",
    ]
    studio = {name: job.params.get("studio_quality") for name, (_, job) in jobs.items() if job.state == "queued"}
    assert studio == {
        "root.de": True,  # studio_quality: [de]: only de
        "root.es": False,
        "de+es@studio/clip.de": True,  # @studio: all of the folder's languages
        "de+es@studio/clip.es": True,
        "fr/talk.fr": False,  # the folder overrides the rule's studio_quality too
    }
    assert {name: job.params["to"] for name, (_, job) in jobs.items() if job.state == "queued"} == {
        "root.de": "de",
        "root.es": "es",
        "de+es@studio/clip.de": "de",
        "de+es@studio/clip.es": "es",
        "fr/talk.fr": "fr",
    }
    clip = jobs["de+es@studio/clip.de"][1].params
    assert estimate_params("dublab", clip) == 2 * estimate_params("dublab", {**clip, "studio_quality": False}) == 16
    item, bad = jobs["xx/bad.dublab"]
    assert bad.state == "failed" and item.reason == "bad_folder_options"
    assert bad.failure is not None and (bad.failure.stage, bad.failure.code) == ("options", "bad_folder_options")
    assert bad.failure.message == "folder 'xx': 'xx' is not a supported language (did you mean 'xh'?)"
    assert jobs["fr/notes.fr"][1].failure is not None and jobs["fr/notes.fr"][1].failure.code == "invalid"
    assert all(i.outbox == str(tmp_path / "out") for i, _ in jobs.values())


async def test_ingest_option_folder_made_while_running_is_watched(
    tmp_path: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    for folder in ("in", "out"):
        (tmp_path / folder).mkdir()
    config = load(
        tmp_path, f"{{inbox: {tmp_path}/in, outbox: {tmp_path}/out, dublab: {{to: [de], options_from_folders: true}}}}"
    )
    async with ingesting(config, ledger):
        (tmp_path / "in" / "it@studio").mkdir()
        shutil.copy(media["video.mp4"], tmp_path / "in" / "it@studio" / "clip.mp4")
        await until(lambda: jobs_by_name(ledger).get("it@studio/clip.it"), what="the option folder's job")
    (_, job) = jobs_by_name(ledger)["it@studio/clip.it"]
    assert (job.params["to"], job.params["studio_quality"]) == ("it", True)


async def test_ingest_without_options_from_folders_subfolders_are_not_taken(
    tmp_path: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    options_world(tmp_path, media)
    config = load(tmp_path, f"{{inbox: {tmp_path}/in, outbox: {tmp_path}/out, dublab: {{to: [de]}}}}")
    await take(config.inboxes()[0], ledger)
    assert sorted(jobs_by_name(ledger)) == ["root.de"]


def test_load_rules_inbox_inside_an_options_inbox_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"rules:\n  - {{name: a, inbox: {tmp_path}/in, outbox: {tmp_path}/out,"
        " dublab: {to: [de], options_from_folders: true}}\n"
        f"  - {{inbox: {tmp_path}/in/fr, outbox: {tmp_path}/out2, dublab: {{to: [fr]}}}}\n"
    )
    with pytest.raises(ConfigProblems, match="which rule 'a' already takes with its subfolders"):
        load_rules(path, {})


def clients_world(tmp_path: Path, duplicates: str) -> dict[str, Inbox]:
    for client in ("acme", "globex"):
        (tmp_path / client / "dub" / "inbox").mkdir(parents=True)
        (tmp_path / "results" / client / "dub").mkdir(parents=True)
    config = load(
        tmp_path,
        f"{{name: dub, inbox: '{tmp_path}/{{client}}/dub/inbox', outbox: '{tmp_path}/results/{{client}}/dub',"
        f" duplicates: {duplicates}, dublab: {{to: [de]}}}}",
    )
    return {inbox.parts["client"]: inbox for inbox in config.inboxes()}


async def drop_and_take(inbox: Inbox, ledger: Ledger, source: Path, name: str) -> tuple[Item, Job]:
    shutil.copy(source, inbox.path / name)
    await take(inbox, ledger)
    return next((i, j) for i, j in ledger.all_jobs() if Path(i.inbox) == inbox.path and j.name.startswith(name[:-4]))


async def test_duplicates_per_inbox_another_clients_drop_is_new_work(
    tmp_path: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    inboxes = clients_world(tmp_path, "per_inbox")
    first, first_job = await drop_and_take(inboxes["acme"], ledger, media["video.mp4"], "clip.mp4")
    deliver(ledger, first)
    _, theirs = await drop_and_take(inboxes["globex"], ledger, media["video.mp4"], "clip.mp4")
    assert theirs.state == "queued" and theirs.failure is None  # globex pays for its own dub
    assert theirs.dedupe_key == first_job.dedupe_key  # the key itself never names the inbox
    _, again = await drop_and_take(inboxes["acme"], ledger, media["video.mp4"], "again.mp4")
    assert again.state == "failed" and again.failure is not None and again.failure.code == "duplicate"
    assert again.failure.earlier is not None
    assert again.failure.earlier.sidecar == str(tmp_path / "results" / "acme" / "dub" / "clip.de.result.json")


async def test_duplicates_per_rule_never_name_another_clients_folders(
    tmp_path: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    inboxes = clients_world(tmp_path, "per_rule")
    first, _ = await drop_and_take(inboxes["acme"], ledger, media["video.mp4"], "clip.mp4")
    deliver(ledger, first)
    _, theirs = await drop_and_take(inboxes["globex"], ledger, media["video.mp4"], "clip.mp4")
    assert theirs.state == "failed" and theirs.failure is not None and theirs.failure.code == "duplicate"
    assert theirs.failure.message == (
        "this content was already processed under rule 'dub' for another of its inboxes (remote id r-clip.de)"
    )
    assert theirs.failure.earlier is None and "acme" not in theirs.failure.message
    _, again = await drop_and_take(inboxes["acme"], ledger, media["video.mp4"], "again.mp4")
    assert again.failure is not None and again.failure.earlier is not None  # its own inbox: the path is given
    assert "results/acme/dub/clip.de.result.json" in again.failure.message


async def test_ops_jobs_and_status_show_the_named_parts(
    tmp_path: Path, ledger: Ledger, media: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inboxes = clients_world(tmp_path, "per_inbox")
    await drop_and_take(inboxes["acme"], ledger, media["video.mp4"], "clip.mp4")
    await drop_and_take(inboxes["globex"], ledger, media["long.mp4"], "talk.mp4")
    items = ops.jobs(ledger, None)
    assert {(j["name"], i["parts"]["client"]) for i in items for j in i["jobs"]} == {
        ("clip.de", "acme"),
        ("talk.de", "globex"),
    }
    assert [i["inputs"][0]["name"] for i in items] == ["clip.mp4", "talk.mp4"]
    ops.print_jobs(items)
    printed = capsys.readouterr().out
    assert "client=acme dub/clip.de" in printed and "client=globex dub/talk.de" in printed
    (job,) = [j for _, j in ledger.all_jobs() if j.name == "talk.de"]
    ledger.move_job(job.id, JobState.SUBMITTING)
    report = ops.status(ledger)
    assert [(r["job"], r["parts"]) for r in report["running"]] == [("talk.de", {"client": "globex"})]
    ops.print_status(report)
    assert "client=globex dub/talk.de [dublab submitting]" in capsys.readouterr().out
