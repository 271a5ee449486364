"""The command line: ``ugcwatchd [-c RULES] [--debug] COMMAND``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .answer import add_command as add_answers
from .errors import (
    ConfigError,
    ConfigProblems,
    ExitCode,
    MissingExtraError,
    UgcwatchdError,
    UsageError,
    map_os_errors,
)
from .init import add_command as add_init
from .ledger import JOB_STATES
from .migrate import add_command as add_migrate
from .statement import add_command as add_statement

if TYPE_CHECKING:
    from .rules import Config
    from .settings import Settings


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds (0 or more)")
    return value


def _whole_seconds(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of seconds (0 or more)")
    return value


# The sandbox's --download-mode values (ugcwatchd.sandbox.DOWNLOAD_MODES; the sandbox is imported lazily).
_DOWNLOAD_MODES = ("normal", "slow", "huge", "redirect-http", "redirect-html", "truncated", "error")


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65533:
        raise argparse.ArgumentTypeError(f"{text} is not a port from 0 to 65533 (three consecutive ports are used)")
    return value


def _add_sandbox(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "sandbox",
        help="serve local FaceDub, DubLab and upload APIs",
        description="Serve faithful local FaceDub (PORT), DubLab (PORT+1) and upload (PORT+2) APIs until "
        "SIGINT/SIGTERM. With --port 0 each service takes a free port; the printed lines say which.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument(
        "--port", type=_port, default=8787, help="FaceDub's port; DubLab and uploads use the next two (default: 8787)"
    )
    p.add_argument("--job-seconds", type=_positive, default=8.0, help="how long a job takes to finish (default: 8)")
    p.add_argument(
        "--facedub-key",
        action="append",
        metavar="KEY",
        help="a FaceDub API key (fdb_…); repeat for more users (default: fdb_sandbox)",
    )
    p.add_argument(
        "--dublab-key",
        action="append",
        metavar="KEY",
        help="a DubLab API key; repeat for more users (default: dl_sandbox)",
    )
    p.add_argument("--facedub-credits", type=int, default=150, help="each FaceDub user's credits_limit (default: 150)")
    p.add_argument(
        "--dublab-seconds", type=int, default=3600, help="each DubLab user's seconds balance (default: 3600)"
    )
    p.add_argument(
        "--fail-rate", type=_fraction, default=0.0, help="share of API requests answered 500/502/dropped (default: 0)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed for --fail-rate and --odd-answers, for repeatable runs")
    p.add_argument(
        "--upload-expires", type=int, default=900, help="lifetime of presigned upload URLs in seconds (default: 900)"
    )
    p.add_argument(
        "--rate-window",
        type=_positive,
        default=60.0,
        help="length in seconds of FaceDub's sliding rate-limit windows (default: 60, as documented)",
    )
    p.add_argument(
        "--late-create",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="FaceDub POST /jobs answers 504 and creates the job SECONDS later; with --fail-rate, only the "
        "requests it faults after effect (default: 0, off)",
    )
    p.add_argument(
        "--answer-delay",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="paid requests (FaceDub POST /jobs, DubLab start-dub) take effect at once but are answered "
        "SECONDS later (default: 0)",
    )
    p.add_argument(
        "--odd-answers",
        type=_fraction,
        default=0.0,
        metavar="RATE",
        help="share of successful list/account GETs answered with a malformed 200 (default: 0)",
    )
    p.add_argument(
        "--retry-after",
        type=_whole_seconds,
        default=None,
        metavar="SECONDS",
        help="the Retry-After sent with every 429 (default: the honest value)",
    )
    p.add_argument(
        "--download-mode",
        choices=_DOWNLOAD_MODES,
        default="normal",
        metavar="MODE",
        help=f"how FaceDub's output_url answers: {', '.join(_DOWNLOAD_MODES)} (default: normal)",
    )
    p.set_defaults(handler=_cmd_sandbox)


def _cmd_sandbox(args: argparse.Namespace) -> int:
    try:
        from .sandbox import SandboxConfig, run
    except ImportError:
        raise MissingExtraError("sandbox", "the sandbox") from None
    facedub_keys = args.facedub_key or ["fdb_sandbox"]
    bad = [k for k in facedub_keys if not k.startswith("fdb_")]
    if bad:
        raise UsageError("every --facedub-key must start with fdb_, as FaceDub's keys do")
    config = SandboxConfig(
        host=args.host,
        port=args.port,
        job_seconds=args.job_seconds,
        facedub_keys=facedub_keys,
        dublab_keys=args.dublab_key or ["dl_sandbox"],
        facedub_credits=args.facedub_credits,
        dublab_seconds=args.dublab_seconds,
        fail_rate=args.fail_rate,
        seed=args.seed,
        upload_expires=args.upload_expires,
        rate_window=args.rate_window,
        late_create=args.late_create,
        answer_delay=args.answer_delay,
        odd_answers=args.odd_answers,
        retry_after=args.retry_after,
        download_mode=args.download_mode,
    )
    with map_os_errors(f"listen on {args.host}:{args.port}"):
        run(config, announce=lambda line: print(line, flush=True))
    return ExitCode.OK


def _add_check(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "check",
        help="validate the rules file and the folders, and verify the API keys",
        description="Validate the rules file and every folder it names, print what the daemon would watch, "
        "and (unless --offline) verify each provider's API key and show its credits. Exits 78 on any problem.",
    )
    p.add_argument("--offline", action="store_true", help="do not contact the providers")
    p.set_defaults(handler=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from .check import check_offline, check_online, use_languages
    from .rules import load_rules
    from .settings import Settings

    settings = Settings.from_env()
    path = settings.rules_path(args.config)
    # The rules are checked against DubLab's own language list: asked now (online), else the ledger's copy.
    languages = use_languages(path, settings, online=not args.offline)
    config = load_rules(path)
    report = check_offline(config, settings)
    report.lines.append(languages)
    if not args.offline:
        asyncio.run(check_online(config, settings, report))
    for line in report.lines:
        print(line)
    for warning in report.warnings:
        print(f"warning: {warning}")
    if report.problems:
        raise ConfigProblems(report.problems)
    print("ok: no problems found")
    return ExitCode.OK


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("run", help="run the daemon in the foreground (systemd Type=notify)")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from . import logs
    from .daemon import Daemon
    from .ledger_location import ledger_secrets
    from .providers import registry
    from .settings import Settings, api_key, check_state_dir, console_token

    settings = Settings.from_env()
    config = _load_rules(args, settings)  # the daemon reads DubLab's language list again at start
    # Every provider's key is masked in the logs, used by a rule or not; a key that cannot be used stops
    # the daemon only when a rule needs it (as `check` says).
    used = {rule.provider for rule in config.rules}
    secrets = []
    for name in registry.names():
        try:
            key = api_key(name, config.providers.settings(name).api_key, settings).value
        except ConfigError:
            if name in used:
                raise
            continue
        if key is not None:
            secrets.append(key.get_secret_value())
    with contextlib.suppress(ConfigError):  # the console reports a bad token itself, when it is used
        token = console_token(settings)
        if token is not None:
            secrets.append(token.get_secret_value())
    logs.setup(settings.log_level, settings.log_format, secrets + ledger_secrets(settings, config), debug=args.debug)
    # Before anything is locked or opened there: SQLite on a network share can corrupt the ledger.
    check_state_dir(settings.resolved_state_dir())
    return asyncio.run(Daemon(config, settings).run())


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "demo",
        help="a self-contained tour: sandbox, sample media, the daemon, the results",
        description="Start the sandbox on loopback, make a demo folder with generated sample media, run the "
        "daemon until every sidecar is final, print what it did, and exit 0.",
    )
    p.add_argument("--folder", type=Path, help="where to make the demo folder (default: a new temporary folder)")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        from .demo import run_demo  # imports the sandbox, and with it the extra's packages
    except ImportError:
        missing = MissingExtraError("sandbox", "the demo")
        missing.exit_code = ExitCode.USAGE  # the install lacks a part the command needs: nothing ran
        raise missing from None
    from . import logs

    logs.setup("warning", "text", debug=args.debug)
    return run_demo(args.folder)


def _add_ops(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("status", help="counts by state, running jobs, held work and why, recent failures")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_status)
    p = commands.add_parser("jobs", help="list items and their jobs")
    p.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_jobs)
    p = commands.add_parser("retry", help="queue failed items again (an explicit act: it may cost credits)")
    p.add_argument("items", metavar="ITEM", type=int, nargs="+", help="item numbers, as `status` and `jobs` show them")
    p.set_defaults(handler=_cmd_retry)
    p = commands.add_parser("plan", help="dry run: what every file now in the inboxes would become, and its cost")
    p.set_defaults(handler=_cmd_plan)
    p = commands.add_parser("usage", help="each provider's remaining credits")
    p.set_defaults(handler=_cmd_usage)


def _cmd_status(args: argparse.Namespace) -> int:
    from .ledger_location import command_ledger
    from .ops import as_json, print_status, status

    report = status(command_ledger(args.config))
    print(as_json(report)) if args.json else print_status(report)
    return ExitCode.OK


def _cmd_jobs(args: argparse.Namespace) -> int:
    from .ledger_location import command_ledger
    from .ops import as_json, jobs, print_jobs

    rows = jobs(command_ledger(args.config), args.state)
    print(as_json(rows)) if args.json else print_jobs(rows)
    return ExitCode.OK


def _load_rules(args: argparse.Namespace, settings: Settings) -> Config:
    """The rules file, checked against DubLab's language list as the daemon last read it (else built in)."""
    from .ledger_location import cache_place
    from .live_languages import use_cached
    from .rules import load_rules

    use_cached(*cache_place(settings, settings.rules_path(args.config)))
    return load_rules(settings.rules_path(args.config))


def _cmd_retry(args: argparse.Namespace) -> int:
    from .ledger_location import open_ledger
    from .ops import retry
    from .settings import Settings

    settings = Settings.from_env()
    config = _load_rules(args, settings)
    for line in retry(open_ledger(settings, config, create=False), config, args.items):
        print(line)
    return ExitCode.OK


def _cmd_plan(args: argparse.Namespace) -> int:
    from .plan import plan
    from .settings import Settings

    settings = Settings.from_env()
    for line in plan(_load_rules(args, settings), settings):
        print(line)
    return ExitCode.OK


def _cmd_usage(args: argparse.Namespace) -> int:
    from .ops import run_usage
    from .settings import Settings

    settings = Settings.from_env()
    for line in run_usage(_load_rules(args, settings), settings):
        print(line)
    return ExitCode.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ugcwatchd", description="Watched folders in, paid AI-video jobs out.")
    parser.add_argument(
        "-c",
        "--config",
        metavar="RULES",
        help="the rules file (default: $UGCWATCHD_CONFIG, then /etc/ugcwatchd/rules.yaml)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_run(commands)
    add_init(commands)
    _add_check(commands)
    _add_ops(commands)
    add_statement(commands)
    add_answers(commands)
    add_migrate(commands)
    _add_demo(commands)
    _add_sandbox(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UgcwatchdError as exc:
        if args.debug:
            raise
        from .logs import fatal

        fatal(f"ugcwatchd: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return ExitCode.OK
