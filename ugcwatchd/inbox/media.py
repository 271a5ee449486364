"""What an input really is, from its content: photos, videos and audio, and their length.

Types are sniffed, never taken from the extension; media is demuxed to its end, so a truncated file
is caught before anyone pays for it.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
from PIL import Image, UnidentifiedImageError

Kind = Literal["photo", "video", "audio"]
_PHOTO_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))
_FORMAT_MIME = {
    "matroska,webm": "video/x-matroska",
    "avi": "video/x-msvideo",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "aac": "audio/aac",
}


@dataclass(frozen=True)
class MediaInfo:
    kind: Kind
    mime: str
    seconds: float | None = None  # media length; None for photos
    has_audio: bool = False


class InvalidMedia(Exception):
    """The file is not a usable photo, video or audio file; the message says why, in one sentence."""


def photo_mime(head: bytes) -> str | None:
    for magic, mime in _PHOTO_MAGIC:
        if head.startswith(magic):
            return mime
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def inspect(path: Path) -> MediaInfo:
    """Sniff and measure ``path``; raises :class:`InvalidMedia`."""
    with path.open("rb") as f:
        head = f.read(32)
    mime = photo_mime(head)
    if mime is not None:
        _check_photo(path)
        return MediaInfo("photo", mime)
    return _inspect_media(path)


def _check_photo(path: Path) -> None:
    try:
        with Image.open(path) as img:
            img.load()  # decodes every pixel: a truncated photo fails here
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidMedia(f"{path.name} looks like a photo but cannot be decoded ({exc})") from None


def _inspect_media(path: Path) -> MediaInfo:
    try:
        with av.open(str(path), mode="r") as container:
            name = container.format.name
            if name.startswith("image2") or any(part.endswith("_pipe") for part in name.split(",")):
                raise InvalidMedia(f"{path.name} is a still image of a kind FaceDub does not take")
            kinds = {s.type for s in container.streams}
            if "video" not in kinds and "audio" not in kinds:
                raise InvalidMedia(f"{path.name} has no video or audio stream")
            # An indexed container (MP4, MOV) lists every packet: all of them must be there.
            indexed = sum(s.frames for s in container.streams if s.type in ("video", "audio") and s.frames)
            last, packets = 0.0, 0
            for packet in container.demux():
                if not packet.size:
                    continue  # the flush packet at the end of each stream
                packets += 1
                if packet.pts is not None and packet.time_base is not None:
                    last = max(last, float((packet.pts + (packet.duration or 0)) * packet.time_base))
            declared = float(container.duration) / av.time_base if container.duration else None
    except InvalidMedia:
        raise
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidMedia(f"{path.name} is not a readable video or audio file ({_short(exc)})") from None
    seconds = declared if declared else last
    if not seconds or seconds <= 0:
        raise InvalidMedia(f"{path.name} has no measurable length")
    if indexed and packets < indexed:
        raise InvalidMedia(f"{path.name} is truncated: {packets} of its {indexed} media packets are there")
    if declared and last and last < declared * 0.9 - 0.5:
        raise InvalidMedia(f"{path.name} ends after {last:.1f} s of its {declared:.1f} s: it is truncated")
    kind: Kind = "video" if "video" in kinds else "audio"
    return MediaInfo(kind, _mime(path, name, kind), seconds, "audio" in kinds)


def _mime(path: Path, format_name: str, kind: Kind) -> str:
    guessed, _ = mimetypes.guess_type(path.name)
    if guessed and guessed.split("/")[0] in ("video", "audio"):
        return guessed
    if format_name in _FORMAT_MIME:
        return _FORMAT_MIME[format_name]
    return "video/mp4" if kind == "video" else "audio/mp4"


def _short(exc: Exception) -> str:
    reason = getattr(exc, "strerror", None)
    return str(reason) if reason else type(exc).__name__
