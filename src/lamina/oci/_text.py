"""Quoting untrusted text (entry names, paths) in messages, at a bounded length."""

from __future__ import annotations

__all__ = ["MAX_QUOTED", "shorten"]

#: longest name (or other untrusted text) quoted whole in a message
MAX_QUOTED = 200


def shorten(text: str, limit: int = MAX_QUOTED) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis and the full length)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"
