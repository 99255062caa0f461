"""Accent- and case-insensitive text for search: the same folding on the index and the query."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")


def fold(text: str) -> str:
    """NFD, drop the combining marks (τόνος, διαλυτικά), casefold (final ς becomes σ).

    >>> fold("ΔΗΜΟΤΙΚΌ Σχολείο") == fold("δημοτικο σχολειο")
    True
    """
    decomposed = unicodedata.normalize("NFD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", stripped).casefold()


def terms(query: str, limit: int = 8) -> list[str]:
    """The folded words of QUERY (at most LIMIT), each safe as an FTS5 string: words only."""
    return _WORD.findall(fold(query))[:limit]


def match_expression(query: str, limit: int = 8) -> str:
    """An FTS5 MATCH expression: every word must occur, as a word or a word's beginning.

    Each term is a quoted FTS5 string of word characters only, so no FTS5 operator or column
    filter can come from the user; the expression itself is still passed as a bound parameter.
    """
    return " ".join(f'"{t}"*' for t in terms(query, limit))
