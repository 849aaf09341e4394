"""Small JSON helpers shared by the record modules."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from lamina.errors import ImageFormatError

__all__ = ["dumps", "format_time", "load_object", "parse_time"]


#: a lone surrogate: one byte of invalid UTF-8 decoded with ``surrogateescape``
_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(obj: Any) -> bytes:
    """Canonical compact JSON (key order as given, UTF-8, no spaces).

    Text that held invalid UTF-8 (a Dockerfile's bytes, decoded with
    ``surrogateescape``) is written as Go's encoding/json writes it: each invalid
    byte becomes U+FFFD.
    """
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def load_object(data: bytes | str | dict[str, Any], what: str) -> dict[str, Any]:
    """Decode ``data`` into a JSON object, or raise ImageFormatError naming ``what``."""
    if isinstance(data, dict):
        return data
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageFormatError(
            f"{what} is not valid JSON: {exc}",
            hint="the blob is corrupt, truncated, or not what its media type says",
        ) from exc
    if not isinstance(obj, dict):
        raise ImageFormatError(
            f"{what} must be a JSON object, got {type(obj).__name__}",
            hint="the blob is corrupt or not what its media type says",
        )
    return obj


def format_time(dt: datetime) -> str:
    """RFC 3339 in UTC as Go writes it (``2024-01-02T03:04:05Z``, fraction trimmed)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    s = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        s += "." + f"{dt.microsecond:06d}".rstrip("0")
    return s + "Z"


def parse_time(s: str) -> datetime:
    """Parse RFC 3339 (up to nanoseconds, as Go writes); raise ImageFormatError."""
    text = s.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python handles at most 6 fractional digits
    if "." in text:
        head, _, frac = text.partition(".")
        digits = ""
        i = 0
        while i < len(frac) and frac[i].isdigit():
            digits += frac[i]
            i += 1
        text = f"{head}.{(digits + '000000')[:6]}{frac[i:]}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ImageFormatError(
            f"invalid timestamp {s!r}", hint="timestamps must be RFC 3339"
        ) from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt
