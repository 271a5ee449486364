"""The console's pages as HTML: overview, spend, items and one item; every value escaped (:mod:`.render`)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlencode

from ..ledger import Item, Job
from ..ledger.console import Event
from ..names import shown
from ..states import HoldReason, ItemState, JobState
from .chart import bar_chart, legend, number
from .eta import words
from .render import Viewer, act_hint, action, e, name, page, progress_cell, when
from .sidecars import Unshown
from .views import ItemsPage, ItemView, Overview, ProviderRow, Spend, client_label, retryable

LIVE_EVERY_MS = 2000
SPEND_EVERY_MS = 60000


def _counts(title: str, counts: dict[str, int]) -> str:
    shown_counts = "".join(f"<span><b>{n}</b> {e(state)}</span>" for state, n in sorted(counts.items()) if n)
    return f'<div class="counts"><span class="muted">{e(title)}</span>{shown_counts or "<span>none</span>"}</div>'


def _item_link(item: Item) -> str:
    return f'<a href="/items/{item.id}">#{item.id}</a>'


def _who(item: Item) -> str:
    client = f' <span class="muted">{name(client_label(item.parts))}</span>' if item.parts else ""
    return f"{e(item.rule)}{client}"


def _provider_card(row: ProviderRow, now: float) -> str:
    v = row.view
    status = f'<span class="bad">paused: {e(v.paused)}</span>' if v.paused else '<span class="ok">working</span>'
    left = "unknown" if v.remaining is None else f"{v.remaining} {e(v.unit)} left"
    extra = []
    if v.allows_overage:
        extra.append("overage allowed")
    if v.daily_budget is not None:
        extra.append(f"daily budget {v.daily_budget} {e(v.unit)}")
    if v.slots is not None:
        extra.append(f"{v.slots} job slots")
    jobs = row.jobs
    under_way = sum(jobs.get(s, 0) for s in (JobState.SUBMITTING, JobState.SUBMITTED, JobState.REMOTE_DONE))
    waiting = jobs.get(JobState.HELD, 0) + jobs.get(JobState.AMBIGUOUS, 0)
    queue = under_way + jobs.get(JobState.QUEUED, 0)
    if not queue:
        done = "nothing under way"
    elif v.paused:
        done = "nothing goes until its key is accepted again"
    elif row.forecast.done_in is None:
        done = "done: unknown until a job of it has finished"
    elif row.forecast.done_in < 1:
        done = "done any moment now"
    else:
        done = f"done in {words(row.forecast.done_in)} (at {when(now + row.forecast.done_in, now)})"
    observed = f"typical job {words(row.times.run)}" if row.times else "no finished job seen yet"
    return (
        f'<div class="card" data-provider="{e(v.name)}"><h3>{e(v.name)}</h3><div>{status} - {left}</div>'
        f'<div class="muted">{e(", ".join(extra))}</div>'
        f"<div>{under_way} running, {jobs.get(JobState.QUEUED, 0)} queued, {waiting} held</div>"
        f'<div class="eta">{e(done)}</div><div class="muted">{e(observed)}</div></div>'
    )


def overview_live(o: Overview, viewer: Viewer) -> str:
    out = [_counts("items", o.items), _counts("jobs", o.jobs)]
    out.append('<h2>Providers</h2><div class="cards">')
    out += [_provider_card(row, o.at) for row in o.providers]
    out.append("</div>")
    out.append(f"<h2>Running ({o.running_total})</h2>")
    if o.running:
        out.append(
            '<div class="scroll"><table id="running"><tr><th>item</th><th>job</th><th class="wide">rule</th>'
            "<th>stage</th><th>progress</th><th>done in</th></tr>"
        )
        for r in o.running:
            stage = r.job.detail.remote.stage if r.job.detail.remote and r.job.detail.remote.stage else r.job.stage
            out.append(
                f'<tr data-job="{r.job.id}"><td>{_item_link(r.item)}</td><td class="nm">{name(r.job.name)}'
                f' <span class="muted">{e(r.job.provider)}</span></td><td class="wide">{_who(r.item)}</td>'
                f'<td class="stage">{e(r.job.state)}{" / " + e(stage) if stage else ""}</td>'
                f'<td class="progress">{progress_cell(r.progress, r.estimated)}</td>'
                f'<td class="eta">{e(words(r.eta))}</td></tr>'
            )
        out.append("</table></div>")
    else:
        out.append('<p class="muted">Nothing is running.</p>')
    out.append(f"<h2>Held ({o.held_total})</h2>")
    if o.held:
        out.append('<div class="scroll"><table id="held"><tr><th>item</th><th>jobs</th><th>why</th><th></th></tr>')
        for g in o.held:
            buttons = ""
            if g.reason == HoldReason.APPROVAL:
                buttons = action(viewer, f"/items/{g.item.id}/approve", "Approve", back="/", css="go") + action(
                    viewer, f"/items/{g.item.id}/reject", "Reject", back="/", css="stop"
                )
            elif g.reason is None:
                buttons = f'<a href="/items/{g.item.id}">resolve</a>'
            jobs = ", ".join(name(j.name) for j in g.jobs[:5]) + (
                f" and {len(g.jobs) - 5} more" if len(g.jobs) > 5 else ""
            )
            out.append(
                f'<tr data-item="{g.item.id}"><td>{_item_link(g.item)}</td>'
                f'<td class="nm">{jobs}<div class="muted">{_who(g.item)}</div></td>'
                f"<td>{e(g.words)}</td><td>{buttons}</td></tr>"
            )
        out.append("</table></div>")
        shown_jobs = sum(len(g.jobs) for g in o.held)
        if o.held_total > shown_jobs:
            out.append(f'<p class="muted">and {o.held_total - shown_jobs} more held jobs</p>')
    else:
        out.append('<p class="muted">Nothing is held.</p>')
    out.append("<h2>Recent failures</h2>")
    if o.failures:
        out.append('<div class="scroll"><table id="failures"><tr><th>item</th><th>job</th><th>why</th><th></th></tr>')
        for item, job in o.failures:
            f = job.failure
            why = f"{f.code}: {f.message}" if f else "failed"
            again = ""
            if item.state == ItemState.FAILED and retryable(job):
                again = action(viewer, f"/items/{item.id}/retry", "Retry", back="/")
            out.append(
                f'<tr><td>{_item_link(item)}</td><td class="nm">{name(job.name)}'
                f'<div class="muted">{_who(item)}</div></td>'
                f"<td>{e(why)}</td><td>{again}</td></tr>"
            )
        out.append("</table></div>")
    else:
        out.append('<p class="muted">No failures.</p>')
    return "".join(out)


def spend_live(spends: Sequence[Spend]) -> str:
    out = ["<h2>Spend, last 30 days</h2>"]
    charged = [s for s in spends if s.total]
    if not charged:
        return out[0] + '<p class="muted">Nothing was charged in the last 30 days.</p>'
    for s in charged:
        out.append(f"<h3>{e(s.provider)}: {number(s.total)} {e(s.unit)}</h3>")
        out.append(bar_chart(s.days, s.series, s.unit, f"{s.provider} spend per day, by client"))
        out.append(legend(s.series, s.unit))
    return "".join(out)


def overview_page(o: Overview, spends: Sequence[Spend], viewer: Viewer) -> str:
    body = (
        f"<h1>Overview</h1>{act_hint(viewer)}"
        f'<section id="live" data-live="/live/overview" data-every="{LIVE_EVERY_MS}">'
        f"{overview_live(o, viewer)}</section>"
        f'<section id="spend" data-live="/live/spend" data-every="{SPEND_EVERY_MS}">{spend_live(spends)}</section>'
    )
    return page("Overview", body, viewer)


# -- items ------------------------------------------------------------------------------------------


def _job_summary(jobs: Sequence[Job]) -> str:
    counts = Counter(str(j.state) for j in jobs)
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no jobs"


def items_page(p: ItemsPage, rules: Sequence[str], viewer: Viewer) -> str:
    f = p.filters
    states = "".join(f'<option value="{e(s)}"{" selected" if s == f.state else ""}>{e(s)}</option>' for s in ItemState)
    options = "".join(f'<option value="{e(r)}">' for r in rules)
    form = (
        '<form class="search" method="get" action="/items">'
        f'<label>file name<input type="search" name="name" value="{e(f.name)}" placeholder="part of a name"></label>'
        f'<label>client<input name="client" value="{e(f.client)}" placeholder="acme"></label>'
        f'<label>rule<input name="rule" list="rules" value="{e(f.rule)}"></label>'
        f'<datalist id="rules">{options}</datalist>'
        f'<label>state<select name="state"><option value="">any</option>{states}</select></label>'
        "<button>Search</button></form>"
    )
    rows = []
    for r in p.rows:
        inputs = ", ".join(name(i.name) for i in r.inputs[:3]) + (" ..." if len(r.inputs) > 3 else "")
        rows.append(
            f'<tr data-item="{r.item.id}"><td>{_item_link(r.item)}</td><td class="nm">{inputs}</td>'
            f"<td>{_who(r.item)}</td>"
            f'<td>{e(r.item.state)}</td><td class="wide">{e(_job_summary(r.jobs))}</td></tr>'
        )
    table = (
        '<div class="scroll"><table id="items"><tr><th>item</th><th>inputs</th><th>rule</th><th>state</th>'
        f'<th class="wide">jobs</th></tr>{"".join(rows)}</table></div>'
        if rows
        else '<p class="muted">No item matches on this page.</p>'
    )
    pager = ""
    if p.page.older is not None:
        query = {k: v for k, v in (("name", f.name), ("client", f.client), ("rule", f.rule), ("state", f.state)) if v}
        link = f"/items?{urlencode({**query, 'before': p.page.older})}"
        pager = f'<p class="pager"><a href="{e(link)}">Older items</a></p>'
    return page("Items", f"<h1>Items</h1>{form}{table}{pager}", viewer, path="/items")


# -- one item ---------------------------------------------------------------------------------------

_EVENT_KEYS = ("by", "stage", "remote_id", "held", "code", "message", "reason", "output", "parked", "done", "job")


def _event_words(event: Event) -> str:
    """The parts of an event's detail an operator reads: who, the stage, the remote id and state, why."""
    top = event.detail or {}
    nested = top.get("detail")
    merged = {**top, **(nested if isinstance(nested, dict) else {})}
    picked = {k: merged[k] for k in _EVENT_KEYS if merged.get(k) not in (None, "")}
    remote = merged.get("remote")
    if isinstance(remote, dict):
        for key, label in (("state", "remote"), ("stage", "remote stage"), ("credits_charged", "charged")):
            if remote.get(key) not in (None, ""):
                picked[label] = remote[key]
        if isinstance(remote.get("progress"), int | float):
            picked["progress"] = f"{remote['progress']:.0f}%"
    return ", ".join(f"{k} {shown(str(v))}" for k, v in picked.items())[:300]


def timeline(events: Sequence[Event], jobs: dict[int, str], now: float) -> str:
    grouped: list[tuple[Event, int]] = []
    for ev in events:
        if grouped and ev.kind == "job noted" and (grouped[-1][0].job_id, grouped[-1][0].kind) == (ev.job_id, ev.kind):
            grouped[-1] = (grouped[-1][0], grouped[-1][1] + 1)  # a note per poll: counted, not listed
            continue
        grouped.append((ev, 1))
    out = []
    for ev, count in grouped:
        job = name(jobs.get(ev.job_id, "")) if ev.job_id else ""
        times = f" (x{count})" if count > 1 else ""
        out.append(
            f"<tr><td>{e(when(ev.at, now))}</td><td class='nm'>{job}</td><td>{e(ev.kind)}{times}</td>"
            f'<td class="muted">{e(_event_words(ev))}</td></tr>'
        )
    return (
        '<div class="scroll"><table id="timeline"><tr><th>when</th><th>job</th><th>what</th><th>details</th></tr>'
        f"{''.join(out)}</table></div>"
    )


def item_live(v: ItemView, now: float) -> str:
    rows = []
    for j in v.jobs:
        remote = j.detail.remote
        why = f"{j.failure.code}: {j.failure.message}" if j.failure else (str(j.held) if j.held else "")
        progress = remote.progress if remote and remote.progress is not None else None
        paid = v.charged.get(j.id)
        rows.append(
            f'<tr data-job="{j.id}"><td class="nm">{name(j.name)}</td><td>{e(j.state)}</td>'
            f"<td>{e(remote.stage if remote and remote.stage else j.stage or '')}</td>"
            f"<td>{progress_cell(progress, False)}</td><td>{e(j.remote_id or '-')}</td>"
            f"<td>{'-' if paid is None else number(paid)}</td><td>{e(why)}</td></tr>"
        )
    jobs = (
        '<h2>Jobs</h2><div class="scroll"><table id="jobs"><tr><th>job</th><th>state</th><th>stage</th>'
        f"<th>progress</th><th>remote id</th><th>charged</th><th>why</th></tr>{''.join(rows)}</table></div>"
    )
    return f"{jobs}<h2>Timeline</h2>{timeline(v.events, {j.id: j.name for j in v.jobs}, now)}"


def _resolve_forms(v: ItemView, viewer: Viewer, back: str) -> str:
    out = []
    for job in v.jobs:
        candidates = v.candidates.get(job.id)
        if candidates is None:
            continue
        out.append(f"<h2>Resolve {name(job.name)}</h2>")
        out.append(
            "<p>The submission's outcome is unknown and several remote jobs match it. Adopt the one that is ours, "
            "or, once you have checked with the provider that none was created for it, send it again.</p>"
        )
        if not viewer.may_act:
            continue
        for c in candidates:
            if c.owner is not None:
                out.append(f'<p>{e(c.remote_id)} <span class="muted">belongs to job {c.owner}</span></p>')
                continue
            field = f'<input type="hidden" name="remote_id" value="{e(c.remote_id)}">'
            out.append(
                f"<p>{e(c.remote_id)} "
                + action(viewer, f"/jobs/{job.id}/adopt", "Adopt", back=back, extra=field)
                + "</p>"
            )
        confirm = (
            '<label><input type="checkbox" name="confirm" value="yes" required> I checked with '
            f"{e(job.provider)}: no job was created for it</label> "
        )
        out.append(action(viewer, f"/jobs/{job.id}/resubmit", "Resubmit", back=back, css="stop", extra=confirm))
    return "".join(out)


def _sidecars(v: ItemView) -> str:
    out = ["<h2>Sidecars</h2>"]
    for job in v.jobs:
        kinds = v.sidecars.get(job.id)
        if kinds is None:
            out.append(f'<p>{name(job.name)}: <span class="muted">the outbox could not be read now</span></p>')
            continue
        present = [(k, text) for k, text in kinds.items() if text is not None]
        if not present:
            out.append(f'<p>{name(job.name)}: <span class="muted">no sidecar in the outbox</span></p>')
        for kind, text in present:
            if isinstance(text, Unshown):
                out.append(f'<p>{name(job.name)}.{e(kind)}.json: <span class="bad">{e(text.why)}</span></p>')
                continue
            assert text is not None
            with contextlib.suppress(ValueError, RecursionError):  # else shown as it is: being replaced, or not ours
                text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
            out.append(f"<details><summary>{name(job.name)}.{e(kind)}.json</summary><pre>{e(text)}</pre></details>")
    return "".join(out)


def item_page(v: ItemView, viewer: Viewer, now: float) -> str:
    item, back = v.item, f"/items/{v.item.id}"
    facts = [f"rule {e(item.rule)} ({e(item.provider)})"]
    if item.parts:
        facts.append(", ".join(f"{name(k)} {name(val)}" for k, val in sorted(item.parts.items())))
    if item.reason:
        facts.append(f"reason {e(item.reason)}")
    buttons = ""
    if v.retryable:
        buttons += action(viewer, f"{back}/retry", "Retry", back=back, css="go")
    if v.awaiting_approval:
        buttons += action(viewer, f"{back}/approve", "Approve", back=back, css="go")
        buttons += action(viewer, f"{back}/reject", "Reject", back=back, css="stop")
    hint = act_hint(viewer) if v.retryable or v.awaiting_approval or v.candidates else ""
    inputs = "".join(
        f'<tr><td class="nm">{name(i.name)}</td><td>{e(i.role)}</td>'
        f"<td>{i.bytes}</td><td>{e(i.mime or '-')}</td>"
        f"<td>{'-' if i.seconds is None else f'{i.seconds:.1f} s'}</td>"
        f'<td class="wide"><code>{e(i.sha256[:16])}</code></td>'
        f'<td class="wide nm">{name(i.parked) if i.parked else "-"}</td></tr>'
        for i in v.inputs
    )
    body = (
        f'<h1>Item {item.id} <span class="muted">{e(item.state)}</span></h1><p>{"; ".join(facts)}</p>'
        f'<p class="muted">inbox {name(item.inbox)}<br>outbox {name(item.outbox)}</p>'
        f"<p>{buttons}</p>{hint}{_resolve_forms(v, viewer, back)}"
        f'<section id="live" data-live="/live{back}" data-every="{LIVE_EVERY_MS * 2}">{item_live(v, now)}</section>'
        '<h2>Inputs</h2><div class="scroll"><table id="inputs"><tr><th>name</th><th>role</th><th>bytes</th>'
        '<th>type</th><th>length</th><th class="wide">sha256</th><th class="wide">now at</th></tr>'
        f"{inputs}</table></div>"
        f"{_sidecars(v)}"
    )
    return page(f"Item {item.id}", body, viewer, path=back)
