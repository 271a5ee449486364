"""``ugcwatchd approve ITEM…`` and ``ugcwatchd reject ITEM…``: an operator's answer to quotes.

They act in the ledger, so they work while the daemon runs (it picks the answer up on its next steps)
and while it is stopped. The work itself is :mod:`ugcwatchd.approvals`, imported only when a command runs.
"""

from __future__ import annotations

import argparse

from .errors import ExitCode

VERBS = {
    "approve": "send work that waits for approval (an explicit act: it costs credits)",
    "reject": "refuse work that waits for approval: error sidecars, inputs moved as for any failure",
}


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for verb, text in VERBS.items():
        p = commands.add_parser(
            verb,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. Every ITEM must be awaiting approval, or nothing is done.",
        )
        p.add_argument("items", metavar="ITEM", type=int, nargs="+", help="item numbers, as `status` shows them")
        p.set_defaults(handler=run_answer, approved=verb == "approve")


def run_answer(args: argparse.Namespace) -> int:
    from .approvals import answer_items
    from .ledger_location import command_ledger

    ledger = command_ledger(args.config)
    try:
        for decision in answer_items(ledger, args.items, approved=args.approved):
            print(decision.line)
    finally:
        ledger.close()
    return ExitCode.OK
