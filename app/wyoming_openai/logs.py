"""Logging: text or JSON lines, rotation, and redaction of every secret at every level."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Iterable

from .settings import Settings

TRACE = 5
logging.addLevelName(TRACE, "TRACE")


class RedactingFormatter(logging.Formatter):
    """Formats, then blanks out each secret wherever it appears: message, arguments, traceback."""

    def __init__(self, secrets: Iterable[str], json_lines: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        if self.json_lines:
            entry = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info:
                entry["exception"] = self.formatException(record.exc_info)
            text = json.dumps(entry, ensure_ascii=False)
        else:
            text = super().format(record)
        return self.redact(text)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


def setup_logging(settings: Settings) -> None:
    level = TRACE if settings.log_level == "TRACE" else getattr(logging, settings.log_level)
    formatter = RedactingFormatter(settings.secrets, json_lines=settings.log_format == "json")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings.log_file:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                settings.log_file,
                maxBytes=settings.log_max_bytes,
                backupCount=settings.log_backup_count,
                encoding="utf-8",
            )
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    # Library chatter stays out of our DEBUG unless TRACE is asked for.
    for noisy in ("asyncio", "aiohttp", "zeroconf"):
        logging.getLogger(noisy).setLevel(level if level == TRACE else max(level, logging.INFO))
