"""Streaming text to speech: sentences cut from text as it arrives, synthesized ahead, played in order.

While sentence N plays, sentences N+1… are already being synthesized, at most
``--tts-concurrent-requests`` at a time; a sentence's slot is freed once it has been played, so the
audio held in memory never exceeds that many sentences.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pysbd

from .audio import PcmFormat, S16Converter
from .catalog import Voice
from .failover import FailoverSynthesizer

_LOGGER = logging.getLogger(__name__)

# Worth asking the segmenter only once a sentence could have ended: punctuation then a space, or a
# newline. Closing quotes, brackets and markdown marks may stand between ("**Done!** I …").
_POSSIBLE_END = re.compile(r"[.!?…。！？;:]['\"”’)\]*_~`]*\s|\n")
_CLAUSE_BREAK = re.compile(r"[,;:–—]\s")
_SPACE = re.compile(r"\s+")
_UNSPACED_ENDS = frozenset("。！？")  # languages written without spaces end sentences right before the next


@functools.cache
def _segmenter(language: str | None) -> pysbd.Segmenter:
    code = (language or "en").replace("_", "-").split("-")[0].lower()
    if code not in pysbd.languages.LANGUAGE_CODES:
        code = "en"
    return pysbd.Segmenter(language=code, clean=False, char_span=True)


def warm_up(languages: list[str]) -> None:
    """pySBD compiles its rules on first use (~15 ms): do it at start-up, not in the first reply."""
    for language in languages:
        _segmenter(language).segment("Warm up. Now")


class SentenceSplitter:
    """Cuts a growing text into speakable pieces (pySBD, rule-based, many languages).

    ``prepare`` makes each sentence speakable (speech_text: markdown, emoji, pronunciations) as soon
    as it is cut, before sentences are grouped to ``min_words`` and limited to ``max_chars``: the
    limits then hold for what the upstream gets, and a sentence with nothing to say is dropped.
    A marker whose partner is in another sentence ("**Done!" | "** I …") is dropped with the rest.
    """

    def __init__(
        self,
        language: str | None,
        min_words: int | None = None,
        max_chars: int | None = None,
        prepare: Callable[[str], str] | None = None,
    ) -> None:
        self.language = language
        self._segmenter = _segmenter(language)
        self.min_words = min_words or 1
        self.max_chars = max_chars
        self.prepare = prepare
        self._buffer = ""
        self._short = ""  # complete sentences held back until they reach min_words

    def push(self, text: str) -> list[str]:
        self._buffer += text
        if not _POSSIBLE_END.search(self._buffer):
            return []
        spans = self._segmenter.segment(self._buffer)
        if len(spans) < 2:
            return []
        cuts = self._cuts([span.start for span in spans[1:]])
        if not cuts:
            return []
        buffer = self._buffer
        self._buffer = buffer[cuts[-1] :]
        return self._group([buffer[start:end] for start, end in zip([0, *cuts], cuts, strict=False)])

    def _cuts(self, starts: list[int]) -> list[int]:
        """Where sentences start, never inside a run of non-space characters: pySBD cuts
        "https://x.org/a?id=2." after the "?" and "**Done!** I" after the "!", which would leave
        a URL's tail or a marker's partner to another request. Such a cut moves to the next space;
        one that cannot be placed yet (no word after the space so far) waits for more text."""
        buffer = self._buffer
        cuts: list[int] = []
        for start in starts:
            if not buffer[start - 1].isspace() and buffer[start - 1] not in _UNSPACED_ENDS:
                space = _SPACE.search(buffer, start)
                if space is None or space.end() == len(buffer):
                    break
                start = space.end()
            if "<!--" in buffer and buffer.rfind("<!--", 0, start) > buffer.rfind("-->", 0, start):
                break  # inside an HTML comment: its words are not for speaking
            if start > (cuts[-1] if cuts else 0):
                cuts.append(start)
        return cuts

    def flush(self) -> list[str]:
        """Whatever is left when the text has ended."""
        pieces = self._group([self._buffer]) if self._buffer.strip() else []
        self._buffer = ""
        if self._short.strip():
            pieces.append(self._short.strip())
        self._short = ""
        return [piece for piece in pieces if piece.strip()]

    def _group(self, sentences: list[str]) -> list[str]:
        pieces: list[str] = []
        for sentence in sentences:
            if self.prepare is not None:
                sentence = self.prepare(sentence)
                if not sentence:
                    continue
                sentence += " "  # cut from its trailing space
            self._short += sentence
            if len(self._short.split()) >= self.min_words:
                pieces.extend(self._limit(self._short.strip()))
                self._short = ""
        return pieces

    def _limit(self, text: str) -> list[str]:
        """Split text longer than max_chars, at a clause break if there is one, else between words."""
        if not self.max_chars:
            return [text]
        pieces = []
        while len(text) > self.max_chars:
            window = text[: self.max_chars + 1]
            breaks = [m.end() for m in _CLAUSE_BREAK.finditer(window)]
            cut = breaks[-1] if breaks else window.rfind(" ") + 1
            if cut <= 0:
                cut = self.max_chars
            pieces.append(text[:cut].strip())
            text = text[cut:].strip()
        if text:
            pieces.append(text)
        return pieces


@dataclass
class _Sentence:
    text: str
    audio: asyncio.Queue = field(default_factory=asyncio.Queue)  # (format, pcm) … then None or an exception
    task: asyncio.Task | None = None


Emit = Callable[[PcmFormat, bytes], Awaitable[None]]


class SpeechStream:
    """One synthesize-start … synthesize-stop session."""

    def __init__(
        self,
        synthesizer: FailoverSynthesizer,
        voice: Voice,
        splitter: SentenceSplitter,
        concurrency: int,
        emit: Emit,
    ) -> None:
        # One client request: once a sentence went to the fallback the rest follow; recorded once.
        self.synthesizer = synthesizer.session()
        self.voice = voice
        self.splitter = splitter
        self.emit = emit
        self.format: PcmFormat | None = None
        self.sentences = 0
        self.finishing = False  # the text is complete; failures now surface from finish()
        self._unsaid = False  # text arrived of which nothing was worth saying (only emoji, marks)
        splitter.prepare = functools.partial(synthesizer.speakable, voice=voice, language=splitter.language)
        self._slots = asyncio.Semaphore(concurrency)
        self._queue: asyncio.Queue[_Sentence | None] = asyncio.Queue()
        self._fetches: set[asyncio.Task] = set()
        self._converter: S16Converter | None = None
        self.player = asyncio.create_task(self._play(), name="speech stream")
        self.player.add_done_callback(self.synthesizer.finished)

    def add_text(self, text: str) -> None:
        for sentence in self.splitter.push(text):
            self._start(sentence)
        self._unsaid = self._unsaid or bool(text.strip())

    async def finish(self) -> None:
        """The text is complete: speak the rest and wait until everything has been played."""
        for sentence in self.splitter.flush():
            self._start(sentence)
        if not self.sentences and self._unsaid:
            self._start("")  # the client asked for speech: a moment of silence rather than none
        self._queue.put_nowait(None)
        await self.player

    async def cancel(self) -> None:
        tasks = [self.player, *self._fetches]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, text: str) -> None:
        sentence = _Sentence(text)
        sentence.task = asyncio.create_task(self._fetch(sentence), name="sentence synthesis")
        self._fetches.add(sentence.task)
        sentence.task.add_done_callback(self._fetches.discard)
        self._queue.put_nowait(sentence)
        self.sentences += 1

    async def _fetch(self, sentence: _Sentence) -> None:
        await self._slots.acquire()  # released by the player once this sentence has been played
        try:
            async for piece in self.synthesizer.speak(sentence.text, self.voice):
                sentence.audio.put_nowait(piece)
            sentence.audio.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - handed to the player, which raises it in order
            sentence.audio.put_nowait(err)

    async def _play(self) -> None:
        while (sentence := await self._queue.get()) is not None:
            try:
                while (item := await sentence.audio.get()) is not None:
                    if isinstance(item, Exception):
                        raise item
                    await self._emit(*item)
                if self._converter is not None and (tail := self._converter.flush()):
                    await self.emit(self.format, tail)  # type: ignore[arg-type]
                self._converter = None
            finally:
                self._slots.release()

    async def _emit(self, fmt: PcmFormat, pcm: bytes) -> None:
        # The client writes one WAV header from the first audio-start: every sentence must match it.
        if self.format is None:
            self.format = fmt
        elif fmt != self.format:
            if self._converter is None:
                self._converter = S16Converter(fmt, self.format.rate)
            pcm = self._converter.convert(pcm)
            if not pcm:
                return
        await self.emit(self.format, pcm)
