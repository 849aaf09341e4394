"""Logging set-up with kaniko's ``--verbosity``, ``--log-format`` and ``--log-timestamp``.

Formats follow what kaniko's logrus configuration prints:

* ``color``: ``INFO[0003] message`` with the level coloured (kaniko's default);
* ``text``: ``time="..." level=info msg="message"``;
* ``json``: one JSON object per line with ``level``, ``msg`` and ``time``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

__all__ = ["TRACE", "configure_logging", "level_number"]

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL + 10,
}

_NAMES = {
    TRACE: "trace",
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}

_COLORS = {
    TRACE: "37",
    logging.DEBUG: "37",
    logging.INFO: "36",
    logging.WARNING: "33",
    logging.ERROR: "31",
    logging.CRITICAL: "31",
}

_START_WALL = time.time()


def level_number(name: str) -> int:
    return _LEVELS[name.lower()]


def _level_name(levelno: int) -> str:
    for threshold in sorted(_NAMES, reverse=True):
        if levelno >= threshold:
            return _NAMES[threshold]
    return "trace"


def _iso(created: float) -> str:
    return (
        datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


class ColorFormatter(logging.Formatter):
    def __init__(self, *, timestamp: bool, color: bool) -> None:
        super().__init__()
        self.timestamp = timestamp
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        name = _level_name(record.levelno).upper()[:4]
        if self.timestamp:
            stamp = _iso(record.created)
        else:
            stamp = f"{int(record.created - _START_WALL):04d}"
        head = f"\x1b[{_COLORS.get(record.levelno, '37')}m{name}\x1b[0m" if self.color else name
        text = f"{head}[{stamp}] {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage().replace("\\", "\\\\").replace('"', '\\"')
        text = f'time="{_iso(record.created)}" level={_level_name(record.levelno)} msg="{msg}"'
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "level": _level_name(record.levelno),
            "msg": record.getMessage(),
            "time": _iso(record.created),
        }
        for key in ("code", "hint", "step"):
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(
    verbosity: str, log_format: str, timestamp: bool, *, stream: TextIO | None = None
) -> logging.Logger:
    """Configure the ``lamina`` logger tree; returns it."""
    fmt = log_format.lower()
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    elif fmt == "text":
        formatter = TextFormatter()
    else:
        formatter = ColorFormatter(timestamp=timestamp, color=True)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    logger = logging.getLogger("lamina")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level_number(verbosity))
    logger.propagate = False
    return logger
