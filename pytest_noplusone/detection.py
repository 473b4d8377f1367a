"""Statement fingerprints and the N+1 rules that turn per-shape aggregates into findings."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from . import schema

if TYPE_CHECKING:
    from .capture import Location, QueryLog, ShapeStats

__all__ = [
    "Allowance",
    "Finding",
    "NPlusOneWarning",
    "UnusedAllowWarning",
    "find",
    "findings",
    "fingerprint",
    "model_hint",
    "parameter_key",
]

# --- fingerprints ---------------------------------------------------------------------------

_LEXEMES = re.compile(
    r"'(?:[^']|'')*'?"  # a string literal (even unterminated: never raise, never hang)
    r'|"(?:[^"]|"")*"?|`[^`]*`?'  # quoted identifiers, kept as they are
    r"|--[^\n]*|/\*.*?(?:\*/|\Z)",  # comments
    re.DOTALL,
)
_PLACEHOLDERS = re.compile(
    r"__\[POSTCOMPILE_[^\]]*\]"  # an expanding IN list SQLAlchemy did not render yet
    r"|(?<!%)%\([^()%]{0,200}\)s"  # pyformat (not an escaped %%); bounded: never quadratic
    r"|(?<!%)%s"  # format
    r"|\$\d+"  # numeric_dollar (asyncpg)
    r"|(?<![:\w]):[A-Za-z_]\w*"  # named (not ::casts)
    r"|\?"  # qmark
)
_NUMBERS = re.compile(r"(?<![\w.$\"])[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?(?![\w\"])", re.I)
_CASTS = re.compile(
    r"\?(?:\s*::\s*(?:double precision|character varying|(?:timestamp|time) with(?:out)? time zone"
    r"|[a-z_][\w.]*)(?:\s*\([\s?,]*\))?(?:\[\])*)+"
)
_WHITESPACE = re.compile(r"\s+")
_OPEN = re.compile(r" ?\( ?")
_NESTED = re.compile(r"(?<=\() \(")
_CLOSE = re.compile(r" ?\) ?")
_COMMA = re.compile(r" ?, ?")
_OPERATORS = re.compile(r" ?(<=|>=|<>|!=|=|<|>) ?")
_EMPTY_IN = re.compile(
    r"in \(select \? from \(select \?\) where \? != \?\)"  # SQLite's empty expanding IN
    r"|in \(null\) and \(\? != \?\)"  # everyone else's
)
_LISTS = re.compile(r"\(\?(?:, \?)*\)")
_ROWS = re.compile(r"\(\?\)(?:, \(\?\))+")
#: What stands for a pytest-xdist worker's id inside an identifier.
WORKER = "{worker}"
#: A worker's id as one ``_``-separated part of an identifier: ``uuid_author_gw1``,
#: ``gw1_users``, and xdist's ``worker_id`` without workers (``uuid_author_master``, but never
#: SQLite's ``sqlite_master``).
_WORKER_IDS = re.compile(
    r"(?<=[a-z0-9$]_)gw\d+(?![a-z0-9$])"
    r"|(?<![\w$])gw\d+(?=_[a-z0-9$])"
    r"|(?<=[a-z0-9$]_)(?<!sqlite_)(?<!sqlite_temp_)master(?![\w$])"
)


def _lexeme(match: re.Match[str]) -> str:
    text = match.group()
    if text[0] == "'":
        return "?"
    if text[0] in "\"`":
        return text
    return " "


def _close(match: re.Match[str]) -> str:
    end = match.end()
    return ")" if end == len(match.string) or match.string[end] in "),;" else ") "


def fingerprint(sql: str) -> str:
    """The statement's shape: comments, literals, placeholders, list lengths and case collapsed.

    Two statements that differ only in literal values, placeholder style, whitespace, case,
    comments or the length of an ``IN`` list (or of a multi-row ``VALUES``) share a
    fingerprint, and so do statements on per-worker tables of pytest-xdist: a worker's id in
    an identifier (``uuid_author_gw1``) becomes ``{worker}``. Never raises.
    """
    try:
        text = sql if isinstance(sql, str) else str(sql)
        if "'" in text or '"' in text or "`" in text or "--" in text or "/*" in text:
            text = _LEXEMES.sub(_lexeme, text)
        text = _PLACEHOLDERS.sub("?", text)
        text = _NUMBERS.sub("?", text)
        text = _WHITESPACE.sub(" ", text).strip().lower().replace("%%", "%")
        text = _CASTS.sub("?", text)
        # One canonical spacing: " (" before, ")" and ", " after; "((" and "))" stay tight.
        text = _NESTED.sub("(", _OPEN.sub(" (", text)).lstrip()
        text = _CLOSE.sub(_close, text)
        text = _COMMA.sub(", ", text)
        text = _OPERATORS.sub(r" \1 ", text)
        text = _EMPTY_IN.sub("in (?)", text)
        text = _LISTS.sub("(?)", text)
        text = _ROWS.sub("(?)", text)
        text = _LISTS.sub("(?)", text)
        if "gw" in text or "master" in text:
            text = _WORKER_IDS.sub(WORKER, text)
        return text
    except Exception:  # pragma: no cover - a guest in the user's query must never raise
        return "<unreadable statement>"


# --- parameters -----------------------------------------------------------------------------

_SCAN = re.compile(
    r"(?P<skip>'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|--[^\n]*|/\*.*?(?:\*/|\Z))"
    r"|%\((?P<pyformat>[^()%]{0,200})\)s"
    r"|(?P<format>%s)"
    r"|\$(?P<dollar>\d+)"
    r"|(?<![:\w]):(?P<named>[A-Za-z_]\w*)"
    r"|(?P<qmark>\?)"
    r"|(?P<word>[A-Za-z_]\w*)"
    r"|(?P<op><=|>=|<|>|\(|\)|,)",
    re.DOTALL,
)
_LIMIT_WORDS = frozenset({"limit", "first", "next", "top"})
_PAGING_WORDS = _LIMIT_WORDS | {"offset"}
_RANGE_OPS = frozenset({"<", ">", "<=", ">="})
_drops: dict[str, tuple[frozenset[int | str], frozenset[int | str]]] = {}
_MAX_DROPS = 4096


def _placeholder_key(match: re.Match[str], position: int) -> tuple[int | str, int]:
    """The parameter a placeholder of ``_SCAN`` stands for (its index, or its name), and the
    next positional index."""
    kind = match.lastgroup
    if kind == "dollar":
        return int(match.group("dollar")) - 1, position
    if kind in ("pyformat", "named"):
        return match.group(kind), position
    return position, position + 1


def _paging_parameters(sql: str) -> tuple[frozenset[int | str], frozenset[int | str]]:
    """The parameters that only page through rows: the ``LIMIT`` (``FETCH``, ``TOP``) values,
    and the ``OFFSET`` values and range bounds of keyset pagination (``WHERE id > ? ORDER BY id
    LIMIT ?``), which advance from page to page."""
    limits: set[int | str] = set()
    advancing: set[int | str] = set()
    ranged: set[int | str] = set()
    has_limit = has_order = False
    previous = before = ""
    position = 0
    groups: list[bool] = []  # open parentheses: True when opened right after a range operator
    for match in _SCAN.finditer(sql):
        kind = match.lastgroup
        if kind == "skip":
            continue
        if kind == "word":
            word = match.group("word").lower()
            has_limit = has_limit or word in _PAGING_WORDS or word == "fetch"
            has_order = has_order or (word == "by" and previous == "order")
            before, previous = previous, word
            continue
        if kind == "op":
            op = match.group("op")
            if op == "(":
                groups.append(previous in _RANGE_OPS or (bool(groups) and groups[-1]))
            elif op == ")" and groups:
                groups.pop()
            before, previous = previous, op
            continue
        key, position = _placeholder_key(match, position)
        if previous == "offset" or (previous == "," and before == "limit?"):
            advancing.add(key)
        elif previous in _LIMIT_WORDS:
            limits.add(key)
        elif previous in _RANGE_OPS or (groups and groups[-1]):
            ranged.add(key)
        # "limit?" marks MySQL's LIMIT offset, count: the value after the comma pages too.
        before, previous = previous, ("limit?" if previous == "limit" else "?")
    if has_limit and has_order:
        advancing |= ranged
    return frozenset(limits), frozenset(advancing)


def _split(sql: str) -> tuple[frozenset[int | str], frozenset[int | str]]:
    split = _drops.get(sql)
    if split is None:
        if len(_drops) >= _MAX_DROPS:
            _drops.clear()
        split = _drops[sql] = _paging_parameters(sql)
    return split


def _pick(parameters: Any, keys: frozenset[int | str]) -> tuple[Any, ...]:
    if isinstance(parameters, dict):
        return tuple(parameters.get(key) for key in sorted(keys, key=str))
    if isinstance(parameters, (tuple, list)):
        return tuple(parameters[key] for key in sorted(keys, key=str) if isinstance(key, int)
                     and key < len(parameters))
    return ()


def parameter_key(sql: str, parameters: Any) -> Any:
    """A hashable stand-in for one execution's values, leaving out the ones that only page."""
    try:
        limits, advancing = _split(sql)
        drop = limits | advancing
        if isinstance(parameters, dict):
            key: Any = tuple(sorted(item for item in parameters.items() if item[0] not in drop))
        elif isinstance(parameters, (tuple, list)):
            if drop:
                key = tuple(value for i, value in enumerate(parameters) if i not in drop)
            else:
                key = tuple(parameters)
        else:
            key = parameters
        hash(key)
        return key
    except Exception:
        return repr(parameters)[:200]


def sample(sql: str, parameters: Any) -> tuple[Any, Any, Any]:
    """One execution, as a shape samples it: its values without the paging ones, its paging
    values (the limits, then the offsets and bounds that advance), and the parameters."""
    try:
        limits, advancing = _split(sql)
        paging = (_pick(parameters, limits), _pick(parameters, advancing))
        limit_one = _limit_one.get(sql)
        if limit_one is None:
            if len(_limit_one) >= _MAX_DROPS:
                _limit_one.clear()
            limit_one = _limit_one[sql] = _LIMIT_ONE.search(sql) is not None
        if limit_one:
            paging = ((1,), paging[1])
        hash(paging)
    except Exception:
        paging = ((), ())
    return parameter_key(sql, parameters), paging, parameters


#: sql -> whether it has a literal LIMIT 1 (cached: the same statements run test after test).
_limit_one: dict[str, bool] = {}
_LIMIT_ONE = re.compile(r"\b(?:limit|top)\s+1\b|\bfetch\s+(?:first|next)\s+1\s+rows?\b", re.I)
_COLUMN_BEFORE = re.compile(
    r"(?P<table>[A-Za-z_]\w*|\"[^\"]+\")\s*\.\s*(?P<column>[A-Za-z_]\w*|\"[^\"]+\")\s*"
    r"(?:=|<=|>=|<>|!=|<|>|\bin\s*\()\s*\(?\s*$",
    re.I,
)


def _placeholders(sql: str) -> list[tuple[int | str, str | None]]:
    """The placeholders of ``sql`` in order (positional index, or name) with the
    ``table.column`` each is compared with, when it can be read (cached per statement)."""
    found = _columns.get(sql)
    if found is None:
        if len(_columns) >= _MAX_DROPS:
            _columns.clear()
        found = _columns[sql] = _read_placeholders(sql)
    return found


_columns: dict[str, list[tuple[int | str, str | None]]] = {}


def _read_placeholders(sql: str) -> list[tuple[int | str, str | None]]:
    found: list[tuple[int | str, str | None]] = []
    position = 0
    in_list: str | None = None
    for match in _SCAN.finditer(sql):
        kind = match.lastgroup
        if kind in ("skip", "word"):
            if kind == "word":
                in_list = None if match.group("word").lower() != "in" else in_list
            continue
        if kind == "op":
            if match.group("op") == ")":
                in_list = None
            continue
        key, position = _placeholder_key(match, position)
        before = _COLUMN_BEFORE.search(sql, max(0, match.start() - 200), match.start())
        column = None
        if before is not None:
            table, name = (part.strip('"') for part in before.group("table", "column"))
            column = f"{table}.{name}"
            if re.search(r"\bin\s*\(\s*$", before.group(), re.I):
                in_list = column
        elif sql[max(0, match.start() - 2) : match.start()].strip() == ",":
            column = in_list
        found.append((key, column))
    return found


def _value(parameters: Any, key: int | str) -> Any:
    try:
        return parameters[key]
    except (KeyError, IndexError, TypeError):
        return None


def varying_column(sql: str, samples: Sequence[tuple[Any, Any, Any]]) -> str | None:
    """``Post.author_id`` (or ``posts.author_id``) for the column whose value changed from one
    sampled statement to the next; None when none can be told."""
    try:
        for key, column in _placeholders(sql):
            if column is None:
                continue
            values = {repr(_value(parameters, key)) for _, _, parameters in samples}
            if len(values) > 1:
                return _attribute(column)
    except Exception:
        return None
    return None


def _attribute(column: str) -> str:
    mapped = _mapped(*column.rsplit(".", 1))
    return f"{mapped[0]}.{mapped[1]}" if mapped is not None else column


# --- findings -------------------------------------------------------------------------------


class NPlusOneWarning(pytest.PytestWarning):
    """An N+1 finding, reported as a warning under ``noplusone_nplusone = warn``."""


class UnusedAllowWarning(pytest.PytestWarning):
    """An ``@pytest.mark.allow_nplusone`` entry that allowed nothing."""


#: The session's ``noplusone_threshold`` (the plugin sets it); scale assertions read it.
threshold = 2
#: How many distinct parents or parameter sets a shape remembers.
MAX_DISTINCT = 64

#: Kinds of finding: a relationship lazily loaded per parent, one SELECT per row from a loop,
#: and the same SELECT with the same values run again and again.
LAZY_LOAD, LOOP, REPEAT = "lazy_load", "loop", "repeat"
#: Objects refreshed one by one: their expired attributes reloaded after ``commit()`` or
#: ``expire()``, or ``session.refresh()`` called per object.
EXPIRED, REFRESH = "expired_reload", "refresh"

_READS = ("select", "with", "(select", "values")
_PAGED = re.compile(r"\b(?:limit|offset|fetch (?:first|next)|top)\b")


_FINDING_FIELDS = (
    "kind",
    "count",
    "distinct",
    "fingerprint",
    "sql",
    "call_site",
    "relationship",
    "column",
    "invocation",
)


class Finding:
    """One N+1 pattern in a test body (immutable; equal when all its fields are)."""

    # A plain class rather than a dataclass or a NamedTuple: creating a dataclass costs about a
    # millisecond at import (every run pays it), and a NamedTuple cannot have a ``count``.
    __slots__ = _FINDING_FIELDS

    kind: str  # LAZY_LOAD, LOOP, REPEAT, EXPIRED or REFRESH
    count: int  # the statements of the pattern (in the invocation that ran them)
    distinct: int  # distinct parents (LAZY_LOAD, EXPIRED, REFRESH); distinct values sampled
    fingerprint: str
    sql: str  # the first statement, as sent
    call_site: tuple[Location, ...]  # innermost first, out to the test
    relationship: str | None  # "User.posts" for LAZY_LOAD; "User" for EXPIRED and REFRESH
    column: str | None  # for LOOP: the column whose value changed from one statement to the next
    invocation: str | None  # the function one call of which ran the statements

    def __init__(
        self,
        kind: str,
        count: int,
        distinct: int,
        fingerprint: str,
        sql: str,
        call_site: tuple[Location, ...],
        relationship: str | None = None,
        column: str | None = None,
        invocation: str | None = None,
    ) -> None:
        values = (
            kind, count, distinct, fingerprint, sql, call_site, relationship, column, invocation
        )
        for name, value in zip(_FINDING_FIELDS, values, strict=True):
            object.__setattr__(self, name, value)

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FINDING_FIELDS)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: a Finding is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: a Finding is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Finding):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FINDING_FIELDS)
        return f"Finding({shown})"

    @property
    def label(self) -> str:
        """``User.posts`` for a lazy load, else the fingerprint."""
        return self.relationship or self.fingerprint

    @property
    def location(self) -> str:
        """The innermost line of the user's code: ``path:line in function``."""
        return str(self.call_site[0]) if self.call_site else "?"


def _invocation(stats: ShapeStats, threshold: int) -> tuple[int, Any, int] | None:
    """The innermost frame of the chain one invocation of which ran ``threshold`` or more of
    the statements (level, invocation, count): a frame of the code under test, or the
    innermost frame when that is test code (a test that calls a one-query function once per
    input is not a loop of that function)."""
    site = stats.example._site
    tests = site.tests
    innermost = True
    for level in range(len(stats.levels)):
        if site.frames[level][2] in _COMPREHENSIONS:
            continue  # a comprehension is part of its function (inlined from Python 3.12 on)
        if tests[level] and not innermost:
            continue
        innermost = False
        found = stats.invocation(level)
        if found is not None and found[1] >= threshold:
            return level, found[0], found[1]
    return None


_COMPREHENSIONS = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})


def _values(samples: Sequence[tuple[Any, Any, Any]]) -> tuple[int, bool, bool]:
    """How many distinct values the samples have, whether their paging values advance from
    one to the next (pages), and whether they are the chunks of one IN list."""
    values = [value for value, _, _ in samples]
    distinct = len(set(values))
    pages = False
    if distinct <= 1 and len(samples) > 1:
        limits = [paging[0] for _, paging, _ in samples]
        advancing = [paging[1] for _, paging, _ in samples]
        one_row = any(limit and all(v == 1 for v in limit) for limit in limits)
        pages = not one_row and len(set(advancing)) == len(advancing) and bool(advancing[0])
    return distinct, pages, distinct > 1 and _chunks(values)


def _chunks(values: Sequence[Any]) -> bool:
    """Disjoint value sets, all but the last of one size > 1: one IN list sent in chunks."""
    try:
        sets = [set(value) if isinstance(value, tuple) else {value} for value in values]
    except TypeError:
        return False
    common = set.intersection(*sets)
    sets = [each - common for each in sets]
    size = len(sets[0])
    if size < 2 or any(len(each) != size for each in sets[:-1]) or len(sets[-1]) > size:
        return False
    seen: set[Any] = set()
    for each in sets:
        if seen & each:
            return False
        seen |= each
    return True


def _finding(stats: ShapeStats, threshold: int, pages: set[int]) -> Finding | None:
    example = stats.example
    if stats.count < threshold or example.executemany or example.loader == "eager":
        return None  # eager loaders batch by design; executemany is one round-trip per batch
    if not example.call_site_key or example.background:
        return None  # no line of yours (library code alone), or a poller started earlier
    shape = example.fingerprint
    if schema.is_schema(shape):
        return None  # create_all, reflection, has_table: SQLAlchemy's own schema work
    found = _invocation(stats, threshold)
    if found is None:
        return None  # each repeat is its own call: separate requests, inputs, rounds
    level, invocation, count = found
    libraries = stats.libraries
    if len(libraries) == 1 and None not in libraries:
        return None  # all inside one call of a library: its own internals (Alembic's checks)
    loader = example.loader
    test_code = example._site.tests[level]
    relationship = None
    if loader == "lazy" and example.relationship:
        distinct = len(stats.parent_keys)
        if distinct < threshold:
            return None  # one parent reloaded (after expiry) is not N+1
        kind = LAZY_LOAD
        relationship = example.relationship
    elif loader in ("expired", "refresh"):
        distinct = len(stats.parent_keys)
        if test_code or distinct < threshold:
            return None  # a test reading its objects back after commit() is not the app's N+1
        kind = EXPIRED if loader == "expired" else REFRESH
        relationship = example.relationship
    else:
        # Writes repeat legitimately (a test creating rows in a loop, per-row flushes the ORM
        # chooses): N+1 is a read pattern; budgets and executemany cover writes.
        if not shape.startswith(_READS):
            return None
        distinct, paged, chunked = _values(stats.samples)
        if paged:
            pages.add(id(invocation))
            return None  # a pagination loop: only the advancing offsets or bounds differ
        if chunked:
            return None  # one IN list sent in chunks
        # distinct == 1 and not paged: identical values, or a range bound with LIMIT 1 that
        # moves per row (never a page): a loop when the bounds differ.
        if distinct <= 1 and len({paging for _, paging, _ in stats.samples}) > 1:
            distinct = len({paging for _, paging, _ in stats.samples})
        kind = LOOP if distinct > 1 else REPEAT
    return Finding(
        kind,
        count,
        distinct,
        example.fingerprint,
        example.sql,
        example.call_site,
        relationship,
        varying_column(example.sql, stats.samples) if kind == LOOP else None,
        invocation_of(example.call_site, level),
    )


def invocation_of(call_site: Sequence[Location], level: int) -> str | None:
    """``function (path:line)`` of the frame whose invocation ran the statements."""
    if level >= len(call_site):
        return None
    return call_site[level].function


def findings(log: QueryLog, threshold: int) -> list[tuple[tuple[str, Any], Finding]]:
    """The findings of a window with their shape keys, in first-seen order."""
    found: list[tuple[tuple[str, Any], Finding, ShapeStats]] = []
    pages: set[int] = set()
    for key, stats in list(log.shapes.items()):
        if key in log.exempt:
            continue
        finding = _finding(stats, threshold, pages)
        if finding is not None:
            found.append((key, finding, stats))
    result = []
    for key, finding, stats in found:
        if finding.kind == REPEAT and finding.fingerprint.startswith(_COUNTS) and pages:
            invocation = _invocation(stats, threshold)
            if invocation is not None and id(invocation[1]) in pages:
                continue  # the per-page count(*) of a pagination loop is part of that loop
        result.append((key, finding))
    return result


_COUNTS = ("select count(", "select count (")


def find(log: QueryLog, threshold: int) -> list[Finding]:
    """The N+1 findings among a window's per-shape aggregates, in first-seen order."""
    return [finding for _, finding in findings(log, threshold)]


class Allowance:
    """What ``@pytest.mark.allow_nplusone`` allows in one test."""

    __slots__ = ("entries", "everything", "own_bare", "used")

    def __init__(
        self, everything: bool = False, entries: tuple[str, ...] = (), own_bare: bool = False
    ) -> None:
        self.everything = everything
        self.entries = entries
        #: True when a bare marker sits on the test function itself (not a class or module).
        self.own_bare = own_bare
        self.used: set[str] = set()

    def allows(self, finding: Finding) -> bool:
        """Whether the finding is allowed; records which entries matched."""
        matched = [entry for entry in self.entries if _matches(entry, finding)]
        self.used.update(matched)
        return self.everything or bool(matched)

    def unused(self, findings_seen: bool) -> list[str]:
        """The entries that allowed nothing (``""`` for a bare marker on the test)."""
        unused = [entry for entry in self.entries if entry not in self.used]
        if self.own_bare and not findings_seen:
            unused.append("")
        return unused


_STATEMENT = re.compile(r"\s*\(?\s*(?:select|with|insert|update|delete|values)\b", re.I)


def _matches(entry: str, finding: Finding) -> bool:
    """``Model.attr`` matches that relationship; a whole statement matches only a statement of
    the same fingerprint (``...`` in it stands for any text); any other text matches the
    fingerprints that contain it."""
    if finding.relationship is not None and entry == finding.relationship:
        return True
    if _STATEMENT.match(entry):
        # "..." stands for any text (a long select list, elided).
        parts = fingerprint(entry).split("...")
        pattern = ".*?".join(map(re.escape, parts))
        return re.fullmatch(pattern, finding.fingerprint, re.DOTALL) is not None
    text = entry.strip().lower()
    return bool(text) and (text in finding.fingerprint or fingerprint(entry) in finding.fingerprint)


def allowance(markers: Iterable[tuple[pytest.Mark, bool]]) -> Allowance | None:
    """Read the ``allow_nplusone`` markers (mark, is-on-the-function); TypeError on misuse."""
    result: Allowance | None = None
    for mark, own in markers:
        result = result or Allowance()
        if mark.kwargs or not all(isinstance(arg, str) and arg.strip() for arg in mark.args):
            raise TypeError(_call(mark))
        if not mark.args:
            result.everything = True
            result.own_bare = result.own_bare or own
        result.entries += tuple(arg for arg in mark.args if arg not in result.entries)
    return result


def _call(mark: pytest.Mark) -> str:
    shown = [repr(arg) for arg in mark.args] + [f"{k}={v!r}" for k, v in mark.kwargs.items()]
    return f"{mark.name}({', '.join(shown)})"


class Outcome(NamedTuple):
    """The findings of one test: those that count, and the allow entries that matched none."""

    findings: list[Finding]
    allowed: list[Finding]
    unused: list[str]


def check(log: QueryLog, threshold: int, allow: Allowance | None) -> Outcome:
    """Apply the N+1 rules to a test body's log, then the test's allowance."""
    # A finding is a shape run at least ``threshold`` times: most tests run fewer statements.
    findings = find(log, threshold) if log.count >= threshold else []
    if allow is None:
        return Outcome(findings, [], [])
    kept: list[Finding] = []
    allowed: list[Finding] = []
    for finding in findings:
        (allowed if allow.allows(finding) else kept).append(finding)
    return Outcome(kept, allowed, allow.unused(bool(findings)))


# --- fix suggestions ------------------------------------------------------------------------

_FROM = re.compile(r"\bfrom ([\w.]+)")
_KEY_COLUMN = re.compile(r"([\w]+)\.([\w]+) (?:= \?|in \(\?\))|\? = ([\w]+)\.([\w]+)")


def model_hint(shape: str) -> tuple[str, str] | None:
    """``("Post", "author_id")`` for a fingerprint selecting posts by ``posts.author_id = ?``.

    Best effort, from the mapped classes SQLAlchemy knows; None when nothing fits.
    """
    try:
        table_match = _FROM.search(shape)
        column_match = _KEY_COLUMN.search(shape)
        if table_match is None or column_match is None:
            return None
        table = table_match.group(1).rsplit(".", 1)[-1]
        owner, column = column_match.group(1, 2)
        if owner is None:
            owner, column = column_match.group(3, 4)
        if owner != table:
            return None
        return _mapped(table, column)
    except Exception:
        return None


def _mapped(table: str, column: str) -> tuple[str, str] | None:
    """The mapped class and attribute of ``table.column`` (case ignored), or None."""
    table, column = table.lower(), column.lower()
    for mapper in _mappers():
        local = getattr(mapper, "local_table", None)
        if getattr(local, "name", "").lower() != table:
            continue
        for prop in mapper.column_attrs:
            if any(getattr(col, "name", "").lower() == column for col in prop.columns):
                return mapper.class_.__name__, prop.key
    return None


def _mappers() -> Sequence[Any]:
    module = sys.modules.get("sqlalchemy.orm.mapper")
    registries = getattr(module, "_all_registries", None)
    if registries is None:
        return ()
    return [mapper for registry in registries() for mapper in registry.mappers]
