"""Schema work: statements that define or inspect the schema rather than read or write rows.

``create_all``/``drop_all`` with ``checkfirst``, reflection and the dialects' has-table checks
run a number of statements that depends on what the database already holds (which tests this
worker ran first), so the baseline leaves them out of its comparison by default. Decided from
the statement text, once per fingerprint: nothing is paid per statement.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["is_schema"]

_LEADING_COMMENTS = r"(?:\s|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))*"
#: DDL and the introspection commands, by their first word (after blanks and comments).
_COMMANDS = re.compile(
    _LEADING_COMMENTS
    + r"(?:create|drop|alter|comment\s+on|rename\s+table|pragma|show|describe|desc)\b",
    re.IGNORECASE | re.DOTALL,
)
#: Statements that read a catalog: PostgreSQL's pg_catalog, the SQL standard's
#: information_schema, SQLite's schema table (under any of its four names).
_CATALOGS = re.compile(
    r"(?<![\w$])[\"`]?(?:pg_catalog|information_schema)[\"`]?\s*\."
    r"|(?<![\w$])[\"`]?sqlite_(?:temp_)?(?:master|schema)\b",
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)
def is_schema(statement: str) -> bool:
    """Whether ``statement`` (SQL or its fingerprint) is schema work: DDL (``CREATE``, ``DROP``,
    ``ALTER``, ``COMMENT ON``), ``PRAGMA``, ``SHOW``/``DESCRIBE``, or a read of
    ``pg_catalog``, ``information_schema`` or ``sqlite_master``/``sqlite_schema``."""
    try:
        return _COMMANDS.match(statement) is not None or _CATALOGS.search(statement) is not None
    except Exception:  # pragma: no cover - never raise about a user's statement
        return False
