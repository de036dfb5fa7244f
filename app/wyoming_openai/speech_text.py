"""Written text → speakable text, then the user's pronunciations.

LLM answers are written for a screen: markdown, links, bare URLs, emoji, now and then HTML. Many
speech engines read the asterisks, spell the URL or say "light bulb". ``clean_text`` keeps the words
and drops the rest; ``Pronouncer`` then replaces what the engine gets wrong ("HA", "°C", a name).

Regular expressions rather than a markdown parser: they run on the sentence pieces of a streamed
answer, where emphasis is often cut in two ("**Done!" | "** I turned on …" is how the sentence
splitter cuts "**Done!** I turned on …"). A parser keeps an unclosed marker as literal text; these
rules drop every marker whether or not its partner is in the same piece, so pieces cleaned one by
one say the same words as the whole text cleaned at once. They also cost a few µs per sentence
(bench/speech_text.py), where a parser would add a tree walk and still leave URLs and emoji to do.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

URL_CHOICES = ("host", "drop")

# Pictographs by Unicode block rather than an emoji list: the blocks Unicode reserves for them
# (1F000–1FAFF) already hold the emoji of future versions, and a character class costs one regex.
# Arrows, geometric shapes (▶ ● ■, used as bullets), miscellaneous symbols and dingbats (☀ ✅ ❤),
# the emoji of Miscellaneous Technical (⌚ ⏰), the joiners and selectors that glue emoji sequences
# (ZWJ, VS16, keycap, tags). © ® ™ stay: engines say them.
_PICTOGRAPH_CLASS = (
    "\u2022\u2139\u2190-\u21ff\u2300-\u23ff\u25a0-\u27bf\u2900-\u297f\u2b00-\u2bff\u3030\u303d\u3297\u3299"
    "\u200d\u20e3\ufe00-\ufe0f\U0001f000-\U0001fbff\U000e0020-\U000e007f"
)
_PICTOGRAPHS = re.compile(f"[#*]\ufe0f?\u20e3|[{_PICTOGRAPH_CLASS}]+")  # the keycaps #️⃣ *️⃣ whole

# Anything worth a closer look; most sentences have none of it and only have their spaces trimmed.
_NEEDS_WORK = re.compile(rf"[\n\r\t\f\v\xa0*_`#>|\[\]<~&\\{_PICTOGRAPH_CLASS}]|://|(?i:www\.)|  |^\s*[-+]\s")

# Whole lines without words: code fences (with their language), rules and setext underlines, table
# delimiter rows, link reference definitions ("[1]: https://…").
_DROP_LINE = re.compile(
    r"^[ \t]*(?:"
    r"(?:```|~~~)[^\n]*"
    r"|[-:|=*_ \t]*[-=*_][-:|=*_ \t]*"
    r"|\[[^\]\n^][^\]\n]*\]:[ \t]*<?\S+>?(?:[ \t]+(?:\"[^\"\n]*\"|'[^'\n]*'|\([^)\n]*\)))?"
    r")[ \t]*$",
    re.MULTILINE,
)
# What starts a line: block quotes, a heading's hashes, a bullet and its task box, a footnote's label. A piece cut from a
# stream starts a "line" too: a sentence does not start with "- " mid-line, so nothing is lost.
_LINE_START = re.compile(
    r"^[ \t]*(?:>[ \t]?)*[ \t]*(?:#{1,6}(?=[ \t]|$)|[-*+][ \t]+(?:\[[ xX]\][ \t]+)?|\[\^[^\]\n]*\]:)?", re.MULTILINE
)
_ESCAPE = re.compile(r"\\(?=[\\`*_{}\[\]()#+\-.!|~<>])")
# [text](url "title"), ![alt](url), [text][ref] -> text; footnote marks; the tail of a link whose
# "[" was in an earlier piece; the brackets left over.
_LINK = re.compile(r"!?\[([^\[\]\n]*)\](?:\((?:[^()\s]|\([^()\s]*\))*(?:[ \t]+\"[^\"\n]*\")?\)|\[[^\[\]\n]*\])")
_FOOTNOTE = re.compile(r"\[\^[^\]\s]*\]")
_LINK_TAIL = re.compile(r"\]\((?:[^()\s]|\([^()\s]*\))*\)?")
_BRACKET = re.compile(r"!?\[|\]")
_URL = re.compile(r"<?\b(?:https?://|www\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]>?", re.IGNORECASE)
_URL_HOST = re.compile(r"^<?(?:[a-z][a-z0-9+.-]*://)?(?:[^@/\s]*@)?(?:www\.)?([^/:?#>\s]*)", re.IGNORECASE)
_HTML = re.compile(r"<!--(?:.*?-->|.*)|<(/?)([A-Za-z][\w-]*)(?:\s[^<>]*)?/?>", re.DOTALL)
_HTML_BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table"})
# Emphasis markers. An asterisk between two numbers is a multiplication and stays; an underscore
# inside a word (snake_case) stays.
_ASTERISKS = re.compile(r"(?<!\d)(?<!\d )\*+|\*+(?! ?\d)")
_UNDERSCORES = re.compile(r"(?<!\w)_+|_+(?!\w)")
_PIPE_EDGE = re.compile(r"^[ \t]*\||\|[ \t]*$", re.MULTILINE)
_PIPE = re.compile(r"[ \t]*\|[ \t]*")
_EMPTY_CELLS = re.compile(r"(?:[ \t]*,)+[ \t]*$", re.MULTILINE)
# A line that ends without punctuation (a heading, a list item, a table row) ends a sentence.
_LINE_BREAK = re.compile(r"(?<=[^\s.!?…:;,。！？、])[ \t]*\n\s*")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r" (?=[.,;:!?…](?: |$))")
_REPEATED_PUNCTUATION = re.compile(r"([.,;:!?])(?: [.,;:])+")
_LEADING_PUNCTUATION = re.compile(r"^[ .,;:]+")
_WORD = re.compile(r"\w")


def clean_text(text: str, urls: str = "host") -> str:
    """The words of ``text`` without markdown, links, URLs (their host name, or nothing with
    ``urls="drop"``), emoji and HTML, on one line with single spaces."""
    if not _NEEDS_WORK.search(text):
        return text.strip()
    if "&" in text:
        text = html.unescape(text)
    text = _PICTOGRAPHS.sub("", text)
    if "\\" in text:
        text = _ESCAPE.sub("", text)
    text = _DROP_LINE.sub("", text)
    text = _LINE_START.sub("", text)
    if "[" in text or "]" in text:
        text = _BRACKET.sub("", _LINK_TAIL.sub("", _FOOTNOTE.sub("", _LINK.sub(r"\1", text))))
    if "://" in text or "www." in text.lower():
        text = _URL.sub("" if urls == "drop" else _url_host, text)
    if "<" in text:
        text = _HTML.sub(_html_tag, text)
    text = text.replace("`", "").replace("~~", "")
    if "*" in text:
        text = _ASTERISKS.sub("", text)
    if "_" in text:
        text = _UNDERSCORES.sub("", text)
    if "|" in text:
        text = _EMPTY_CELLS.sub("", _PIPE.sub(", ", _PIPE_EDGE.sub("", text)))
    text = _SPACES.sub(" ", _LINE_BREAK.sub(". ", text.strip()))
    text = _REPEATED_PUNCTUATION.sub(r"\1", _SPACE_BEFORE_PUNCTUATION.sub("", text))
    return _LEADING_PUNCTUATION.sub("", text).rstrip()


def _url_host(match: re.Match[str]) -> str:
    found = _URL_HOST.match(match.group())
    return found.group(1) if found else ""


def _html_tag(match: re.Match[str]) -> str:
    return "\n" if (match.group(2) or "").lower() in _HTML_BREAKS else ""


def speakable(text: str) -> bool:
    """Whether ``text`` has anything a voice can say (a letter or a digit)."""
    return _WORD.search(text) is not None


# --- pronunciations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pronunciation:
    """``written`` is said as ``spoken``: a whole word (or symbol), or a regular expression."""

    written: str
    spoken: str
    language: str | None = None  # None: every language; "de" covers de-DE and de-CH too
    regex: bool = False

    def applies_to(self, language: str) -> bool:
        """``language`` normalised (lower case, "-")."""
        return self.language is None or language == self.language or language.startswith(self.language + "-")


_LINE_LANGUAGE = re.compile(r"^([a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?):(?=\S)")
_LINE_REGEX = re.compile(r"^/(.+)/=(.*)$", re.DOTALL)


def _language(code: str) -> str:
    return code.strip().lower().replace("_", "-")


def _rule(written: str, spoken: str, language: str | None, where: str) -> Pronunciation:
    if len(written) > 2 and written.startswith("/") and written.endswith("/"):
        pattern = written[1:-1]
        try:
            re.compile(pattern).sub(spoken, "")  # compiles the replacement too: \2 without a group fails here
        except re.error as err:
            raise ValueError(f"{where}: bad regular expression {written!r} -> {spoken!r}: {err}") from None
        return Pronunciation(pattern, spoken, language, regex=True)
    if not written.strip():
        raise ValueError(f"{where}: nothing to replace (an empty word)")
    return Pronunciation(written.strip(), spoken.strip(), language)


def parse_lines(lines: Iterable[str], where: str = "pronunciation") -> tuple[Pronunciation, ...]:
    """``WRITTEN=SPOKEN`` lines, ``/REGEX/=SPOKEN`` for a regular expression; a leading ``de:``
    limits a line to a language. Blank lines and lines starting with # are skipped."""
    rules = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        language = None
        if found := _LINE_LANGUAGE.match(text):
            language, text = _language(found.group(1)), text[found.end() :]
        if found := _LINE_REGEX.match(text):
            written, spoken = f"/{found.group(1)}/", found.group(2)
        else:
            written, sep, spoken = text.partition("=")
            if not sep:
                raise ValueError(f"{where}: expected WRITTEN=SPOKEN, got {line.strip()!r}")
        rules.append(_rule(written, spoken, language, where))
    return tuple(rules)


def parse_mapping(mapping: Mapping[Any, Any], where: str = "pronunciations") -> tuple[Pronunciation, ...]:
    """``{written: spoken}`` for every language, and ``{language: {written: spoken}}`` for one."""
    rules = []
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            language = _language(str(key))
            for written, spoken in value.items():
                if isinstance(spoken, (Mapping, list)) or spoken is None:
                    raise ValueError(f"{where}: {key}: {written!r} must map to the words to say")
                rules.append(_rule(str(written), str(spoken), language, where))
        elif isinstance(value, list) or value is None:
            raise ValueError(f"{where}: {key!r} must map to the words to say, or be a language's section")
        else:
            rules.append(_rule(str(key), str(value), None, where))
    return tuple(rules)


def load_file(path: str) -> tuple[Pronunciation, ...]:
    """A YAML file of pronunciations (see docs/pronunciations.example.yaml)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    try:
        # Every scalar a string: "no", "on" or "1.0" are words to replace here, not booleans or numbers.
        loaded = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader builds only str, list, dict
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ValueError(f"{path} is not valid YAML{f' at line {mark.line + 1}' if mark else ''}") from None
    if loaded is None or loaded == "":
        return ()
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a mapping of written: spoken")
    return parse_mapping(loaded, path)


class Pronouncer:
    """Applies pronunciations: the regular expressions in order, then the words, all in one pass."""

    def __init__(self, rules: Iterable[Pronunciation]) -> None:
        self.rules = tuple(rules)
        self._languages = {rule.language for rule in self.rules if rule.language}
        self._compiled: dict[tuple[str, ...], tuple[list[tuple[re.Pattern[str], str]], re.Pattern[str] | None, dict[str, str]]] = {}  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.rules)

    def apply(self, text: str, language: str | None) -> str:
        regexes, words, spoken = self._for(_language(language or ""))
        for pattern, replacement in regexes:
            text = pattern.sub(replacement, text)
        if words is not None:
            text = words.sub(lambda match: _fit(match, spoken[match.group()]), text)
        return text

    def _for(self, language: str):
        # Keyed by the rule languages that apply, so arbitrary language tags from clients add no entries.
        key = tuple(sorted(code for code in self._languages if language == code or language.startswith(code + "-")))
        compiled = self._compiled.get(key)
        if compiled is None:
            rules = [rule for rule in self.rules if rule.language is None or rule.language in key]
            regexes = [(re.compile(rule.written), rule.spoken) for rule in rules if rule.regex]
            spoken: dict[str, str] = {}
            # A language's own rule wins over one for every language.
            for rule in sorted((r for r in rules if not r.regex), key=lambda r: r.language is not None):
                spoken[rule.written] = rule.spoken
            alternatives = "|".join(_whole(word) for word in sorted(spoken, key=len, reverse=True))
            compiled = self._compiled[key] = (regexes, re.compile(alternatives) if spoken else None, spoken)
        return compiled


def _whole(word: str) -> str:
    """The word, not inside another: "HA" is not replaced in "HAT"; "°C" is in "21°C"."""
    return (r"(?<!\w)" if _WORD.match(word[0]) else "") + re.escape(word) + (r"(?!\w)" if _WORD.match(word[-1]) else "")


def _fit(match: re.Match[str], spoken: str) -> str:
    """``spoken`` with a space where it would otherwise run into a neighbouring word ("21 degrees")."""
    text = match.string
    start, end = match.span()
    if spoken and start > 0 and _WORD.match(text[start - 1]) and _WORD.match(spoken[0]):
        spoken = " " + spoken
    if spoken and end < len(text) and _WORD.match(text[end]) and _WORD.match(spoken[-1]):
        spoken += " "
    return spoken


class SpeechText:
    """What the speech upstream is given: the text cleaned (unless switched off), then pronounced."""

    def __init__(self, clean: bool = True, urls: str = "host", pronunciations: Iterable[Pronunciation] = ()) -> None:
        self.clean = clean
        self.urls = urls
        self.pronouncer = Pronouncer(pronunciations)

    def __call__(self, text: str, language: str | None = None) -> str:
        if self.clean:
            text = clean_text(text, self.urls)
        if self.pronouncer:
            text = self.pronouncer.apply(text, language)
        if self.clean and not speakable(text):
            return ""  # only markers, emoji or punctuation: nothing to say
        return text
