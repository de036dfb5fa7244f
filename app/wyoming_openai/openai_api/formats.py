"""Transcription results in OpenAI's response formats.

Wyoming transcripts carry text (and maybe a language) but no timings, so the timed formats —
verbose_json, srt, vtt — hold one segment spanning the whole audio rather than invented timestamps.
Scores Wyoming does not report (log-probability, compression ratio, no-speech probability) are
given neutral values because OpenAI's schema requires the fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
STREAMABLE_FORMATS = ("json", "text")


@dataclass(frozen=True)
class TranscriptionResult:
    text: str
    duration: float  # seconds of audio the server was sent
    language: str | None


def render(result: TranscriptionResult, response_format: str) -> tuple[str, str]:
    """(body, content type)."""
    if response_format == "json":
        return json.dumps({"text": result.text, "usage": _usage(result)}), "application/json"
    if response_format == "text":
        return result.text + "\n", "text/plain"
    if response_format == "verbose_json":
        return json.dumps(verbose_json(result)), "application/json"
    if response_format == "srt":
        return srt(result), "application/x-subrip"
    if response_format == "vtt":
        return vtt(result), "text/vtt"
    raise ValueError(response_format)


def _usage(result: TranscriptionResult) -> dict[str, object]:
    return {"type": "duration", "seconds": round(result.duration, 3)}


def verbose_json(result: TranscriptionResult) -> dict[str, object]:
    segments = []
    if result.text.strip():
        segments.append(
            {
                "id": 0,
                "seek": 0,
                "start": 0.0,
                "end": round(result.duration, 3),
                "text": result.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
        )
    return {
        "task": "transcribe",
        "language": result.language or "unknown",
        "duration": round(result.duration, 3),
        "text": result.text,
        "segments": segments,
        "usage": _usage(result),
    }


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cue_text(text: str) -> str:
    # A blank line ends a cue in both formats: keep the transcript's lines together.
    return "\n".join(line for line in text.strip().splitlines() if line.strip())


def srt(result: TranscriptionResult) -> str:
    text = _cue_text(result.text)
    if not text:
        return ""
    return f"1\n{_timestamp(0, ',')} --> {_timestamp(result.duration, ',')}\n{text}\n\n"


def vtt(result: TranscriptionResult) -> str:
    text = _cue_text(result.text).replace("-->", "->")  # the arrow would be read as a cue timing
    if not text:
        return "WEBVTT\n\n"
    return f"WEBVTT\n\n{_timestamp(0, '.')} --> {_timestamp(result.duration, '.')}\n{text}\n\n"


def sse(event: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
