"""The one rule every id follows, wherever it enters: the HTTP API and the importers.

An id (of a user, item, creator, sound, event, request or session) is at most ``MAX_ID_LENGTH``
characters of printable text, neither empty nor whitespace only, with no leading or trailing
whitespace, no control characters and no bidirectional override or isolate characters.

Why each part:

- control characters (tab, newline, NUL, ...) turn an id into something else in every text
  format it travels through later: log lines, exports, the trainer's command channel, a terminal;
- bidi overrides and isolates (U+202A-U+202E, U+2066-U+2069) make an id display as a different
  one ("Trojan Source"): an operator reading an access log or an export would be misled;
- surrogates (a lone ``\\ud800`` that JSON can carry) are not text and cannot be stored as UTF-8;
- leading or trailing whitespace is refused rather than trimmed: trimming would silently make
  ``" u1"`` the same viewer as ``"u1"`` (an erasure of one would erase the other).

Other format characters (such as the zero-width joiner inside emoji sequences) are allowed: they
are part of ordinary text.
"""

from __future__ import annotations

import unicodedata

MAX_ID_LENGTH = 128

# Bidirectional embedding/override (U+202A-U+202E) and isolate (U+2066-U+2069) characters.
BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
# Control characters, surrogates, and the line and paragraph separators (which break lines).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid id, or ``None`` when it is one. The reason reads after the
    field's name: ``"user_id " + reason``."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters (got {len(value)})"
    if not value.strip():
        return "must not be whitespace only"
    if value != value.strip():
        return "must not start or end with whitespace"
    for position, char in enumerate(value):
        if char in BIDI_CONTROLS:
            return (f"must not contain bidirectional override or isolate characters "
                    f"(U+{ord(char):04X} at position {position})")
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return (f"must not contain control characters (U+{ord(char):04X} at position "
                    f"{position})")
    return None


def is_valid_id(value: object) -> bool:
    return id_problem(value) is None
