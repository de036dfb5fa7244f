"""Answers as LLM conversation agents write them (written for these tests), and what must not be spoken.

Each is (language, text). They mix what Home Assistant's agents send: emphasis (nested, and
around punctuation), headings, lists, task lists, tables, quotes, code fences and inline code,
links of every kind, bare URLs, emoji sequences (ZWJ families, flags, skin tones, keycaps), HTML,
footnotes, numbers with units.
"""

from __future__ import annotations

import re
import unicodedata

CORPUS: list[tuple[str, str]] = [
    (
        "en",
        "**Done!** I turned on the _living room_ lamp 💡. See [the manual](https://www.home-assistant.io/docs/lights) "
        "if it flickers.",
    ),
    (
        "en",
        "## Your evening\n\nHere is what I did:\n\n- Locked the **front door** 🔒\n- Closed the *garage* (it was open)\n"
        "- Set the heating to 19 °C\n\n> **Note:** the back window is still open ⚠️.\n\nSleep well! 😴",
    ),
    (
        "en",
        "| Room | Temperature | Humidity |\n|:-----|------------:|:--------:|\n| Kitchen | 21.5 °C | 45 % |\n"
        "| Bedroom | 18 °C | 50 % |\n\nThe ***warmest*** room is the kitchen.",
    ),
    (
        "en",
        "To restart, run `ha core restart`. Or add this automation:\n\n```yaml\nalias: Porch light\ntrigger:\n"
        "  - platform: sun\n    event: sunset\n```\n\nThe entity is `light.front_porch`, and 3 * 4 = 12 lamps.",
    ),
    (
        "en",
        "Check https://www.example.com/status?id=42. Also www.weather.gov/forecast, or <https://github.com/home-assistant>."
        ' It\'s ~~broken~~ **fixed _now_**, see [this][1].\n\n[1]: https://community.home-assistant.io/t/123 "Forum"',
    ),
    (
        "de",
        "### Wetter für morgen ☀️\n\n* **Höchstwert:** 24 °C\n* **Wind:** 15 km/h aus Südwest\n"
        "* **Regenrisiko:** 10 %\n\nDr. Müller sagt: *Perfektes Grillwetter!* 🍖 Mehr unter https://www.dwd.de/DE/wetter.",
    ),
    (
        "fr",
        "Voici la recette 👨‍🍳 :\n\n1. Préchauffez le four à **180 °C**.\n2. Mélangez la farine et les œufs.\n"
        "3. Enfournez pendant _25 minutes_.\n\nBon appétit ! 🇫🇷 Source : [Marmiton](https://www.marmiton.org/recettes).",
    ),
    (
        "es",
        "# Resumen del día\n\n¡Hola! 👋🏽 Hoy has caminado **8,5 km** y dormido *7 h*.\n\n"
        "> Consejo: bebe más agua 💧.\n\n- [x] Luces apagadas\n- [ ] Alarma activada 1️⃣\n\n¿Necesitas algo más?",
    ),
    (
        "en",
        "The <b>washing machine</b> is done.<br>It used 1.2 kWh&nbsp;today.[^1] <!-- internal note -->\n\n"
        "[^1]: Measured by the *smart plug*.",
    ),
    (
        "en",
        "Sure! 🎉 The ***living room***, **kitchen** and _hall_ lights are on. ✅ __Energy__ use: 1,250 W → "
        "about 30 % of your limit. Details: https://my.home/energy.",
    ),
    (
        "de",
        "Die Haustür ist **verriegelt**. 🔐 Das Fenster im *Bad* ist offen – soll ich die Heizung (aktuell 21,5 °C) "
        "ausschalten? Antwort mit **ja** oder **nein**.",
    ),
    (
        "es",
        "**¡Listo!** Encendí la luz de la *cocina* 💡 y puse la temperatura a **22 °C**. "
        "Más información en [la documentación](https://www.home-assistant.io/docs/es).",
    ),
]

# What the engine must not be given: markdown marks, URLs, HTML and the corpus's pictographs.
# An asterisk between two numbers is a multiplication; an underscore inside a word (an entity id) is a word.
_MULTIPLICATION = re.compile(r"\d ?\* ?\d")
_MARK = re.compile(
    r"[*`|\[\]<>#]|~~|://|www\.|&nbsp;|(?<!\w)_|_(?!\w)|(?:^|[.!?:] )[-+] ",
)


def pictographs(text: str) -> set[str]:
    """The emoji and symbols of ``text`` that a voice should not read (° © ® ™ are kept)."""
    return {
        char
        for char in text
        if ord(char) >= 0x2000 and unicodedata.category(char) in ("So", "Sk", "Cf", "Mn", "Sm") and char not in "°©®™"
    } | {char for char in text if char in "\u200d\ufe0f\u20e3"}


def leftovers(spoken: str, written: str) -> list[str]:
    """The marks, URLs and pictographs of ``written`` that reached ``spoken``."""
    found = _MARK.findall(_MULTIPLICATION.sub("", spoken))
    found += sorted(pictographs(written) & set(spoken))
    return found


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)
