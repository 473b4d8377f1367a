"""Capture SQL round-trips from every Engine and attribute each to the user's line of code.

Listeners of the ``do_execute``, ``do_executemany`` and ``do_execute_no_params`` dialect events
on the ``Engine`` *class* record each DB-API execution: they see every sync engine and the
``sync_engine`` behind every ``AsyncEngine``. They record into the open windows (``QueryLog``
objects); the windows are
process-wide, so queries made in other threads and tasks count too.
"""

from __future__ import annotations

import asyncio
import operator
import os
import re
import sys
import sysconfig
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from types import CodeType, FrameType
from typing import Any, NamedTuple

import greenlet
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine

from . import detection

__all__ = ["CapturedQuery", "Location", "QueryLog", "ShapeStats"]

#: How many user frames make a call site (innermost first).
CALL_SITE_DEPTH = 4

_USER, _SKIP, _BOUNDARY = 0, 1, 2
#: A call site's cache key: two numbers per user frame (see ``_offsets``).
_KEY_LENGTH = 2 * CALL_SITE_DEPTH

_TRANSACTION_CONTROL = re.compile(
    r"\s*(begin|start\s+transaction|commit|end|rollback|savepoint|release)\b",
    re.IGNORECASE,
)

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


#: Packages whose frames are never the user's line (besides SQLAlchemy and this plugin).
_INFRASTRUCTURE = (
    "greenlet",
    "pytest_asyncio",
    "anyio",
    "aiosqlite",
    "asyncpg",
    "psycopg",
    "psycopg2",
    "pymysql",
    "aiomysql",
    "asyncmy",
)
_STDLIB = os.path.abspath(sysconfig.get_paths()["stdlib"]) + os.sep
_SITE_DIRS = tuple(
    os.path.abspath(p) + os.sep
    for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
)
_ASYNCIO_EVENTS = os.path.abspath(asyncio.events.__file__)
_SQLALCHEMY_DIR = os.path.dirname(os.path.abspath(sqlalchemy.__file__)) + os.sep
_kinds: dict[str, int] = {}


def _module_dir(name: str) -> str | None:
    path = getattr(sys.modules.get(name), "__file__", None)
    return os.path.dirname(os.path.abspath(path)) + os.sep if path else None


def _classify(filename: str) -> int:
    # Runs once per source file; modules imported late (a driver first imported by a test)
    # are looked up in sys.modules at that moment.
    if filename.startswith("<"):
        kind = _SKIP
    else:
        path = os.path.abspath(filename)
        boundaries = tuple(d for d in (_module_dir("pluggy"), _module_dir("_pytest")) if d)
        skipped = tuple(d for d in map(_module_dir, _INFRASTRUCTURE) if d)
        if (
            path.startswith(boundaries)
            or path == os.path.abspath(str(getattr(sys.modules.get("pytest"), "__file__", "")))
            # The event loop's callback runner: what lies beyond it drives the loop (a test
            # runner or asyncio.run), and walking it for every statement would cost more than
            # the caller's caller is worth.
            or path == _ASYNCIO_EVENTS
        ):
            kind = _BOUNDARY
        elif path.startswith((_PACKAGE_DIR + os.sep, _SQLALCHEMY_DIR, *skipped)) or (
            path.startswith(_STDLIB) and not path.startswith(_SITE_DIRS)
        ):
            kind = _SKIP
        else:
            kind = _USER
    _kinds[filename] = kind
    return kind


_root = os.getcwd()


def set_root(path: str | os.PathLike[str]) -> None:
    """Locations are shown relative to this directory (the pytest rootdir)."""
    global _root
    _root = os.fspath(path)


class Location(NamedTuple):
    """A line of the user's code: ``path:line in function``."""

    filename: str
    lineno: int
    function: str

    @property
    def path(self) -> str:
        """The filename relative to the rootdir when it lies below it."""
        try:
            relative = os.path.relpath(self.filename, _root)
        except ValueError:
            return self.filename
        return self.filename if relative.startswith("..") else relative

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno} in {self.function}"


_Frames = tuple[tuple[str, int, str], ...]


class _Site:
    """One call site, interned: its identity is its hash, so grouping by it is cheap."""

    __slots__ = ("frames",)

    def __init__(self, frames: _Frames) -> None:
        self.frames = frames


_MAX_SITES = 50_000


class CapturedQuery:
    """One DB-API cursor execution."""

    __slots__ = ("_loader", "_site", "_url", "executemany", "fingerprint", "parameters", "sql")

    def __init__(
        self,
        sql: str,
        parameters: Any,
        executemany: bool,
        fingerprint: str,
        engine: Engine | None,
        site: _Site,
        loader: tuple[str, str, Any] | None = None,
    ) -> None:
        self.sql = sql
        #: The parameters as passed to the DB-API; kept in memory only, never written to a file.
        self.parameters = parameters
        self.executemany = executemany
        self.fingerprint = fingerprint
        self._url: URL | None = engine.url if engine is not None else None
        self._site = site
        self._loader = loader

    @property
    def loader(self) -> str | None:
        """``"lazy"`` when a lazy loader (or ``awaitable_attrs``) issued the statement,
        ``"eager"`` for the batches of a ``selectinload``/``subqueryload``, else ``None``."""
        return self._loader[0] if self._loader is not None else None

    @property
    def relationship(self) -> str | None:
        """``"Model.attr"`` for a relationship load."""
        return self._loader[1] if self._loader is not None else None

    @property
    def parent_key(self) -> Any:
        """The identity key of the object whose relationship was lazily loaded."""
        return self._loader[2] if self._loader is not None else None

    @property
    def _frames(self) -> _Frames:
        return self._site.frames

    @property
    def engine(self) -> str:
        """The engine's URL, password hidden."""
        return self._url.render_as_string(hide_password=True) if self._url is not None else "?"

    @property
    def location(self) -> Location | None:
        """The innermost frame of the user's code that ran this statement."""
        return Location(*self._frames[0]) if self._frames else None

    @property
    def call_site(self) -> tuple[Location, ...]:
        """The user's frames (innermost first, at most ``CALL_SITE_DEPTH``)."""
        return tuple(Location(*frame) for frame in self._frames)

    @property
    def call_site_key(self) -> _Frames:
        """A hashable key for the call site."""
        return self._frames

    def __repr__(self) -> str:
        return f"<CapturedQuery {self.sql[:60]!r} at {self.location}>"


class ShapeStats:
    """Aggregate of the statements of one fingerprint from one call site."""

    __slots__ = ("count", "example", "parameter_sets", "parent_keys")

    def __init__(self, example: CapturedQuery) -> None:
        self.count = 0
        self.example = example
        #: Distinct parents of lazy loads (bounded).
        self.parent_keys: set[Any] = set()
        #: Distinct parameter values of the first executions, for telling loops from repeats.
        self.parameter_sets: set[Any] = set()

    def sampling(self) -> bool:
        """Whether a further statement of this shape can still add a parent or a parameter set
        (the fold visits such shapes statement by statement, and only counts the others)."""
        if self.example._loader is not None:
            return self.example._loader[2] is not None and len(self.parent_keys) < _MAX_DISTINCT
        return self.count < _MAX_DISTINCT and len(self.parameter_sets) < 2


_MAX_DISTINCT = detection.MAX_DISTINCT


#: One statement as the listener records it: the arguments of ``CapturedQuery``. A tuple is
#: cheap to make; the object is made only when someone reads ``QueryLog.queries``.
_Raw = tuple[str, Any, bool, str, "Engine | None", _Site, "tuple[str, str, Any] | None"]
#: A recorded statement's shape key: (fingerprint, site).
_SHAPE_KEY = operator.itemgetter(3, 5)


#: Recorded statements a log holds before the listener folds them into its aggregates.
_BATCH = 256


class QueryLog:
    """The queries captured in one window: a test body or a ``capture_queries`` block."""

    def __init__(self, *, engine: Engine | None = None, keep: int | None = None) -> None:
        self._engine = engine
        self._keep = sys.maxsize if keep is None else keep
        self._count = 0
        self._raw: list[_Raw] = []
        self._made: list[CapturedQuery] = []
        self._shapes: dict[tuple[str, _Site], ShapeStats] = {}
        #: Shapes N+1 detection skips: repeated on purpose (``assert_constant_queries`` runs).
        self.exempt: set[tuple[str, _Site]] = set()
        #: What the listener recorded and ``_fold`` has not counted yet. The listener only
        #: appends (atomic, so it takes no lock); every reader folds first.
        self._pending: list[_Raw] = []
        #: How many pending statements make the listener fold (one cell, read without a lock).
        self._fold_at = [_BATCH]
        self._folding = threading.Lock()

    def _retain(self, keep: int) -> None:
        """Keep the first ``keep`` statements from now on (for a log made with fewer)."""
        self._fold()
        with self._folding:
            self._keep = keep


    @property
    def count(self) -> int:
        """How many statements ran in the window."""
        self._fold()
        return self._count

    @property
    def shapes(self) -> dict[tuple[str, _Site], ShapeStats]:
        """Per (fingerprint, call site) aggregates, in first-seen order."""
        self._fold()
        return self._shapes

    @property
    def queries(self) -> list[CapturedQuery]:
        """The captured statements (the first ``keep`` of them when a limit is set)."""
        self._fold()
        made = self._made
        if len(made) < len(self._raw):
            made.extend(CapturedQuery(*raw) for raw in self._raw[len(made) :])
        return made

    @property
    def truncated(self) -> bool:
        """True when more statements ran than ``queries`` keeps."""
        return self.count > len(self._raw)

    def _fold(self) -> None:
        """Count the pending statements into the aggregates (any thread, any time)."""
        pending = self._pending
        if not pending:
            return
        with self._folding:
            if not pending:
                return
            # Slicing and deleting are atomic: statements appended meanwhile stay pending.
            batch = pending[:]
            del pending[: len(batch)]
            self._count += len(batch)
            kept, room = self._raw, self._keep - len(self._raw)
            if room > 0:
                kept.extend(batch[:room])
            shapes = self._shapes
            # Counting is done in C (a Counter of (fingerprint, site) pairs); statement by
            # statement, the fold visits only new shapes and those still sampling, and only
            # until they stop sampling.
            visit: dict[tuple[str, _Site], int] = {}
            counted = Counter(map(_SHAPE_KEY, batch))
            for key, count in counted.items():
                stats = shapes.get(key)
                if stats is None or stats.sampling():
                    visit[key] = count
                else:
                    stats.count += count
            if visit:
                self._visit(batch, visit)

    def _visit(self, batch: list[_Raw], visit: dict[tuple[str, _Site], int]) -> None:
        """Count the statements of the shapes in ``visit`` (shape -> its statements in the
        batch) one by one while they sample, the rest at once."""
        shapes = self._shapes
        for raw in batch:
            key = _SHAPE_KEY(raw)
            left = visit.get(key)
            if left is None:
                continue
            stats = shapes.get(key)
            if stats is None:
                stats = shapes[key] = ShapeStats(CapturedQuery(*raw))
            count = stats.count = stats.count + 1
            loader = raw[6]
            if loader is not None:
                # ORM loaders are judged by their parents, not by their (often long) IN lists.
                if loader[2] is not None and len(stats.parent_keys) < _MAX_DISTINCT:
                    stats.parent_keys.add(loader[2])
            # Sampled from the first executions: enough to tell a loop from a repeat, and a
            # shape repeated a million times costs no more than one repeated 64 times. Only
            # "one value or several" is read, so sampling stops at two values.
            elif count <= _MAX_DISTINCT and len(stats.parameter_sets) < 2 and not raw[2]:
                stats.parameter_sets.add(detection.parameter_key(raw[0], raw[1]))
            left -= 1
            if left and stats.sampling():
                visit[key] = left
                continue
            stats.count += left  # done sampling: the rest of the batch is only counted
            del visit[key]
            if not visit:
                break

    @property
    def fingerprints(self) -> dict[str, int]:
        """Exact counts per fingerprint."""
        counts: dict[str, int] = {}
        for (fingerprint, _), stats in self.shapes.items():
            counts[fingerprint] = counts.get(fingerprint, 0) + stats.count
        return counts

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[CapturedQuery]:
        return iter(list(self.queries))

    def __repr__(self) -> str:
        return f"<QueryLog count={self.count}>"


_lock = threading.Lock()
#: The open windows, as the listener reads them: (engine filter, pending list, log, settled
#: shapes, fold threshold cell) each.
#: Replaced, never changed in place, so the listener reads it without a lock.
_Target = tuple["Engine | None", list[_Raw], "QueryLog", list[int]]
_targets: tuple[_Target, ...] = ()
#: A statement's text (its compiled string) -> its fingerprint, or "" when it is not counted.
_shapes: dict[str, str] = {}
_MAX_SHAPES = 20_000
_ignore: tuple[re.Pattern[str], ...] = ()
_users = 0
_listener_errors: list[BaseException] = []


def set_ignore(patterns: Sequence[re.Pattern[str]]) -> None:
    """Statements matching any of these are not counted."""
    global _ignore
    _ignore = tuple(patterns)
    _shapes.clear()


def listener_errors() -> list[BaseException]:
    """Errors the listener caught instead of raising into the user's query."""
    return _listener_errors


def _shape(statement: str) -> str:
    """The statement's fingerprint, or "" when it is not counted (cached in ``_shapes``)."""
    counted = _TRANSACTION_CONTROL.match(statement) is None and not any(
        pattern.search(statement) for pattern in _ignore
    )
    # A statement that is only blanks (the one with an empty fingerprint) fails in the
    # database anyway: "" can mean "not counted".
    fingerprint = detection.fingerprint(statement) if counted else ""
    if len(_shapes) >= _MAX_SHAPES:
        _shapes.clear()
    _shapes[statement] = fingerprint
    return fingerprint


def _offsets(frame: FrameType | None, frames: list[FrameType] | None = None) -> tuple[int, ...]:
    """The call site's cache key: ``id(code), f_lasti`` per user frame from ``frame`` outwards.

    Unlike ``f_lineno``, ``f_lasti`` is read without decoding the line table. Inside an
    ``AsyncSession`` call the statement runs in a child greenlet whose frames end at
    SQLAlchemy's greenlet_spawn, so the walk goes on in the parent greenlets, where the user's
    coroutine is. ``frames``, when given, gets the user frames themselves.
    """
    # Runs for every statement: the kinds are compared as literals (_USER is 0, _BOUNDARY 2),
    # which saves a global lookup per frame.
    kinds = _kinds
    parts: list[int] = []
    current = None
    while True:
        while frame is not None:
            code = frame.f_code
            kind = kinds.get(code.co_filename)
            if kind is None:
                kind = _classify(code.co_filename)
            if not kind:
                parts += (id(code), frame.f_lasti)
                if frames is not None:
                    frames.append(frame)
                if len(parts) >= _KEY_LENGTH:
                    return tuple(parts)
            elif kind == 2:
                return tuple(parts)
            frame = frame.f_back
        current = (current or greenlet.getcurrent()).parent
        if current is None:
            return tuple(parts)
        frame = current.gr_frame


# Two levels: the code objects and instruction offsets of the user frames (cheap to read;
# several offsets share a line) map to the site of their lines, interned so that grouping by
# site is grouping by identity. Each entry keeps its code objects alive, so their ids stay
# unique while cached.
_sites_by_offset: dict[tuple[int, ...], tuple[_Site, tuple[CodeType, ...]]] = {}
_sites: dict[_Frames, _Site] = {}


def _site(frame: FrameType | None, key: tuple[int, ...] | None = None) -> _Site:
    """The interned call site of the user frames from ``frame`` outwards (``key``: theirs)."""
    if key is None:
        key = _offsets(frame)
    entry = _sites_by_offset.get(key)
    if entry is not None:
        return entry[0]
    found: list[FrameType] = []
    _offsets(frame, found)  # only on a miss: the frames themselves, for their lines
    site = _intern([(each.f_code, each.f_lineno) for each in found])
    _sites_by_offset[key] = (site, tuple(each.f_code for each in found))
    return site


def _intern(found: Sequence[tuple[CodeType, int]]) -> _Site:
    """The interned site of the user frames ``found`` (code and line each)."""
    frames = tuple((code.co_filename, line, code.co_name) for code, line in found)
    if max(len(_sites), len(_sites_by_offset)) >= _MAX_SITES:
        # All caches at once: a site is one object while any of them can return it.
        _sites_by_offset.clear()
        _sites.clear()
    site = _sites.get(frames)
    if site is None:
        site = _sites[frames] = _Site(frames)
    return site


def _user_frames(frame: FrameType | None) -> _Frames:
    """The user frames (innermost first) from ``frame`` outwards, through parent greenlets."""
    return _site(frame).frames


# Skipping SQLAlchemy's frames one by one costs a frame object each. Most statements arrive
# through a handful of call paths, so the depth of the first frame that is not infrastructure
# is learned per path: a hint (depth, code of the frame just below it) is checked by fetching
# that one frame with sys._getframe, and a miss falls back to the walk, which learns a hint.
# Depths count from ``_capture``'s frame (0), whose caller is SQLAlchemy's execution or one of
# the listeners below (1).
_hints: list[tuple[int, CodeType]] = []
_getframe = sys._getframe
_MAX_HINTS = 16


def _learn() -> FrameType | None:
    """Walk from SQLAlchemy's frame below the listener to the first one that is not
    infrastructure (None: the chain ended), and remember the depth as a hint."""
    # 0 is this function, 1 _capture, 2 SQLAlchemy's execution or one of the listeners below
    # that call _capture (this module's frames are infrastructure too).
    kinds = _kinds
    frame: FrameType | None = sys._getframe(2)
    depth = 2
    below = None
    while frame is not None:
        filename = frame.f_code.co_filename
        kind = kinds.get(filename)
        if kind is None:
            kind = _classify(filename)
        if kind != _SKIP:
            break
        below = frame
        frame = frame.f_back
        depth += 1
    if below is not None:
        if len(_hints) >= _MAX_HINTS:
            del _hints[0]
        _hints.append((depth - 2, below.f_code))  # counted from _capture's frame
    return frame


# Relationship loads are recognised from the ORM's own state on the execution context: the
# ORM load options (present only for ORM loads), the statement's loader path (not the root
# path: a lazy load, or a selectin/subquery batch) and the load options' ``_lazy_loaded_from``
# (the parent of a lazy load). No ORM event is needed: other statements pay one dict lookup.
_names: dict[Any, str] = {}


def _loader(statement: Any, options: Any) -> tuple[str, str, Any] | None:
    """``("lazy", "Model.attr", parent key)`` or ``("eager", "Model.attr", None)``, from the
    statement and its ORM load options (``_sa_orm_load_options``)."""
    path = getattr(getattr(statement, "_compile_options", None), "_current_path", None)
    if path is None or path.is_root:
        return None
    prop = getattr(path, "prop", None)
    name = _names.get(prop)
    if name is None:
        name = _names[prop] = str(prop) if prop is not None else "?"
    parent = getattr(options, "_lazy_loaded_from", None)
    if parent is None:
        return ("eager", name, None)
    return ("lazy", name, parent.key or id(parent))


# The recorder is a set of DialectEvents listeners (do_execute,
# do_executemany, do_execute_no_params): they fire for every DB-API cursor execution,
# insertmanyvalues batches included, and unlike ConnectionEvents they do not switch
# SQLAlchemy's execution path to its slower, event-firing branch for every statement. The
# recorder itself (``_capture``) listens to do_execute, the common case.


def _do_executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> None:
    if _targets:
        _record(cursor, statement, parameters, context, True)


def _do_execute_no_params(cursor: Any, statement: str, context: Any) -> None:
    if _targets:
        _record(cursor, statement, (), context, False)


def _capture(
    cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool = False
) -> None:
    # The hot path: every line here runs once per statement while a window is open. Python
    # calls are its main cost, so the common case (a known call path and call site, not an
    # ORM relationship load) is written out here instead of in helpers, and recording is an
    # append (QueryLog._fold counts later).
    if not _targets:
        return
    try:
        connection = context.root_connection
        if not connection._allow_autobegin:
            return  # the dialect's first-connect initialisation
        # The compiled string is one object per compiled statement: its hash is cached, and
        # an expanded IN list or insertmanyvalues batch does not make a new cache entry.
        compiled = context.compiled
        key = compiled.string if compiled is not None else statement
        fingerprint = _shapes.get(key)
        if fingerprint is None:
            fingerprint = _shape(key)
        if not fingerprint:
            return
        # The first frame that is not infrastructure: a learned depth, else a walk.
        for depth, code in _hints:
            try:
                hinted = _getframe(depth)
            except ValueError:
                continue
            if hinted.f_code is code:
                start = hinted.f_back
                break
        else:
            start = _learn()
        offsets = _offsets(start)
        entry = _sites_by_offset.get(offsets)
        site = entry[0] if entry is not None else _site(start, offsets)
        options = context.execution_options
        loader = (
            _loader(context.invoked_statement, options["_sa_orm_load_options"])
            if "_sa_orm_load_options" in options  # one membership test for non-ORM statements
            else None
        )
        engine = connection.engine
        raw = (statement, parameters, executemany, fingerprint, engine, site, loader)
        for only, pending, log, fold_at in _targets:
            if only is None or only is engine:
                pending.append(raw)
                if len(pending) >= fold_at[0]:
                    log._fold()  # memory stays O(shapes), however many statements run
    except Exception as error:  # a guest in the user's query: never raise into it
        if len(_listener_errors) < 10:
            _listener_errors.append(error)


_record = _capture

_LISTENERS = (
    ("do_execute", _capture),
    ("do_executemany", _do_executemany),
    ("do_execute_no_params", _do_execute_no_params),
)

def acquire() -> None:
    """Install the recorder (reference counted)."""
    global _users
    with _lock:
        _users += 1
        if _users == 1:
            for name, listener in _LISTENERS:
                event.listen(Engine, name, listener)


def release() -> None:
    """Remove the recorder when its last user is gone."""
    global _users
    with _lock:
        _users -= 1
        if _users == 0:
            for name, listener in _LISTENERS:
                event.remove(Engine, name, listener)


def open_window(log: QueryLog) -> None:
    """Start recording into ``log``."""
    global _targets
    acquire()
    with _lock:
        _targets = (*_targets, (log._engine, log._pending, log, log._fold_at))


def open_windows() -> list[QueryLog]:
    """The windows recording right now."""
    with _lock:
        return [target[2] for target in _targets]


def close_window(log: QueryLog) -> None:
    """Stop recording into ``log``."""
    global _targets
    with _lock:
        for index in range(len(_targets) - 1, -1, -1):
            if _targets[index][2] is log:
                _targets = _targets[:index] + _targets[index + 1 :]
                break
    release()
