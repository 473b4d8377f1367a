"""Statement fingerprints: the shape of a statement, with values and list lengths collapsed."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["fingerprint", "parameter_key"]

_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_STRINGS = re.compile(r"'(?:[^']|'')*'")
_POSTCOMPILE = re.compile(r"__\[POSTCOMPILE_[^\]]*\]")
_PLACEHOLDERS = re.compile(
    r"%\([^)]*\)s"  # pyformat
    r"|%s"  # format
    r"|\$\d+"  # numeric_dollar (asyncpg)
    r"|(?<![:\w]):[A-Za-z_][\w]*"  # named (not ::casts)
    r"|\?"  # qmark
)
_NUMBERS = re.compile(r"(?<![\w.\"])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w\"])", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_LISTS = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_ROWS = re.compile(r"\(\?\)(?:\s*,\s*\(\?\))+")
_CASTS = re.compile(r"\?(?:\s*::\s*[a-z_][\w ]*(?:\[\])?)+")


def fingerprint(sql: str) -> str:
    """The statement's shape: comments, literals, placeholders, list lengths and case collapsed.

    Two statements that differ only in literal values, placeholder style or the length of an
    ``IN`` list (or of a multi-row ``VALUES``) share a fingerprint. Never raises.
    """
    try:
        text = _COMMENTS.sub(" ", sql)
        text = _STRINGS.sub("?", text)
        text = _POSTCOMPILE.sub("?", text)
        text = _PLACEHOLDERS.sub("?", text)
        text = _NUMBERS.sub("?", text)
        text = _WHITESPACE.sub(" ", text).strip().lower()
        text = _CASTS.sub("?", text)
        text = _LISTS.sub("(?)", text)
        return _ROWS.sub("(?)", text)
    except Exception:  # pragma: no cover - regexes on str cannot fail, but never raise
        return str(sql)[:1000]


def parameter_key(sql: str, parameters: Any) -> Any:
    """A hashable stand-in for one execution's parameter values."""
    try:
        key = (
            tuple(sorted(parameters.items(), key=lambda item: str(item[0])))
            if isinstance(parameters, dict)
            else parameters
        )
        hash(key)
        return key
    except Exception:
        return repr(parameters)[:200]
