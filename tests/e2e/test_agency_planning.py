"""An agency's clients under one pattern: options from folders, each client's results in its own folders,
and ``plan`` showing what each client's drops would become. The real daemon and CLI, the sandbox."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx

from tests.support import wait_for
from ugcwatchd.languages import BUILT_IN
from ugcwatchd.ledger import Ledger

from .conftest import SandboxProcess
from .test_cli_ops import cli
from .test_cli_run import DaemonProcess, sidecar

CLIENTS = ("acme", "globex")


def agency(root: Path, dublab_url: str = "https://dublab.app", faces: bool = False) -> Path:
    """Two clients' folders under one pattern per rule, results filed per client."""
    for client in CLIENTS:
        (root / client / "dub" / "inbox").mkdir(parents=True)
        (root / "results" / client / "dub").mkdir(parents=True)
        if faces:
            (root / client / "faces" / "inbox").mkdir(parents=True)
            (root / "results" / client / "faces").mkdir(parents=True)
    face_rule = (
        f"  - {{name: faces, inbox: '{root}/{{client}}/faces/inbox', outbox: '{root}/results/{{client}}/faces',"
        " facedub: {}}\n"
        if faces
        else ""
    )
    rules = root / "rules.yaml"
    rules.write_text(
        f'providers:\n  dublab: {{base_url: "{dublab_url}", poll_every: 1s}}\n'
        "defaults: {stable_after: 0.5s, rescan_every: 2s}\n"
        "rules:\n"
        f"  - name: dub\n    inbox: '{root}/{{client}}/dub/inbox'\n    outbox: '{root}/results/{{client}}/dub'\n"
        "    dublab: {to: [de, es], studio_quality: [de], options_from_folders: true}\n" + face_rule
    )
    return rules


def drop(root: Path, client: str, rel: str, source: Path) -> None:
    target = root / client / "dub" / "inbox" / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)


def names_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_agency_option_folders_deliver_into_each_clients_own_outbox(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    rules = agency(tmp_path, sb.urls["dublab"])
    acme, globex = tmp_path / "results" / "acme" / "dub", tmp_path / "results" / "globex" / "dub"
    daemon = DaemonProcess(rules, tmp_path / "state")
    try:
        drop(tmp_path, "acme", "de+es@studio/clip.mp4", media["video.mp4"])
        drop(tmp_path, "globex", "xx/clip.mp4", media["long.mp4"])
        results = [
            wait_for(lambda: sidecar(acme / "de+es@studio" / "clip.de.result.json"), 30, what="the de dub"),
            wait_for(lambda: sidecar(acme / "de+es@studio" / "clip.es.result.json"), 30, what="the es dub"),
        ]
        error = wait_for(lambda: sidecar(globex / "xx" / "clip.dublab.error.json"), 20, what="the refusal")
        wait_for(lambda: not list((tmp_path / "acme").rglob("*.mp4")), 20, what="acme's input moved away")
        wait_for(lambda: not list((tmp_path / "globex").rglob("*.mp4")), 20, what="globex's input moved away")
        listed = cli(tmp_path, rules, "jobs", "--json")
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]

    # Two dubs in studio quality, billed twice the measured seconds: the folder said @studio.
    dubs = httpx.get(f"{sb.urls['dublab']}/api/v1/dubs", headers={"apikey": "dl_sandbox"}, timeout=10).json()
    assert sorted((d["destLang"], d["isStudioQuality"]) for d in dubs) == [("de", True), ("es", True)]
    for result in results:
        billed = result["billed_seconds"]
        assert isinstance(billed, float | int) and result["credits_charged"] == 2 * -(-billed // 1)
    # globex's xx folder: no dub, an error that names the closest language.
    assert (error["code"], error["stage"]) == ("bad_folder_options", "options")
    assert error["message"] == "folder 'xx': 'xx' is not a supported language (did you mean 'xh'?)"
    assert error["job"] == "xx/clip.dublab" and not error.get("credits_charged")  # it cost nothing

    # Nothing of one client lands in the other's folders, nor names them.
    mine = {client: names_under(tmp_path / "results" / client) for client in CLIENTS}
    assert any(n.endswith("de+es@studio/clip.mp4") for n in mine["acme"]), mine["acme"]  # archived in acme's
    assert any(n.endswith("xx/clip.mp4") for n in mine["globex"]), mine["globex"]  # moved into globex's failed
    assert not any("clip.de" in n or "clip.es" in n for n in mine["globex"])
    assert not any("xx" in n.split("/") for n in mine["acme"])
    for client, other in (("acme", "globex"), ("globex", "acme")):
        for path in (tmp_path / "results" / client).rglob("*.json"):
            assert other not in path.read_text(), path

    items = json.loads(listed.stdout)  # a list of items, each with its parts, inputs and jobs
    assert all(set(i) >= {"id", "rule", "state", "parts", "inputs", "jobs"} for i in items)
    assert {(j["name"], i["parts"]["client"]) for i in items for j in i["jobs"]} == {
        ("de+es@studio/clip.de", "acme"),
        ("de+es@studio/clip.es", "acme"),
        ("xx/clip.dublab", "globex"),
    }
    # The daemon read DubLab's language list at start and cached it for the next start and for `check`.
    ledger = Ledger.open(tmp_path / "state")
    cached = ledger.cached_languages("dublab")
    ledger.close()
    assert cached is not None and cached[0] == BUILT_IN


def _client_block(lines: list[str], client: str) -> list[str]:
    """The lines of one client's inboxes, up to and including its total."""
    end = lines.index(next(line for line in lines if line.startswith(f"total for client={client}:")))
    start = end
    while start > 0 and not lines[start - 1].startswith("total for "):
        start -= 1
    return lines[start : end + 1]


def _credits(lines: list[str], unit: str) -> int:
    return sum(int(n) for line in lines for n in re.findall(rf"~(\d+) {unit}", line) if "<-" in line)


def test_agency_plan_shows_jobs_options_and_estimates_per_client(tmp_path: Path, media: dict[str, Path]) -> None:
    rules = agency(tmp_path, faces=True)
    drop(tmp_path, "acme", "pitch.mp4", media["video.mp4"])
    drop(tmp_path, "acme", "de+es@studio/clip.mp4", media["long.mp4"])
    shutil.copy(media["jpeg"], tmp_path / "acme" / "faces" / "inbox" / "alice.jpg")
    shutil.copy(media["video.mp4"], tmp_path / "acme" / "faces" / "inbox" / "alice.mp4")
    drop(tmp_path, "globex", "fr/talk.mov", media["speech.mov"])
    drop(tmp_path, "globex", "xx/clip.mp4", media["long.mp4"])
    (tmp_path / "globex" / "dub" / "inbox" / "it@fast").mkdir()  # an empty folder: its name is still judged
    before = names_under(tmp_path)

    done = cli(tmp_path, rules, "plan")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    acme, globex = _client_block(lines, "acme"), _client_block(lines, "globex")

    assert f"rule dub: {tmp_path}/acme/dub/inbox  (client=acme)" in acme
    assert f"rule faces: {tmp_path}/acme/faces/inbox  (client=acme)" in acme  # the client's rules together
    assert "  options: de, es (studio: de)" in acme
    assert "  options de+es@studio/: de, es (studio)" in acme
    assert "  pitch.de <- pitch.mp4: 3.0 s, ~8 seconds of credit" in acme  # studio_quality: [de]
    assert "  pitch.es <- pitch.mp4: 3.0 s, ~4 seconds of credit" in acme
    assert "  de+es@studio/clip.de <- de+es@studio/clip.mp4: 7.0 s, ~16 seconds of credit" in acme
    assert "  de+es@studio/clip.es <- de+es@studio/clip.mp4: 7.0 s, ~16 seconds of credit" in acme
    assert "  alice.facedub <- alice.jpg + alice.mp4: duration 3 s, ~1 credits" in acme
    assert acme[-1] == "total for client=acme: facedub ~1 credits, dublab ~44 seconds"

    assert f"rule dub: {tmp_path}/globex/dub/inbox  (client=globex)" in globex
    assert "  options fr/: fr" in globex
    assert any(
        line.startswith("  options it@fast/: refused: folder 'it@fast': '@fast' is not an option") for line in globex
    )
    refusal = "folder 'xx': 'xx' is not a supported language (did you mean 'xh'?)"
    assert f"  options xx/: refused: {refusal}" in globex
    assert f"  xx/clip.dublab <- xx/clip.mp4: refused (bad_folder_options): {refusal}" in globex
    talk = [line for line in globex if line.startswith("  fr/talk.fr <- fr/talk.mov: ")]
    assert len(talk) == 1 and not any("talk.de" in line or "talk.es" in line for line in globex)
    seconds = _credits(globex, "seconds")
    assert globex[-1] == f"total for client=globex: facedub ~0 credits, dublab ~{seconds} seconds"
    assert lines[-1] == f"estimated: facedub ~1 credits, dublab ~{44 + seconds} seconds"
    assert names_under(tmp_path) == before  # a dry run: no state, no outbox files, nothing moved
