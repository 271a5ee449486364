"""More attacks on several daemons sharing one PostgreSQL ledger: a daily budget two daemons spend
together, a kill -9 between a result sidecar and the inputs' move, the operator's commands run while
daemons work the ledger, and two daemons whose rules files differ.

Each daemon is the real ``ugcwatchd run`` (its own state folder and rules file) against the real sandbox
and a throwaway PostgreSQL; each command is the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import wait_for

from .conftest import SandboxProcess
from .test_several_hosts_attacks import (
    LEASE_TTL,
    Host,
    dublab_stats,
    folders,
    happens_within,
    hosts,  # noqa: F401  (the fixture)
    place,
    rows,
    rules_text,
)

DUBLAB_AUTH = {"apikey": "dl_sandbox"}
CLIP_ESTIMATE = 4  # media["video.mp4"] lasts a little over 3 s: DubLab's estimate is its length rounded up
UNSETTLED = ("queued", "submitting", "submitted", "remote_done")


def dublab_rules(sb: SandboxProcess, ledger: str, inboxes: dict[str, tuple[Path, Path, str]], dublab: str = "") -> str:
    """:func:`rules_text`, with ``dublab`` added to DubLab's provider block."""
    text = rules_text(facedub=sb.urls["facedub"], dublab=sb.urls["dublab"], ledger=ledger, inboxes=inboxes)
    block = f'dublab: {{base_url: "{sb.urls["dublab"]}", poll_every: 1s'
    return text.replace(block, block + dublab)


def dublab_account(sb: SandboxProcess, **fields: object) -> None:
    httpx.post(f"{sb.urls['dublab']}/sandbox/account", headers=DUBLAB_AUTH, json=fields, timeout=5).raise_for_status()


def owner_pids(url: str, query: str = "SELECT DISTINCT owner FROM items") -> set[int]:
    return {int(owner.split(":")[1]) for (owner,) in rows(url, query) if owner}


def kill_9(host: Host) -> None:
    host.signal(signal.SIGKILL)
    assert host.daemon is not None
    host.daemon.proc.wait(10)


def sidecars(outbox: Path, stem: str) -> list[str]:
    return sorted(p.name for p in outbox.glob(f"{stem}.*.json") if not p.name.endswith(".status.json"))


def no_tracebacks(daemons: list[Host]) -> None:
    assert not [h.name for h in daemons if "Traceback" in h.log()], "a daemon logged a traceback"


# -- 1. one daily budget, two daemons spending it -------------------------------------------------------


def test_dublab_daily_budget_spent_by_two_daemons_is_never_exceeded(
    tmp_path: Path,
    sandbox_process: type[SandboxProcess],
    media: dict[str, Path],
    pg_url: str,
    hosts: list[Host],  # noqa: F811
) -> None:
    """DubLab's daily budget is 20 s of credit: five dubs of 4 s estimated. Two daemons, each with six clips
    of its own dropped at once (48 s asked for); paid requests answered late, so submissions overlap. Together they
    send at most five; the rest is held for the budget."""
    budget = 5 * CLIP_ESTIMATE
    sb = sandbox_process("--port", "0", "--job-seconds", "1", "--answer-delay", "0.5")
    share = folders(tmp_path / "share", "inbox_a", "outbox_a", "inbox_b", "outbox_b")
    for name in ("a", "b"):
        inboxes = {f"dub_{name}": (share[f"inbox_{name}"], share[f"outbox_{name}"], "dublab: {to: [de]}")}
        text = dublab_rules(sb, pg_url, inboxes, dublab=f", daily_seconds_budget: {budget}")
        hosts.append(Host(tmp_path, name, text).start())
    for n in range(6):
        for name in ("a", "b"):
            place(media["video.mp4"], share[f"inbox_{name}"], f"{name}{n}.mp4")

    def settled() -> bool:
        counts = dict(rows(pg_url, "SELECT state, count(*) FROM jobs GROUP BY state"))
        return sum(counts.values()) == 12 and not any(counts.get(s) for s in UNSETTLED)

    wait_for(settled, timeout=40, interval=0.3, what="every job sent and delivered, or held")
    # Held jobs are looked at again every tick: a few seconds more is many chances to overspend.
    overspent = happens_within(lambda: dublab_stats(sb)["files_started"] > 5, seconds=3)
    sent = rows(pg_url, "SELECT COALESCE(SUM(estimate), 0), count(*) FROM jobs WHERE sent_at IS NOT NULL")
    held = rows(pg_url, "SELECT detail FROM jobs WHERE state = 'held'")
    senders = owner_pids(
        pg_url, "SELECT DISTINCT i.owner FROM items i JOIN jobs j ON j.item_id = i.id WHERE j.sent_at IS NOT NULL"
    )
    print("sent (estimate, jobs):", sent, "held:", len(held), "dublab:", dublab_stats(sb), "senders:", senders)
    assert not overspent and dublab_stats(sb)["files_started"] <= 5
    assert int(sent[0][0]) <= budget, f"{sent[0][0]} s of estimates sent against a budget of {budget} s"
    assert int(sent[0][0]) == budget and len(held) == 12 - 5  # the budget is used, not wasted
    assert all(json.loads(detail)["held"] == "budget" for (detail,) in held), held
    assert senders == {h.pid for h in hosts}, "one daemon alone spent the budget: the attack proves little"
    no_tracebacks(hosts)


# -- 2. kill -9 between a result sidecar and the inputs' move -------------------------------------------


@pytest.mark.slow
def test_dublab_owner_killed_after_a_result_sidecar_is_finished_once_by_the_taker(
    tmp_path: Path,
    sandbox_process: type[SandboxProcess],
    media: dict[str, Path],
    pg_url: str,
    hosts: list[Host],  # noqa: F811
) -> None:
    """One clip into two languages. The moment the first result sidecar appears, its owner is killed -9
    (its inputs still in the inbox, the other job maybe still running). The other daemon takes the item
    over once the lease has run out: one result per job, no error, the clip archived once, two dubs paid."""
    sb = sandbox_process("--port", "0", "--job-seconds", "1.5")
    share = folders(tmp_path / "share", "inbox", "outbox")
    fired = tmp_path / "notified"  # one line per notification: a sidecar delivered twice is told twice
    notify = f"notify: {{command: [sh, -c, 'echo \"$0\" >> {fired}', '{{sidecar}}']}}"
    inboxes = {"dub": (share["inbox"], share["outbox"], f"{notify}, dublab: {{to: [de, es]}}")}
    text = dublab_rules(sb, pg_url, inboxes)
    for name in ("a", "b"):
        hosts.append(Host(tmp_path, name, text).start())
    place(media["video.mp4"], share["inbox"], "clip.mp4")
    (pid,) = wait_for(lambda: owner_pids(pg_url), timeout=20, what="the item's owner")
    owner = next(h for h in hosts if h.pid == pid)
    first = wait_for(lambda: list(share["outbox"].glob("*.result.json")), timeout=30, interval=0.002, what="a result")
    kill_9(owner)
    inbox_at_kill = [p.name for p in share["inbox"].iterdir() if not p.name.startswith(".")]
    jobs_at_kill = rows(pg_url, "SELECT name, state FROM jobs ORDER BY name")
    written = {p.name: p.read_bytes() for p in share["outbox"].glob("*.result.json")}
    print("killed", owner.name, "after", [p.name for p in first], "inbox:", inbox_at_kill, "jobs:", jobs_at_kill)
    taker = next(h for h in hosts if h is not owner)
    archived = share["outbox"] / "originals" / "clip.mp4"
    wait_for(
        lambda: rows(pg_url, "SELECT 1 FROM items WHERE state = 'delivered'"),
        timeout=LEASE_TTL + 15,
        interval=0.3,
        what="the taker to finish the item",
    )
    wait_for(archived.exists, timeout=5, what="the clip archived")
    took = rows(pg_url, "SELECT detail FROM events WHERE kind = 'item taken over'")
    assert "clip.mp4" in inbox_at_kill, "the kill came after the inputs moved: the window was missed"
    assert len(took) == 1 and f":{taker.pid}:" in took[0][0], took
    assert sidecars(share["outbox"], "clip") == ["clip.de.result.json", "clip.es.result.json"]
    assert [p.name for p in share["inbox"].iterdir() if not p.name.startswith(".")] == []
    assert sorted(p.name for p in share["outbox"].rglob("clip*.mp4") if p.parent.name != "outbox") == ["clip.mp4"]
    assert not (share["outbox"] / "failed").exists()
    rewritten = [name for name, data in written.items() if (share["outbox"] / name).read_bytes() != data]
    told = fired.read_text().splitlines() if fired.exists() else []
    print("result sidecars rewritten by the taker:", rewritten, "notifications:", [Path(t).name for t in told])
    ledger = rows(
        pg_url, "SELECT count(*), count(DISTINCT remote_id), count(*) FILTER (WHERE state = 'delivered') FROM jobs"
    )
    assert ledger == [(2, 2, 2)], ledger
    assert dublab_stats(sb)["files_started"] == 2, dublab_stats(sb)
    no_tracebacks([taker])


# -- 3. the operator's commands against a ledger two daemons work ---------------------------------------


def cli(root: Path, rules: Path, ledger: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, its ledger named by ``UGCWATCHD_LEDGER`` (its rules file names none), a state of its own."""
    env = {
        **os.environ,
        "UGCWATCHD_STATE_DIR": str(root / "cli-state"),
        "UGCWATCHD_LEDGER": ledger,
        "UGCWATCHD_FACEDUB_API_KEY": "fdb_sandbox",
        "UGCWATCHD_DUBLAB_API_KEY": "dl_sandbox",
    }
    return subprocess.run(
        [sys.executable, "-m", "ugcwatchd", "-c", str(rules), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def item_of(url: str, rule: str) -> int:
    (found,) = rows(url, "SELECT id FROM items WHERE rule = %s", (rule,))
    return int(found[0])


def test_cli_commands_on_a_shared_ledger_while_two_daemons_run_do_each_act_once(
    tmp_path: Path,
    sandbox_process: type[SandboxProcess],
    media: dict[str, Path],
    pg_url: str,
    hosts: list[Host],  # noqa: F811
) -> None:
    """Two daemons run; one clip fails remotely, one waits for approval. status, jobs --json, statement,
    retry and approve run against the shared ledger meanwhile: no crash, sensible answers, and the retried
    and the approved job are each sent once, by one daemon."""
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    share = folders(tmp_path / "share", "inbox", "outbox", "gated", "gated_out")
    inboxes = {
        "dub": (share["inbox"], share["outbox"], "dublab: {to: [fr]}"),
        "gated": (share["gated"], share["gated_out"], "approve_above: 0, dublab: {to: [fr]}"),
    }
    text = dublab_rules(sb, pg_url, inboxes)
    for name in ("a", "b"):
        hosts.append(Host(tmp_path, name, text).start())
    cli_rules = tmp_path / "cli.yaml"
    cli_rules.write_text("\n".join(line for line in text.splitlines() if not line.startswith("ledger:")) + "\n")
    dublab_account(sb, fail_jobs=True)
    place(media["video.mp4"], share["inbox"], "talk.mp4")
    wait_for((share["outbox"] / "failed" / "talk.mp4").exists, timeout=20, interval=0.2, what="the failure")
    dublab_account(sb, fail_jobs=False)
    place(media["video.mp4"], share["gated"], "pitch.mp4")
    wait_for(lambda: rows(pg_url, "SELECT 1 FROM jobs WHERE state = 'held'"), timeout=20, what="the quote")
    failed, gated = item_of(pg_url, "dub"), item_of(pg_url, "gated")

    status = cli(tmp_path, cli_rules, pg_url, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["items"] == {"failed": 1, "planned": 1} and report["jobs"] == {"failed": 1, "held": 1}, report
    listed = cli(tmp_path, cli_rules, pg_url, "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "talk.fr" in listed.stdout and "pitch.fr" in listed.stdout
    json.loads(listed.stdout)
    statement = cli(tmp_path, cli_rules, pg_url, "statement", "--format", "json")
    assert statement.returncode == 0, statement.stderr
    json.loads(statement.stdout)

    retried = cli(tmp_path, cli_rules, pg_url, "retry", str(failed))
    assert retried.returncode == 0 and "talk.fr queued again" in retried.stdout, (retried.stdout, retried.stderr)
    approved = cli(tmp_path, cli_rules, pg_url, "approve", str(gated))
    assert approved.returncode == 0, (approved.stdout, approved.stderr)
    again = cli(tmp_path, cli_rules, pg_url, "approve", str(gated))
    assert again.returncode == 2 and "Traceback" not in again.stderr, (again.stdout, again.stderr)
    results = [share["outbox"] / "talk.fr.result.json", share["gated_out"] / "pitch.fr.result.json"]
    wait_for(lambda: all(r.exists() for r in results), timeout=25, interval=0.3, what="both results")
    wait_for(lambda: (share["outbox"] / "originals" / "talk.mp4").exists(), timeout=10, what="the archive")
    # Every daemon ticks twice a second: a few seconds more is many chances to send either one again.
    resent = happens_within(lambda: dublab_stats(sb)["files_started"] > 3, seconds=3)
    print("dublab:", dublab_stats(sb), "owners:", rows(pg_url, "SELECT id, rule, state, owner FROM items"))
    assert not resent and dublab_stats(sb)["files_started"] == 3  # the failure, the retry, the approved one
    assert sidecars(share["outbox"], "talk") == ["talk.fr.result.json"]
    assert not (share["outbox"] / "failed" / "talk.mp4").exists()
    assert rows(pg_url, "SELECT state, count(*) FROM jobs GROUP BY state") == [("delivered", 2)]
    status = cli(tmp_path, cli_rules, pg_url, "status")
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    no_tracebacks(hosts)


# -- 4. two daemons whose rules files differ -------------------------------------------------------------


@pytest.mark.slow
def test_rules_differing_between_daemons_item_of_a_rule_the_taker_lacks_finishes_with_its_own_settings(
    tmp_path: Path,
    sandbox_process: type[SandboxProcess],
    media: dict[str, Path],
    pg_url: str,
    hosts: list[Host],  # noqa: F811
) -> None:
    """A has a rule B lacks (its own inbox, archive folder and languages). A is killed -9 with that rule's
    items under way; B takes them over and finishes them as the rule said, though B never read that rule.
    Nothing of A's inbox is taken twice, and B never watches it."""
    sb = sandbox_process("--port", "0", "--job-seconds", "2")
    share = folders(tmp_path / "share", "inbox", "outbox", "extra", "extra_out")
    common = {"dub": (share["inbox"], share["outbox"], "dublab: {to: [de]}")}
    extra = {"extra": (share["extra"], share["extra_out"], "archive_dir: '{outbox}/kept', dublab: {to: [es, it]}")}
    a = Host(tmp_path, "a", dublab_rules(sb, pg_url, {**common, **extra})).start()
    b = Host(tmp_path, "b", dublab_rules(sb, pg_url, common)).start()
    hosts.extend((a, b))
    for n in range(2):
        place(media["video.mp4"], share["extra"], f"x{n}.mp4")
        place(media["video.mp4"], share["inbox"], f"c{n}.mp4")
    under_way = (
        "SELECT count(*) FROM jobs j JOIN items i ON i.id = j.item_id WHERE i.rule = 'extra' AND j.state = 'submitted'"
    )
    wait_for(lambda: rows(pg_url, under_way)[0][0] >= 2, timeout=20, interval=0.1, what="A's extra dubs under way")
    kill_9(a)
    killed = time.monotonic()
    results = [share["extra_out"] / f"x{n}.{lang}.result.json" for n in range(2) for lang in ("es", "it")]
    results += [share["outbox"] / f"c{n}.de.result.json" for n in range(2)]
    wait_for(lambda: all(r.exists() for r in results), timeout=LEASE_TTL + 20, interval=0.3, what="every result")
    kept = [share["extra_out"] / "kept" / f"x{n}.mp4" for n in range(2)]
    wait_for(lambda: all(k.exists() for k in kept), timeout=10, interval=0.3, what="the extra clips archived")
    print(f"finished {time.monotonic() - killed:.1f} s after the kill; B's log:", b.log()[-2500:])
    assert not (share["extra_out"] / "originals").exists(), "B archived by its own defaults, not the item's rule"
    assert [p.name for p in share["extra"].iterdir() if not p.name.startswith(".")] == []
    for n in range(2):
        assert sidecars(share["extra_out"], f"x{n}") == [f"x{n}.es.result.json", f"x{n}.it.result.json"]
    counted = rows(pg_url, "SELECT path, count(*) FROM inputs GROUP BY path HAVING count(*) > 1")
    assert counted == [], counted
    extra_owners = owner_pids(pg_url, "SELECT owner FROM items WHERE rule = 'extra'")
    assert extra_owners == {b.pid}, extra_owners  # taken over, not left behind
    ledger = rows(pg_url, "SELECT count(*), count(DISTINCT remote_id) FROM jobs WHERE state = 'delivered'")
    assert ledger == [(6, 6)] and dublab_stats(sb)["files_started"] == 6, (ledger, dublab_stats(sb))
    # A file dropped now into the inbox only A watched waits for A: B, without the rule, takes nothing.
    place(media["video.mp4"], share["extra"], "late.mp4")
    assert not happens_within(
        lambda: bool(rows(pg_url, "SELECT 1 FROM inputs WHERE path LIKE '%%late.mp4'")), seconds=3
    )
    no_tracebacks([b])
