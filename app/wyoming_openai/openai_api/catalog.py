"""What the Wyoming servers offer, as the API's models and voices, built from their ``info``.

Text to speech: each Wyoming TTS program is a model and its voices are the voices. Speech to text:
each ASR model is a model, and the program's name means its default model. The first server to
offer an id keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from wyoming.info import Info, TtsProgram

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Voice:
    id: str
    name: str  # Wyoming voice name
    description: str | None
    languages: tuple[str, ...]
    speakers: tuple[str, ...]
    installed: bool


@dataclass(frozen=True)
class TtsModel:
    """A Wyoming TTS program: the OpenAI ``model`` of a speech request."""

    id: str
    server: str
    program: str
    select_program: bool  # the server offers several TTS programs: name ours on the connection
    owned_by: str
    description: str | None
    voices: dict[str, Voice]
    created: int

    def default_voice(self) -> Voice | None:
        for voice in self.voices.values():
            if voice.installed:
                return voice
        return next(iter(self.voices.values()), None)


@dataclass(frozen=True)
class AsrModel:
    """A Wyoming ASR model (or a program, meaning its default model)."""

    id: str
    server: str
    program: str
    select_program: bool
    model_name: str | None  # sent as Transcribe.name; None lets the server choose
    owned_by: str
    description: str | None
    languages: tuple[str, ...]
    streaming: bool
    created: int


@dataclass
class Catalog:
    tts: dict[str, TtsModel] = field(default_factory=dict)
    asr: dict[str, AsrModel] = field(default_factory=dict)

    def models(self) -> list[TtsModel | AsrModel]:
        """Each id once; an id both kinds use (an ASR model named like a TTS program) is listed as ASR."""
        return [*self.asr.values(), *(m for m in self.tts.values() if m.id not in self.asr)]

    def get(self, model_id: str) -> TtsModel | AsrModel | None:
        return self.asr.get(model_id) or self.tts.get(model_id)


def build_catalog(infos: Iterable[tuple[str, Info, int]]) -> Catalog:
    """Models from each server's Info, in server order; the first server to offer an id keeps it."""
    catalog = Catalog()
    infos = list(infos)
    tts_names = {p.name for _, info, _ in infos for p in info.tts if p.installed}
    for uri, info, created in infos:
        for tts_model in _tts_models(uri, info, created):
            _claim(catalog.tts, tts_model)
        for asr_model in _asr_models(uri, info, created, tts_names):
            _claim(catalog.asr, asr_model)
    return catalog


def _tts_models(uri: str, info: Info, created: int) -> Iterator[TtsModel]:
    """One model per installed TTS program."""
    programs = [p for p in info.tts if p.installed]
    for program in programs:
        yield TtsModel(
            id=program.name,
            server=uri,
            program=program.name,
            select_program=len(programs) > 1,
            owned_by=program.attribution.name or "wyoming",
            description=program.description,
            voices=_voices(program),
            created=created,
        )


def _voices(program: TtsProgram) -> dict[str, Voice]:
    """The program's voices by name; the first of a repeated name keeps it."""
    voices: dict[str, Voice] = {}
    for voice in program.voices:
        voices.setdefault(
            voice.name,
            Voice(
                id=voice.name,
                name=voice.name,
                description=voice.description,
                languages=tuple(voice.languages or ()),
                speakers=tuple(s.name for s in voice.speakers or ()),
                installed=voice.installed,
            ),
        )
    return voices


def _asr_models(uri: str, info: Info, created: int, tts_names: set[str]) -> Iterator[AsrModel]:
    """Per installed ASR program: the program's name for its default model, then each of its models."""
    programs = [p for p in info.asr if p.installed]
    for program in programs:
        common = {
            "server": uri,
            "program": program.name,
            "select_program": len(programs) > 1,
            "streaming": bool(program.supports_transcript_streaming),
            "created": created,
        }
        models = [m for m in program.models if m.installed] or list(program.models)
        languages = tuple(dict.fromkeys(lang for m in models for lang in m.languages or ()))
        # The program's own name picks its default model, so a client need not know model names;
        # unless a TTS program has that name (one server for both, as our proxy), and the ASR
        # models have names of their own: one id must mean one thing in /v1/models.
        if not (models and program.name in tts_names):
            yield AsrModel(
                id=program.name,
                model_name=None,
                owned_by=program.attribution.name or "wyoming",
                description=program.description,
                languages=languages,
                **common,
            )
        for model in models:
            yield AsrModel(
                id=model.name,
                model_name=model.name,
                owned_by=model.attribution.name or program.attribution.name or "wyoming",
                description=model.description,
                languages=tuple(model.languages or ()),
                **common,
            )


def _claim(table: dict[str, Any], entry: TtsModel | AsrModel) -> None:
    existing = table.get(entry.id)
    if existing is None:
        table[entry.id] = entry
    elif existing.server != entry.server:
        _LOGGER.debug("Model %s is offered by %s and %s; using the first", entry.id, existing.server, entry.server)
