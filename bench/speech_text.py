"""What making text speakable costs, per sentence (goal: under 50 µs).

    python bench/speech_text.py [--rounds 200]

The sentences are those the streaming splitter cuts from the test corpus of LLM answers
(tests/speech_corpus.py: markdown, tables, code, links, emoji in four languages), cleaned as the
proxy cleans them: alone, with the example pronunciations, and sentences with no markup at all (the
common case, which takes the fast path). The splitter itself (pySBD) is measured too, for scale.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "app"))
sys.path.insert(0, str(ROOT / "tests"))

from speech_corpus import CORPUS  # noqa: E402

from wyoming_openai.speech_text import SpeechText, load_file  # noqa: E402
from wyoming_openai.streaming import SentenceSplitter  # noqa: E402

PLAIN = [
    "The front door is locked and the garage door is closed.",
    "All the lights downstairs are off, except the one in the hallway.",
    "Die Temperatur im Wohnzimmer beträgt einundzwanzig Grad.",
    "Tomorrow will be sunny with a high of twenty four degrees.",
]


def per_call_us(function, items: list[tuple[str, str]], rounds: int) -> list[float]:
    """Microseconds per call, one figure per round (median and worst reported)."""
    for language, text in items:  # warm up: each language's pronunciations compile on first use
        function(text, language)
    figures = []
    for _ in range(rounds):
        began = time.perf_counter()
        for language, text in items:
            function(text, language)
        figures.append((time.perf_counter() - began) / len(items) * 1e6)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    sentences = []
    for language, text in CORPUS:
        splitter = SentenceSplitter(language)
        sentences += [(language, piece) for piece in splitter.push(text) + splitter.flush()]
    plain = [("en", text) for text in PLAIN]
    cleaner = SpeechText()
    pronouncing = SpeechText(pronunciations=load_file(str(ROOT / "docs" / "pronunciations.example.yaml")))
    rows = [
        ("markdown sentences, cleaned", cleaner, sentences),
        ("markdown sentences, cleaned + pronunciations", pronouncing, sentences),
        ("plain sentences, cleaned", cleaner, plain),
        ("plain sentences, cleaned + pronunciations", pronouncing, plain),
        ("whole answers, cleaned", cleaner, CORPUS),
    ]
    print(f"{len(sentences)} sentences from {len(CORPUS)} answers, {args.rounds} rounds")
    for label, function, items in rows:
        figures = per_call_us(function, items, args.rounds)
        print(f"{label:48s} median {statistics.median(figures):6.1f} µs per call, worst round {max(figures):6.1f}")

    def split(text: str, language: str) -> None:
        splitter = SentenceSplitter(language)
        splitter.push(text)
        splitter.flush()

    figures = per_call_us(split, CORPUS, max(1, args.rounds // 20))
    print(f"{'for scale: pySBD splitting a whole answer':48s} median {statistics.median(figures):6.1f} µs per call")


if __name__ == "__main__":
    main()
