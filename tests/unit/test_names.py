"""Odd names: too long, or not UTF-8, through job names, the ledger and sidecars."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from ugcwatchd.names import NAME_MAX, SUFFIX_ROOM, fit_job_name, from_db, shown, to_db


def test_names_long_cjk_name_is_shortened_with_a_hash() -> None:
    stem = "動画" * 40  # 240 bytes in UTF-8
    fitted = fit_job_name(f"{stem}.de")
    assert fitted.endswith(".de") and "~" in fitted
    assert len(os.fsencode(fitted)) + SUFFIX_ROOM <= NAME_MAX
    assert fitted.encode("utf-8")  # never a character cut in half
    assert fit_job_name(f"{stem}.de") == fitted and fit_job_name(f"{stem}x.de") != fitted


def test_names_short_name_is_kept_as_it_is() -> None:
    assert fit_job_name("sub/clip.de") == "sub/clip.de"


def test_names_not_utf8_byte_is_shown_as_hex_and_stored_as_valid_text() -> None:
    name = os.fsdecode(b"caf\xe9.mp4")
    assert shown(name) == "caf\\xe9.mp4"
    stored = to_db(name)
    stored.encode("utf-8")  # SQLite takes it
    assert from_db(stored) == name and to_db("café.mp4") == "café.mp4"


@given(st.binary(min_size=1, max_size=NAME_MAX).filter(lambda b: b"/" not in b and b"\x00" not in b))
def test_names_any_file_name_fits_round_trips_and_shows(raw: bytes) -> None:
    name = os.fsdecode(raw)
    job = fit_job_name(f"{name}.de")
    assert len(os.fsencode(job.rpartition("/")[2])) + SUFFIX_ROOM <= NAME_MAX
    assert from_db(to_db(name)) == name
    to_db(job).encode("utf-8")
    shown(job).encode("utf-8")
