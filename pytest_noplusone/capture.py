"""Capture SQL round-trips from every Engine and attribute each to the user's code.

Listeners of the ``do_execute``, ``do_executemany`` and ``do_execute_no_params`` dialect events
on the ``Engine`` *class* record each DB-API execution: they see every sync engine and the
``sync_engine`` behind every ``AsyncEngine``. They record into the open windows (``QueryLog``
objects); the windows are process-wide, so queries made in other threads and tasks count too.
Each statement is recorded with its fingerprint and the node of its call chain (``frames``).
"""

from __future__ import annotations

import operator
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from types import CodeType, FrameType
from typing import Any, NamedTuple

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine

from . import detection, frames
from .frames import EMPTY, Node, Site

__all__ = ["CapturedQuery", "Location", "QueryLog", "ShapeStats"]

_TRANSACTION_CONTROL = re.compile(
    r"\s*(begin|start\s+transaction|commit|end|rollback|savepoint|release)\b",
    re.IGNORECASE,
)

# What diagnosis reads of the classification (frames.py holds it).
_kinds = frames.kinds
_classify = frames.classify
_USER = frames.USER
_user_frames = frames.user_frames


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
_Site = Site


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
        site: Site,
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
        ``"eager"`` for the batches of a ``selectinload``/``subqueryload``, ``"refresh"`` for
        ``session.refresh()``, ``"expired"`` for reloading expired attributes, else ``None``."""
        return self._loader[0] if self._loader is not None else None

    @property
    def relationship(self) -> str | None:
        """``"Model.attr"`` for a relationship load (``"Model"`` for a refresh or reload)."""
        return self._loader[1] if self._loader is not None else None

    @property
    def parent_key(self) -> Any:
        """The identity key of the object whose relationship was lazily loaded (or which was
        refreshed)."""
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
        """The user's frames, innermost first, out to the test (through tasks and threads)."""
        return tuple(Location(*frame) for frame in self._frames)

    @property
    def call_site_key(self) -> _Frames:
        """A hashable key for the call site."""
        return self._frames

    @property
    def background(self) -> bool:
        """True when it ran in a thread or task that code of yours started before the window
        opened (a poller started by a fixture)."""
        return self._site.background

    def __repr__(self) -> str:
        return f"<CapturedQuery {self.sql[:60]!r} at {self.location}>"


#: How many executions of a shape are sampled (their values, for telling loops, repeats,
#: pages and chunks apart).
MAX_SAMPLES = 16
#: How many distinct invocations a shape counts per frame of its chain.
_MAX_INVOCATIONS = detection.MAX_DISTINCT


class ShapeStats:
    """Aggregate of the statements of one fingerprint from one chain of lines."""

    __slots__ = ("count", "example", "levels", "libraries", "parent_keys", "samples")

    def __init__(self, example: CapturedQuery) -> None:
        self.count = 0
        self.example = example
        #: Distinct parents of lazy loads (bounded).
        self.parent_keys: set[Any] = set()
        #: (values, paging values, parameters) of the first executions, in order.
        self.samples: list[tuple[Any, Any, Any]] = []
        #: Per frame of the chain (innermost first): statements per invocation (frame
        #: instance); the frames are held, so that an identity is never reused.
        self.levels: list[dict[Any, int]] = [{} for _ in example.call_site_key]
        #: Statements per invocation of the library called by your innermost frame (None: not
        #: through a library).
        self.libraries: dict[Any, int] = {}

    @property
    def parameter_sets(self) -> set[Any]:
        """The distinct values among the sampled executions."""
        return {values for values, _, _ in self.samples}

    def sampling(self) -> bool:
        """Whether a further statement of this shape still adds a sample or a parent."""
        if self.example._loader is not None and self.example._loader[0] == "lazy":
            return self.example._loader[2] is not None and len(self.parent_keys) < _MAX_DISTINCT
        return len(self.samples) < MAX_SAMPLES

    def invocation(self, level: int) -> tuple[Any, int] | None:
        """The invocation of the chain's frame ``level`` that ran most of these statements,
        and how many it ran."""
        if level >= len(self.levels) or not self.levels[level]:
            return None
        return max(self.levels[level].items(), key=operator.itemgetter(1))

    def release(self) -> None:
        """Drop the frames held for telling invocations apart (the counts stay)."""
        self.levels = [{id(frame): count for frame, count in lv.items()} for lv in self.levels]
        self.libraries = {
            (id(frame) if frame is not None else None): count
            for frame, count in self.libraries.items()
        }


_MAX_DISTINCT = detection.MAX_DISTINCT


#: One statement as the listener records it. A tuple is cheap to make; the query object is
#: made only when someone reads ``QueryLog.queries``.
_Raw = tuple[str, Any, bool, str, "Engine | None", "Node | None", Any, "FrameType | None"]
#: A recorded statement's key before it is grouped: (fingerprint, node, library frame).
_NODE_KEY = operator.itemgetter(3, 5, 7)


def _query(raw: _Raw) -> CapturedQuery:
    node = raw[5]
    return CapturedQuery(*raw[:5], node.site if node is not None else EMPTY, raw[6])


#: Recorded statements a log holds before the listener folds them into its aggregates.
_BATCH = 256


class QueryLog:
    """The queries captured in one window: a test body or a ``capture_queries`` block."""

    def __init__(self, *, engine: Engine | None = None, keep: int | None = None) -> None:
        self._engine = engine
        self._keep = sys.maxsize if keep is None else keep
        self._count = 0
        self._made: list[CapturedQuery] = []
        self._shapes: dict[tuple[str, Site], ShapeStats] = {}
        #: Shapes N+1 detection skips: repeated on purpose (``assert_constant_queries`` runs).
        self.exempt: set[tuple[str, Site]] = set()
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
    def shapes(self) -> dict[tuple[str, Site], ShapeStats]:
        """Per (fingerprint, chain of lines) aggregates, in first-seen order."""
        self._fold()
        return self._shapes

    @property
    def queries(self) -> list[CapturedQuery]:
        """The captured statements (the first ``keep`` of them when a limit is set)."""
        self._fold()
        return self._made

    @property
    def truncated(self) -> bool:
        """True when more statements ran than ``queries`` keeps."""
        return self.count > len(self._made)

    def release(self) -> None:
        """Drop the frames the aggregates hold (once the findings are made)."""
        self._fold()
        with self._folding:
            for stats in self._shapes.values():
                stats.release()

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
            room = self._keep - len(self._made)
            if room > 0:
                self._made.extend(map(_query, batch[:room]))
            shapes = self._shapes
            # Counting is done in C (a Counter of (fingerprint, node, library) triples); the
            # chain of each distinct node is walked once per batch, and statement by statement
            # the fold visits only the shapes that still sample.
            visit: dict[tuple[str, Site], int] = {}
            for (fingerprint, node, library), count in Counter(map(_NODE_KEY, batch)).items():
                key = (fingerprint, node.site if node is not None else EMPTY)
                stats = shapes.get(key)
                if stats is None or stats.sampling():
                    visit[key] = visit.get(key, 0) + count
                    if stats is None:
                        raw = next(r for r in batch if r[3] == fingerprint and r[5] is node)
                        stats = shapes[key] = ShapeStats(_query(raw))
                stats.count += count
                _invocations(stats, node, library, count)
            if visit:
                self._visit(batch, visit)

    def _visit(self, batch: list[_Raw], visit: dict[tuple[str, Site], int]) -> None:
        """Sample the statements of the shapes in ``visit`` one by one while they sample."""
        shapes = self._shapes
        for raw in batch:
            node = raw[5]
            key = (raw[3], node.site if node is not None else EMPTY)
            left = visit.get(key)
            if left is None:
                continue
            stats = shapes[key]
            loader = raw[6]
            if loader is not None and loader[0] == "lazy":
                # ORM loaders are judged by their parents, not by their (often long) IN lists.
                if loader[2] is not None and len(stats.parent_keys) < _MAX_DISTINCT:
                    stats.parent_keys.add(loader[2])
            elif len(stats.samples) < MAX_SAMPLES and not raw[2]:
                stats.samples.append(detection.sample(raw[0], raw[1]))
                if loader is not None and loader[2] is not None:
                    stats.parent_keys.add(loader[2])
            left -= 1
            if left and stats.sampling():
                visit[key] = left
                continue
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


def _invocations(stats: ShapeStats, node: Node | None, library: Any, count: int) -> None:
    """Count ``count`` statements of ``node`` into each frame's invocations."""
    levels = stats.levels
    level = 0
    while node is not None and level < len(levels):
        _add(levels[level], node.frame, count)
        node = node.up
        level += 1
    _add(stats.libraries, library, count)


def _add(counts: dict[Any, int], invocation: Any, count: int) -> None:
    """Add ``count`` statements to an invocation's, counting at most _MAX_INVOCATIONS of them."""
    seen = counts.get(invocation)
    if seen is not None:
        counts[invocation] = seen + count
    elif len(counts) < _MAX_INVOCATIONS:
        counts[invocation] = count


_lock = threading.Lock()
#: The open windows, as the listener reads them: (engine filter, pending list, log, fold
#: threshold cell) each. Replaced, never changed in place, so the listener reads it without a
#: lock.
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


# Skipping SQLAlchemy's frames one by one costs a frame object each. Most statements arrive
# through a handful of call paths, so the depth of the first frame that is not infrastructure
# is learned per path: a hint (depth, code of the frame just below it, whether that frame is a
# library's) is checked by fetching that one frame with sys._getframe, and a miss falls back
# to the walk, which learns a hint. Depths count from ``_capture``'s frame (0), whose caller
# is SQLAlchemy's execution or one of the listeners below (1).
_hints: list[tuple[int, CodeType, bool]] = []
_getframe = sys._getframe
_MAX_HINTS = 16


def _learn() -> tuple[FrameType | None, FrameType | None]:
    """Walk from SQLAlchemy's frame below the listener to the first one that is not
    infrastructure (None: the chain ended in this greenlet), and remember the depth as a hint.
    Also returns the frame below it when that is a library's."""
    # 0 is this function, 1 _capture, 2 SQLAlchemy's execution or one of the listeners below
    # that call _capture (this module's frames are infrastructure too).
    kinds = frames.kinds
    frame: FrameType | None = sys._getframe(2)
    depth = 2
    below = None
    while frame is not None:
        filename = frame.f_code.co_filename
        kind = kinds.get(filename)
        if kind is None:
            kind = frames.classify(filename)
        if not kind & 1:
            break
        below = frame
        frame = frame.f_back
        depth += 1
    library = False
    if below is not None:
        library = frames.is_library(below)
        if len(_hints) >= _MAX_HINTS:
            del _hints[0]
        _hints.append((depth - 2, below.f_code, library))  # counted from _capture's frame
    return frame, below if library else None


def _start(start: FrameType | None) -> tuple[Node | None, FrameType | None]:
    """The node of a statement whose first frame that is not infrastructure is ``start`` (a
    boundary, or None: the chain goes on in the parent greenlet), and the library frame below
    the user's frame when there is one."""
    user, glet, origin, below = frames.first_user(start, None)
    if user is None:
        return origin, None
    return frames.node(user, glet), below if start is None else None


# Relationship loads are recognised from the ORM's own state on the execution context: the
# ORM load options (present only for ORM loads), the statement's loader path (not the root
# path: a lazy load, or a selectin/subquery batch), the load options' ``_lazy_loaded_from``
# (the parent of a lazy load) and ``_refresh_state`` (an object refreshed, or its expired
# attributes reloaded). No ORM event is needed: other statements pay one dict lookup.
_names: dict[Any, str] = {}


def _loader(statement: Any, options: Any) -> tuple[str, str, Any] | None:
    """``("lazy", "Model.attr", parent key)``, ``("eager", "Model.attr", None)``,
    ``("refresh" or "expired", "Model", key)``, from the statement and its ORM load options
    (``_sa_orm_load_options``)."""
    path = getattr(getattr(statement, "_compile_options", None), "_current_path", None)
    if path is None or path.is_root:
        state = getattr(options, "_refresh_state", None)
        if state is None:
            return None
        kind = "refresh" if _refreshing() else "expired"
        return (kind, state.class_.__name__, state.key or id(state))
    prop = getattr(path, "prop", None)
    name = _names.get(prop)
    if name is None:
        name = _names[prop] = str(prop) if prop is not None else "?"
    parent = getattr(options, "_lazy_loaded_from", None)
    if parent is None:
        return ("eager", name, None)
    if _refreshing():
        return ("eager", name, None)  # loaded by session.refresh(): the refresh loads it
    return ("lazy", name, parent.key or id(parent))


def _refreshing() -> bool:
    """Whether ``Session.refresh`` is on the stack (an ORM reload that is not a lazy one)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "refresh" and code.co_filename.endswith(_SESSION_FILES):
            return True
        frame = frame.f_back
    return False


_SESSION_FILES = (os.path.join("orm", "session.py"), os.path.join("asyncio", "session.py"))


# The recorder is a set of DialectEvents listeners (do_execute, do_executemany,
# do_execute_no_params): they fire for every DB-API cursor execution, insertmanyvalues batches
# included, and unlike ConnectionEvents they do not switch SQLAlchemy's execution path to its
# slower, event-firing branch for every statement. The recorder itself (``_capture``) listens
# to do_execute, the common case.


def _do_executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> None:
    if _targets:
        _capture(cursor, statement, parameters, context, True)


def _do_execute_no_params(cursor: Any, statement: str, context: Any) -> None:
    if _targets:
        _capture(cursor, statement, (), context, False)


def _capture(
    cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool = False
) -> None:
    # The hot path: every line here runs once per statement while a window is open. Python
    # calls are its main cost, so the common case (a known call path and frame instance, not
    # an ORM relationship load) is written out here instead of in helpers, and recording is
    # an append (QueryLog._fold counts later).
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
        library = None
        for depth, code, through_library in _hints:
            try:
                hinted = _getframe(depth)
            except ValueError:
                continue
            if hinted.f_code is code:
                start = hinted.f_back
                if through_library:
                    library = hinted
                break
        else:
            start, library = _learn()
        # A frame instance seen before (a loop): its node at this instruction, no walk.
        found = None
        if start is not None:
            entry = _entries.get(start)
            if entry is not None and entry.back is None:
                found = entry.nodes.get(start.f_lasti)
        if found is None:
            found, below = _start(start)
            library = library or below
        options = context.execution_options
        statement_object = context.invoked_statement
        loader = (
            _loader(statement_object, options["_sa_orm_load_options"])
            if "_sa_orm_load_options" in options  # one membership test for non-ORM statements
            else None
        )
        # Where the objects of an ORM query were loaded, for a lazy-load message later.
        _orm.last = (statement_object, found)
        engine = connection.engine
        raw = (statement, parameters, executemany, fingerprint, engine, found, loader, library)
        for only, pending, log, fold_at in _targets:
            if only is None or only is engine:
                pending.append(raw)
                if len(pending) >= fold_at[0]:
                    log._fold()  # memory stays O(shapes), however many statements run
    except Exception as error:  # a guest in the user's query: never raise into it
        if len(_listener_errors) < 10:
            _listener_errors.append(error)


_entries = frames.entries
#: The last statement this thread recorded: (the statement object, its node).
_orm = threading.local()


def orm_site(statement: Any) -> Site | None:
    """The chain of the statement that this thread last recorded, when it is ``statement`` (the
    ORM query now loading its rows); None when it is not known."""
    last = getattr(_orm, "last", None)
    if last is None or last[0] is not statement:
        return None
    _orm.last = None
    return last[1].site if last[1] is not None else EMPTY

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
            frames.install()


def release() -> None:
    """Remove the recorder when its last user is gone."""
    global _users
    with _lock:
        _users -= 1
        if _users == 0:
            for name, listener in _LISTENERS:
                event.remove(Engine, name, listener)
            frames.uninstall()


def open_window(log: QueryLog) -> None:
    """Start recording into ``log``."""
    global _targets
    acquire()
    with _lock:
        _targets = (*_targets, (log._engine, log._pending, log, log._fold_at))
        frames.windows_open[0] = True
        frames.follow_anyio()


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
        if not _targets:
            frames.windows_open[0] = False
            frames.forget()  # the frames seen in the windows are released
    release()
