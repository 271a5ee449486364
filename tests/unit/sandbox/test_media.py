"""Sample media and measuring it: the sandbox bills and validates on these."""

from __future__ import annotations

from pathlib import Path

import pytest

from ugcwatchd.sandbox.media import has_video_stream, mp4_bytes, probe_duration, sniff_photo


@pytest.mark.parametrize(("name", "seconds"), [("video.mp4", 3), ("long.mp4", 7), ("speech.mov", 2), ("voice.mp3", 4)])
def test_media_probe_duration_measures_generated_clips(media: dict[str, Path], name: str, seconds: int) -> None:
    assert probe_duration(media[name]) == pytest.approx(seconds, abs=0.1)


@pytest.mark.parametrize("name", ["notes.mp4", "truncated.mp4", "jpeg"])
def test_media_probe_duration_of_non_media_is_none(media: dict[str, Path], name: str) -> None:
    assert probe_duration(media[name]) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("video.mp4", True),
        ("speech.mov", True),
        ("voice.mp3", False),
        ("jpeg", False),
        ("png", False),
        ("notes.mp4", False),
    ],
)
def test_media_has_video_stream_only_for_real_videos(media: dict[str, Path], name: str, expected: bool) -> None:
    assert has_video_stream(media[name]) is expected


@pytest.mark.parametrize(
    ("name", "mime"),
    [("jpeg", "image/jpeg"), ("png", "image/png"), ("webp", "image/webp"), ("video.mp4", None), ("notes.mp4", None)],
)
def test_media_sniff_photo_reads_magic_bytes(media: dict[str, Path], name: str, mime: str | None) -> None:
    assert sniff_photo(media[name].read_bytes()[:16]) == mime


def test_media_mp4_bytes_is_a_real_clip_of_that_length(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(mp4_bytes(5))
    assert has_video_stream(out)
    assert probe_duration(out) == pytest.approx(5, abs=0.1)
