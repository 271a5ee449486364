"""The providers' live language lists: read by the daemon (at start, then daily) and by ``check``, cached
in the ledger, and put in use (``ugcwatchd.languages``) before the rules are loaded or a folder's options
are read. A provider that cannot be asked leaves the cached list, or else the built-in one, in use.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from . import languages
from .errors import UgcwatchdError
from .ledger import FILE_NAME, Ledger
from .ledger.facts import read_languages
from .providers.base import Provider

log = logging.getLogger(__name__)
REFRESH_EVERY = 86400.0  # the daemon reads the lists again daily


def use_cached(where: Path | str, password: str | None = None) -> None:
    """Put the language list cached in the ledger in use; without one, the built-in list.

    ``where``: a state folder (its SQLite ledger), a ledger file, or a PostgreSQL URL. Read-only and never
    failing: a missing or unreadable ledger only means the built-in list.
    """
    if isinstance(where, Path) and where.name != FILE_NAME:
        where = where / FILE_NAME  # a state folder (no stat here: it may be a folder we cannot look into)
    languages.use(read_languages(where, password=password))


async def refresh(
    providers: Mapping[str, Provider], ledger: Ledger | None, *, quiet: bool = False
) -> dict[str, frozenset[str]]:
    """Ask each provider for its language list; cache each list read and put it in use.

    The lists read, by provider; a provider that cannot answer now is logged (``quiet``: only at debug
    level, for ``check``, which reports that provider itself) and left out.
    """
    read: dict[str, frozenset[str]] = {}
    for name, provider in providers.items():
        try:
            codes = await provider.languages()
        except UgcwatchdError as exc:
            fallback = "the cached list" if languages.live() else "the built-in list"
            level = logging.DEBUG if quiet else logging.WARNING
            log.log(level, "%s: cannot read the language list now (%s); %s stays in use", name, exc, fallback)
            continue
        if not codes:
            continue  # its jobs take no language (or it named none: never a reason to refuse them all)
        before = languages.known()
        languages.use(codes)
        read[name] = codes
        if ledger is not None:
            ledger.put_languages(name, codes)
        added, gone = sorted(codes - before), sorted(before - codes)
        change = "".join(f"; {what}: {', '.join(which)}" for what, which in (("new", added), ("gone", gone)) if which)
        log.info("%s: %d languages%s", name, len(codes), change)
    return read
