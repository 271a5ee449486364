"""``ugcwatchd statement``: what was paid in a month, one line per paid job and totals, from the ledger.

Every paid remote job is one line (a job delivered, or one that failed after the provider charged for it):
its local date, the named parts of its inbox (the client), rule, job, provider, remote id, credits charged,
billed seconds, overage and final state. Totals are per group (client, rule or provider) and per provider,
each in its provider's own unit: FaceDub credits and DubLab seconds of credit are never added together.

CSV: a header row, then one row per paid job (``kind`` = ``line``), then the group totals (``kind`` =
``total``, the group in its own column) and the provider totals (``kind`` = ``provider total``); filter on
``kind`` = ``line`` to get the jobs alone. JSON: ``{"month", "by", "lines", "totals": {"groups",
"providers"}}``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import ExitCode
from .names import shown

if TYPE_CHECKING:
    from .ledger.charges import Charge

BY = ("client", "rule", "provider")
FORMATS = ("csv", "json")
COLUMNS = (
    "kind",
    "date",
    "client",
    "rule",
    "job",
    "provider",
    "remote_id",
    "credits_charged",
    "unit",
    "billed_seconds",
    "overage",
    "state",
)
_MONTH = re.compile(r"(\d{4})-(\d{2})")


def parse_month(text: str) -> tuple[int, int]:
    """``YYYY-MM`` as (year, month); anything else is a command-line mistake."""
    found = _MONTH.fullmatch(text.strip())
    if found is None or not 1 <= int(found[2]) <= 12:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month: write YYYY-MM, e.g. 2026-11")
    return int(found[1]), int(found[2])


def month_range(year: int, month: int) -> tuple[float, float]:
    """The month's first and the next month's first, at local midnight, as wall-clock seconds."""
    start = datetime(year, month, 1)
    end = datetime(year + month // 12, month % 12 + 1, 1)
    return start.timestamp(), end.timestamp()


def parts_label(parts: dict[str, str]) -> str:
    """``client=acme`` (several parts joined by commas), or ``""`` for an inbox without named parts."""
    return ",".join(f"{k}={v}" for k, v in sorted(_shown(parts).items()))


def _shown(parts: dict[str, str]) -> dict[str, str]:
    """Folder names as sidecars show them: bytes that are not UTF-8 as ``\\xNN``, so the output is UTF-8."""
    return {shown(k): shown(v) for k, v in parts.items()}


def _unit(provider: str) -> str:
    from .providers.registry import budget_unit

    try:
        return budget_unit(provider)
    except KeyError:  # a provider this version no longer knows, in an old ledger
        return "credits"


def _number(value: float | None) -> float | int | None:
    """A whole amount as an int (``2``, not ``2.0``); fractions and null as they are."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


@dataclass
class _Total:
    jobs: int = 0
    credits: float = 0.0
    billed: float | None = None

    def add(self, charge: Charge) -> None:
        self.jobs += 1
        self.credits += charge.credits
        if charge.billed_seconds is not None:
            self.billed = (self.billed or 0.0) + charge.billed_seconds


def _group_of(charge: Charge, by: str) -> str:
    if by == "client":
        return parts_label(charge.parts)
    return charge.rule if by == "rule" else charge.provider


def _line(charge: Charge) -> dict[str, Any]:
    return {
        "date": datetime.fromtimestamp(charge.at).date().isoformat(),
        "parts": dict(sorted(_shown(charge.parts).items())),
        "rule": charge.rule,
        "job": shown(charge.job),
        "provider": charge.provider,
        "remote_id": charge.remote_id,
        "credits_charged": _number(charge.credits),
        "unit": _unit(charge.provider),
        "billed_seconds": _number(charge.billed_seconds),
        "overage": charge.overage,
        "state": str(charge.state),
    }


def _total(total: _Total, provider: str) -> dict[str, Any]:
    return {
        "provider": provider,
        "unit": _unit(provider),
        "jobs": total.jobs,
        "credits_charged": _number(total.credits),
        "billed_seconds": _number(total.billed),
    }


def build(charges: Iterable[Charge], month: str, by: str = "client") -> dict[str, Any]:
    """The statement document: its lines and its totals per group and provider."""
    lines: list[dict[str, Any]] = []
    groups: dict[tuple[str, str], _Total] = {}
    providers: dict[str, _Total] = {}
    for charge in charges:
        lines.append(_line(charge))
        groups.setdefault((_group_of(charge, by), charge.provider), _Total()).add(charge)
        providers.setdefault(charge.provider, _Total()).add(charge)
    return {
        "month": month,
        "by": by,
        "lines": lines,
        "totals": {
            "groups": [{by: group, **_total(groups[group, p], p)} for group, p in sorted(groups)],
            "providers": [_total(providers[p], p) for p in sorted(providers)],
        },
    }


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


# A spreadsheet runs a cell that starts with one of these as a formula: a file or folder named
# `=HYPERLINK(…)` must come out as text (OWASP's advice: a leading apostrophe).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(document: dict[str, Any]) -> str:
    """A header row, the lines (``kind`` line), then the group and provider totals, marked in ``kind``."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for line in document["lines"]:
        row = {**line, "kind": "line", "client": parts_label(line["parts"])}
        writer.writerow({k: _cell(v) for k, v in row.items()})
    for total in document["totals"]["groups"]:
        writer.writerow({k: _cell(v) for k, v in {**total, "kind": "total"}.items()})
    for total in document["totals"]["providers"]:
        writer.writerow({k: _cell(v) for k, v in {**total, "kind": "provider total"}.items()})
    return out.getvalue()


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``ugcwatchd statement`` on the command line."""
    p = commands.add_parser(
        "statement",
        help="what was paid in a month: one line per paid job, totals per client, rule or provider",
        description="Read the ledger (never create one) and print one line per paid job of the month (a job "
        "delivered, or failed after the provider charged for it) and totals per group and per provider, "
        "each in its provider's unit (FaceDub credits, DubLab seconds). CSV rows carry a `kind` column: "
        "`line`, `total` (per group) or `provider total`.",
    )
    p.add_argument("--month", type=parse_month, metavar="YYYY-MM", help="the month (default: this one, local time)")
    p.add_argument("--by", choices=BY, default="client", help="group the totals by (default: client)")
    p.add_argument("--format", choices=FORMATS, default="csv", help="csv or json (default: csv)")
    p.set_defaults(handler=run_statement)


def run_statement(args: argparse.Namespace) -> int:
    from .ledger_location import command_ledger

    now = datetime.fromtimestamp(time.time())
    year, month = args.month or (now.year, now.month)
    start, end = month_range(year, month)
    ledger = command_ledger(args.config)
    try:
        charges = ledger.charges_between(start, end)
    finally:
        ledger.close()
    document = build(charges, f"{year:04d}-{month:02d}", args.by)
    sys.stdout.write(to_json(document) + "\n" if args.format == "json" else to_csv(document))
    return ExitCode.OK
