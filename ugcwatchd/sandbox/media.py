"""Real media for the sandbox and the demo: photos, short MP4s, and measuring what was uploaded.

Everything here produces or reads genuine files (Pillow, PyAV), so that a client talking to the
sandbox handles the same bytes it would get from the real services.
"""

from __future__ import annotations

import functools
import io
import math
import os
from array import array
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.video.stream import VideoStream
from PIL import Image, ImageDraw

PHOTO_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_AUDIO_CODECS = {"mp4": "aac", "mov": "aac", "m4a": "aac", "mp3": "libmp3lame"}
_SAMPLE_RATE = 22050


def sniff_photo(head: bytes) -> str | None:
    """The MIME type of a JPEG, PNG or WebP by its magic bytes, else None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def make_photo(path: Path, *, fmt: str = "JPEG", size: tuple[int, int] = (320, 400)) -> Path:
    """Write a small portrait (a drawn face) as JPEG, PNG or WebP."""
    img = Image.new("RGB", size, (70, 130, 180))
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.ellipse((w * 0.25, h * 0.2, w * 0.75, h * 0.7), fill=(240, 200, 170))
    for x in (0.4, 0.6):
        draw.ellipse((w * x - 8, h * 0.4 - 6, w * x + 8, h * 0.4 + 6), fill=(30, 30, 30))
    draw.arc((w * 0.38, h * 0.5, w * 0.62, h * 0.62), 20, 160, fill=(150, 40, 40), width=4)
    img.save(path, format=fmt)
    return path


def make_media(
    target: Path | BinaryIO,
    seconds: float,
    *,
    container: str = "mp4",
    video: bool = True,
    audio: bool = True,
    size: tuple[int, int] = (64, 64),
    fps: int = 10,
) -> None:
    """Encode a real clip of ``seconds``: a moving gradient and/or a sine tone."""
    if not (video or audio):
        raise ValueError("a clip needs a video or an audio stream")
    out = av.open(target, mode="w", format=container)
    try:
        # Every stream must exist before the first packet is muxed: the header is written then.
        vstream = _add_video_stream(out, size, fps) if video else None
        astream = _add_audio_stream(out, _AUDIO_CODECS.get(container, "aac")) if audio else None
        if vstream is not None:
            _encode_video(out, vstream, seconds, size, fps)
        if astream is not None:
            _encode_audio(out, astream, seconds)
    finally:
        out.close()


def _add_video_stream(out: OutputContainer, size: tuple[int, int], fps: int) -> VideoStream:
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    stream = out.add_stream(codec, rate=fps)
    assert isinstance(stream, VideoStream)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    if codec == "libx264":
        stream.options = {"preset": "ultrafast"}
    return stream


def _add_audio_stream(out: OutputContainer, codec: str) -> AudioStream:
    stream = out.add_stream(codec, rate=_SAMPLE_RATE)
    assert isinstance(stream, AudioStream)
    stream.layout = "mono"
    stream.codec_context.format = "fltp"
    return stream


def _encode_video(out: OutputContainer, stream: VideoStream, seconds: float, size: tuple[int, int], fps: int) -> None:
    for i in range(max(1, round(seconds * fps))):
        shade = 40 + (i * 7) % 180
        frame = av.VideoFrame.from_image(  # type: ignore[no-untyped-call]  # PyAV leaves it untyped
            Image.new("RGB", size, (shade, 255 - shade, 128))
        )
        frame.pts = i
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _encode_audio(out: OutputContainer, stream: AudioStream, seconds: float) -> None:
    frame_size = stream.codec_context.frame_size or 1024
    total = int(seconds * _SAMPLE_RATE)
    pts = 0
    while pts < total:
        n = min(frame_size, total - pts)
        # The last frame is padded with silence: encoders want whole frames.
        tone = array(
            "f",
            (0.2 * math.sin(2 * math.pi * 440 * (pts + k) / _SAMPLE_RATE) if k < n else 0.0 for k in range(frame_size)),
        )
        frame = av.AudioFrame(format="fltp", layout="mono", samples=frame_size)
        frame.planes[0].update(tone.tobytes())
        frame.sample_rate = _SAMPLE_RATE
        frame.pts = pts
        frame.time_base = Fraction(1, _SAMPLE_RATE)
        out.mux(stream.encode(frame))
        pts += frame_size
    out.mux(stream.encode(None))


@functools.lru_cache(maxsize=32)
def mp4_bytes(seconds: int) -> bytes:
    """A real MP4 of ``seconds``, cached: the sandbox's FaceDub results."""
    buf = io.BytesIO()
    make_media(buf, seconds, size=(96, 128))
    return buf.getvalue()


def probe_duration(path: str | os.PathLike[str]) -> float | None:
    """Length in seconds of a readable audio/video file, or None when it is not one."""
    try:
        with av.open(os.fspath(path), mode="r") as container:
            streams = [s for s in container.streams if s.type in ("audio", "video")]
            if not streams or _is_image_demuxer(container.format.name):
                return None
            if container.duration is not None and container.duration > 0:
                return float(container.duration) / av.time_base
            lengths = [float(s.duration * s.time_base) for s in streams if s.duration and s.time_base]
            return max(lengths) if lengths else None
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return None


def has_video_stream(source: str | os.PathLike[str] | BinaryIO) -> bool:
    """True when ``source`` (a path or a seekable file) is a video container with a video stream.

    Still images are not videos, though FFmpeg opens them as one-frame streams.
    """
    opened = source if not isinstance(source, str | os.PathLike) else os.fspath(source)
    try:
        with av.open(opened, mode="r") as container:
            if _is_image_demuxer(container.format.name):
                return False
            return any(s.type == "video" for s in container.streams)
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return False
    finally:
        if not isinstance(source, str | os.PathLike):
            source.seek(0)


def _is_image_demuxer(name: str) -> bool:
    return name.startswith("image2") or any(part.endswith("_pipe") for part in name.split(","))
