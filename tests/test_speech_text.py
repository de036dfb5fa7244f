"""Written text -> speakable text: the corpus whole, and cut at every position as a stream arrives."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import APP
from speech_corpus import CORPUS, leftovers, words

from wyoming_openai.speech_text import Pronunciation, SpeechText, clean_text, load_file, parse_lines, parse_mapping
from wyoming_openai.streaming import SentenceSplitter

EXAMPLE = APP.parent / "docs" / "pronunciations.example.yaml"

# What each corpus answer must become, read and checked by hand.
SPOKEN = [
    "Done! I turned on the living room lamp. See the manual if it flickers.",
    "Your evening. Here is what I did: Locked the front door. Closed the garage (it was open). Set the heating to "
    "19 °C. Note: the back window is still open. Sleep well!",
    "Room, Temperature, Humidity. Kitchen, 21.5 °C, 45 %. Bedroom, 18 °C, 50 %. The warmest room is the kitchen.",
    "To restart, run ha core restart. Or add this automation: alias: Porch light. trigger: platform: sun. event: "
    "sunset. The entity is light.front_porch, and 3 * 4 = 12 lamps.",
    "Check example.com. Also weather.gov, or github.com. It's broken fixed now, see this.",
    "Wetter für morgen. Höchstwert: 24 °C. Wind: 15 km/h aus Südwest. Regenrisiko: 10 %. Dr. Müller sagt: "
    "Perfektes Grillwetter! Mehr unter dwd.de.",
    "Voici la recette: 1. Préchauffez le four à 180 °C. 2. Mélangez la farine et les œufs. 3. Enfournez pendant "
    "25 minutes. Bon appétit! Source: Marmiton.",
    "Resumen del día. ¡Hola! Hoy has caminado 8,5 km y dormido 7 h. Consejo: bebe más agua. Luces apagadas. "
    "Alarma activada 1. ¿Necesitas algo más?",
    "The washing machine is done. It used 1.2 kWh today. Measured by the smart plug.",
    "Sure! The living room, kitchen and hall lights are on. Energy use: 1,250 W about 30 % of your limit. "
    "Details: my.home.",
    "Die Haustür ist verriegelt. Das Fenster im Bad ist offen – soll ich die Heizung (aktuell 21,5 °C) "
    "ausschalten? Antwort mit ja oder nein.",
    "¡Listo! Encendí la luz de la cocina y puse la temperatura a 22 °C. Más información en la documentación.",
]
SPEECH = SpeechText()


def test_the_corpus_is_spoken_as_written_by_hand():
    assert len(SPOKEN) == len(CORPUS)
    for (language, written), spoken in zip(CORPUS, SPOKEN, strict=True):
        assert SPEECH(written, language) == spoken
        assert not leftovers(spoken, written)


def stream(language: str, chunks: list[str], max_chars: int | None = None) -> list[str]:
    """The pieces the streaming splitter cuts from ``chunks`` and makes speakable, as sent upstream."""
    splitter = SentenceSplitter(language, max_chars=max_chars, prepare=lambda text: SPEECH(text, language))
    pieces = [piece for chunk in chunks for piece in splitter.push(chunk)]
    return pieces + splitter.flush()


def check_stream(pieces: list[str], written: str, spoken: str) -> None:
    for piece in pieces:
        assert piece.strip(), pieces
        assert not leftovers(piece, written), (piece, pieces)
    assert words(" ".join(pieces)) == words(spoken), pieces


@pytest.mark.parametrize("max_chars", [None, 40], ids=["sentences", "max-40-chars"])
@pytest.mark.parametrize(("language", "written", "spoken"), [(*c, s) for c, s in zip(CORPUS, SPOKEN, strict=True)],
                         ids=[f"{i}-{c[0]}" for i, c in enumerate(CORPUS)])  # fmt: skip
def test_cut_in_two_at_every_position(language, written, spoken, max_chars):
    for position in range(1, len(written)):
        check_stream(stream(language, [written[:position], written[position:]], max_chars), written, spoken)


@pytest.mark.parametrize(("language", "written", "spoken"), [(*c, s) for c, s in zip(CORPUS, SPOKEN, strict=True)],
                         ids=[f"{i}-{c[0]}" for i, c in enumerate(CORPUS)])  # fmt: skip
def test_one_character_per_chunk(language, written, spoken):
    check_stream(stream(language, list(written)), written, spoken)
    check_stream(stream(language, list(written), max_chars=25), written, spoken)


def test_a_sentence_is_not_held_back_by_its_closing_marker():
    splitter = SentenceSplitter("en", prepare=SPEECH)
    assert splitter.push("**Done") == []
    assert splitter.push("!**") == []
    assert splitter.push(" I") == ["Done!"]  # as soon as the next sentence starts
    assert splitter.push(" turned on the *kit") == []
    assert splitter.push("chen* light. The") == ["I turned on the kitchen light."]


def test_a_url_is_never_cut():
    splitter = SentenceSplitter("en", prepare=SPEECH)
    # pySBD ends a sentence at "?": the URL's tail would be read as words of its own.
    pieces = splitter.push("See https://example.com/a?id=42. Then") + splitter.flush()
    assert pieces == ["See example.com.", "Then"]


def test_a_piece_with_nothing_to_say_is_dropped():
    splitter = SentenceSplitter("en", prepare=SPEECH)
    pieces = splitter.push("👍\n\n---\n\n```python\n") + splitter.push("x = 1\n```\nBye") + splitter.flush()
    assert pieces == ["x = 1", "Bye"]


# --- the rules, one by one -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("Plain text stays as it is.", "Plain text stays as it is."),
        ("  Spaces\t\tand\u00a0tabs  ", "Spaces and tabs"),
        ("***Very*** **bold** *it* _it_ __bold__ ~~gone~~", "Very bold it it bold gone"),
        ("snake_case, __init__ and 2*3 or 2 * 3", "snake_case, init and 2*3 or 2 * 3"),
        ("# Title\nText", "Title. Text"),
        ("Title\n=====\nText", "Title. Text"),
        ("- one\n- two\n  - nested\n* star\n+ plus", "one. two. nested. star. plus"),
        ("- [ ] open\n- [x] done", "open. done"),
        ("> quoted\n>> twice", "quoted. twice"),
        ("A list:\n1. first\n2. second", "A list: 1. first. 2. second"),
        ("| a | b |\n|---|---|\n| 1 | |", "a, b. 1"),
        ("Use `code` here.\n```sh\nls -l\n```", "Use code here. ls -l"),
        ('![a photo](https://x.org/p.png) [text](https://x.org "title") [ref][1] [^2]', "a photo text ref"),
        ("[Wikipedia](https://en.wikipedia.org/wiki/Foo_(bar)) says", "Wikipedia says"),
        ("Go to https://user:pw@www.Example.org:8123/a/b?c=d#e, now.", "Go to Example.org, now."),
        ("See http://localhost:8123.", "See localhost."),
        ("<p>One</p><p>Two<br/>three</p> a &lt; b &amp; c", "One. Two. three. a < b & c"),
        ("Happy 🎉🎉 birthday 👨‍👩‍👧‍👦! 🇩🇪 #️⃣ 👍🏿 ☀️ ❤️ ✅ ⭐ → ▶", "Happy birthday!"),
        ("© 2025 ACME™, 21 °C", "© 2025 ACME™, 21 °C"),
        (r"Escaped \*stars\* and \_lines\_", "Escaped stars and lines"),
        ("**", ""),
        ("今日は**晴れ**です。", "今日は晴れです。"),
    ],
)
def test_rules(written, spoken):
    assert clean_text(written) == spoken


def test_urls_can_be_dropped():
    assert clean_text("Read https://www.example.com/a or www.b.org, then [c](https://c.org).", "drop") == (
        "Read or, then c."
    )


def test_nothing_to_say_is_empty_and_cleaning_can_be_switched_off():
    assert SPEECH("🎉 **") == ""
    assert SPEECH("...") == ""
    raw = SpeechText(clean=False)
    assert raw("<speak>**Hi** 🎉</speak>") == "<speak>**Hi** 🎉</speak>"


# --- pronunciations ------------------------------------------------------------------------------


def test_whole_words_symbols_regexes_and_languages():
    rules = parse_lines([
        "HA=Home Assistant", "°C=degrees Celsius", "de:°C=Grad Celsius", "km/h=kilometres per hour",
        r"/(\d+) ?%/=\1 percent", "de-CH:Velo=Fahrrad", "# a comment", "",
    ])  # fmt: skip
    speech = SpeechText(pronunciations=rules)
    text = "HA: 21°C, 30 km/h, 50% humidity. HAT and SHA stay. (HA)"
    assert speech(text, "en") == (
        "Home Assistant: 21 degrees Celsius, 30 kilometres per hour, 50 percent humidity. HAT and SHA stay. "
        "(Home Assistant)"
    )
    assert speech("HA: 21°C", "de-DE") == "Home Assistant: 21 Grad Celsius"
    assert speech("Velo", "de") == "Velo" and speech("Velo", "de_CH") == "Fahrrad"
    assert speech("21°C", None) == "21 degrees Celsius"


def test_pronunciations_apply_after_cleaning_and_without_it():
    rules = parse_lines(["HA=Home Assistant"])
    assert SpeechText(pronunciations=rules)("**HA** is *on*") == "Home Assistant is on"
    assert SpeechText(clean=False, pronunciations=rules)("**HA**") == "**Home Assistant**"


def test_longest_word_first():
    speech = SpeechText(pronunciations=parse_lines(["km=kilometres", "km/h=kilometres per hour"]))
    assert speech("5 km and 5 km/h") == "5 kilometres and 5 kilometres per hour"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("no equals sign", "expected WRITTEN=SPOKEN"),
        ("=nothing", "nothing to replace"),
        ("/(unclosed/=x", "bad regular expression"),
        (r"/(\d+)/=\2", "bad regular expression"),
    ],
)
def test_bad_lines_say_what_is_wrong(line, message):
    with pytest.raises(ValueError, match=message):
        parse_lines([line])


def test_mapping_form():
    rules = parse_mapping({"HA": "Home Assistant", "de": {"°C": "Grad Celsius"}, "/(\\d+)%/": "\\1 percent"})
    assert rules == (
        Pronunciation("HA", "Home Assistant"),
        Pronunciation("°C", "Grad Celsius", "de"),
        Pronunciation("(\\d+)%", "\\1 percent", regex=True),
    )
    with pytest.raises(ValueError, match="must map to the words to say"):
        parse_mapping({"HA": ["a", "list"]})


def test_the_example_file_loads_and_does_what_it_says():
    speech = SpeechText(pronunciations=load_file(str(EXAMPLE)))
    assert speech("HA says it is 21 °C, 30 km/h and 40% humidity.", "en") == (
        "Home Assistant says it is 21 degrees Celsius, 30 kilometers per hour and 40 percent humidity."
    )
    assert (
        speech("HA: 21 °C, 30 km/h, 40%.", "de")
        == "Home Assistant: 21 Grad Celsius, 30 Kilometer pro Stunde, 40 Prozent."
    )
    assert speech("21 °C, 30 km/h, 40%.", "fr") == "21 degrés Celsius, 30 kilomètres par heure, 40 pour cent."
    assert speech("21 °C, 30 km/h, 40%.", "es") == "21 grados Celsius, 30 kilómetros por hora, 40 por ciento."


def test_a_file_with_yaml_words_that_look_like_booleans(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text("no: number\non: upon\n1.0: one point oh\n")
    assert load_file(str(path)) == (
        Pronunciation("no", "number"),
        Pronunciation("on", "upon"),
        Pronunciation("1.0", "one point oh"),
    )
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_file(str(path))
    with pytest.raises(ValueError, match="cannot read"):
        load_file(str(tmp_path / "missing.yaml"))
