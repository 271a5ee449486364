"""Listing an inbox: which entries are candidate input files, without following links."""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Seen:
    """One regular file as last observed: what stability is judged on.

    Kept small (slots, a plain string path): an inbox may hold a hundred thousand of them.
    """

    root: str  # the inbox: one string shared by every file in it
    rel: str  # relative to the inbox, with '/' separators
    size: int
    mtime_ns: int
    ino: int

    @property
    def file(self) -> str:
        """The absolute path."""
        return f"{self.root}/{self.rel}"

    @property
    def path(self) -> Path:
        return Path(self.file)

    @property
    def signature(self) -> tuple[int, int, int]:
        return (self.size, self.mtime_ns, self.ino)


class Scanner:
    """Finds candidate files in one inbox: regular, not hidden, not ignored, not our own output."""

    def __init__(
        self,
        inbox: Path,
        *,
        ignore: Iterable[str],
        match: Iterable[str] | None,
        depth: int | None,
        exclude: Iterable[Path] = (),
    ) -> None:
        self.inbox = inbox
        self.root = str(inbox)
        self.ignore = tuple(p.lower() for p in ignore)
        self.match = tuple(p.lower() for p in match) if match else None
        self.depth = depth  # 1: the inbox itself; 2: one level of subfolders; None: all
        self.exclude = {os.path.normpath(p) for p in exclude}
        self._reported: set[str] = set()

    def ignored(self, name: str) -> bool:
        lowered = name.lower()
        return name.startswith(".") or any(fnmatch.fnmatchcase(lowered, p) for p in self.ignore)

    def wanted(self, name: str) -> bool:
        return self.match is None or any(fnmatch.fnmatchcase(name.lower(), p) for p in self.match)

    def _report_once(self, path: str, message: str) -> None:
        if path not in self._reported:
            self._reported.add(path)
            log.warning("%s: %s", path, message)

    def scan(self) -> dict[str, Seen]:
        """Every candidate file now, by relative path. Raises OSError when the inbox is unreadable."""
        found: dict[str, Seen] = {}
        self._walk(self.inbox, "", 1, found, top=True)
        return found

    def _walk(self, folder: Path, prefix: str, level: int, found: dict[str, Seen], *, top: bool = False) -> None:
        try:
            entries = os.scandir(folder)
        except OSError:
            if top:
                raise
            return  # a subfolder vanished or is unreadable: the next scan will tell
        with entries:
            for entry in entries:
                self._visit(entry, prefix, level, found)

    def _visit(self, entry: os.DirEntry[str], prefix: str, level: int, found: dict[str, Seen]) -> None:
        """One directory entry: a candidate file, a folder to enter, or something to leave alone."""
        if self.ignored(entry.name):
            return
        rel = f"{prefix}{entry.name}"
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            self._report_once(entry.path, "is a symbolic link; links are never followed, it is left alone")
        elif stat.S_ISDIR(st.st_mode):
            if (self.depth is None or level < self.depth) and os.path.normpath(entry.path) not in self.exclude:
                self._walk(Path(entry.path), f"{rel}/", level + 1, found)
        elif stat.S_ISREG(st.st_mode):
            if self.wanted(entry.name):
                found[rel] = Seen(self.root, rel, st.st_size, st.st_mtime_ns, st.st_ino)
        else:
            self._report_once(entry.path, "is not a regular file (a device, socket or pipe); it is left alone")

    def stat_one(self, rel: str) -> Seen | None:
        """Observe one file again (after an event, or while it settles); None when it is gone."""
        path = self.inbox / rel
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return Seen(self.root, rel, st.st_size, st.st_mtime_ns, st.st_ino)
