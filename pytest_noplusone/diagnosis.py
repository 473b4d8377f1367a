"""Recognise a failure caused by a lazy load and say which relationship, where, and how to fix it.

Two sources, one description (``LazyLoad``):

- the exception a test failed with: its whole graph is walked (exception groups, ``.orig`` of
  ``StatementError``, ``__cause__``, ``__context__``), and the relationship is read from the
  traceback's outermost ``_fire_loader_callables`` frame (NOTES-sqlalchemy.md, "Recognising a
  lazy-load failure");
- violations recorded when they happen (the forced loader's guard, and a wrapper around
  SQLAlchemy's ``_fire_loader_callables`` for ``MissingGreenlet``), so that a test whose code
  swallowed the error still fails.

The query that loaded the parent objects is found through ``InstanceState.runid``: a ``load``
listener remembers the user's line once per query run, not once per object.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import re
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from types import FrameType, TracebackType
from typing import Any, NamedTuple

import greenlet
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import Mapper, RelationshipProperty
from sqlalchemy.orm import attributes as orm_attributes
from sqlalchemy.orm import exc as orm_exc
from sqlalchemy.orm.interfaces import MANYTOMANY, MANYTOONE, ONETOMANY

from . import capture, messages
from .capture import Location

__all__ = [
    "LazyLoad",
    "Violation",
    "allow_names",
    "begin_test",
    "context_of",
    "explain_failure",
    "explained",
    "explained_text",
    "from_exception",
    "install",
    "lazy_option",
    "record",
    "relationship_kind",
    "swallowed",
    "uninstall",
]

#: Why the load failed: the forced (or mapped) raise, an implicit query in async code, a
#: detached parent, a parent expired by commit(), a deferred column, or a query that async
#: code ran without an await and outside any attribute (a batch loader on the sync session).
CAUSES = (
    "raise_on_sql", "raise", "missing_greenlet", "detached", "expired", "deferred", "no_await"
)

_RAISE_MESSAGE = re.compile(r"'(\w+)\.(\w+)' is not available due to lazy='(raise_on_sql|raise)'")
_LOADER_FRAME = "_fire_loader_callables"
_CALL_SITE = 2


def relationship_kind(prop: Any) -> str:
    """``one-to-many collection``, ``many-to-many collection``, ``many-to-one``, ...."""
    direction = prop.direction
    if direction is MANYTOONE:
        return "many-to-one"
    if direction is ONETOMANY:
        return "one-to-many collection" if prop.uselist else "one-to-one scalar"
    if direction is MANYTOMANY:
        return "many-to-many collection" if prop.uselist else "many-to-many scalar"
    return "relationship"


class LazyLoad(NamedTuple):
    """One lazy load that failed: what, why, where."""

    #: ``Model.attr`` as SQLAlchemy names it (the class that maps the attribute).
    attribute: str
    #: The class of the object touched, for the fix (``select(Owner)``).
    owner: str
    key: str
    #: ``relationship_kind`` for a relationship, ``None`` for a column.
    kind: str | None
    cause: str
    #: The user's frames that touched it, innermost first.
    touched: tuple[Location, ...]
    #: The user's line of the query that loaded the object, when known.
    parents_loaded_at: Location | None
    #: Whether the owner class mixes in ``AsyncAttrs`` (``awaitable_attrs`` is available).
    async_attrs: bool = False
    #: Where it was touched: ``"async"`` (an ``AsyncSession``'s object, outside an await),
    #: ``"sync"`` (sync code, or no session), ``"greenlet"`` (inside ``run_sync`` and the like).
    context: str = "sync"
    #: Whether an assignment (``obj.rel = [...]``) loaded it, to replace its contents.
    write: bool = False
    #: When the object came from a relationship load (``selectinload(Address.user)``): the
    #: class of the query that loaded it, and the loader options chained from there to it.
    loaded_via: tuple[str, tuple[str, ...]] | None = None
    #: The loader option of the parent's query that asked for this lazy load
    #: (``lazyload(User.posts)``, ``lazyload("*")``).
    lazy_option: str | None = None

    @property
    def collection(self) -> bool:
        """Whether the attribute is a collection (selectinload) rather than a scalar."""
        return self.kind is not None and self.kind.endswith("collection")


# -- where the parents were loaded -------------------------------------------------------------

_MAX_SITES = 4096
_sites: dict[int, Location | None] = {}
_last_runid: int | None = None


def _on_load(state: Any, context: Any) -> None:
    global _last_runid
    runid = context.runid
    if runid == _last_runid:  # the same query run: one frame walk per query, not per object
        return
    try:
        _last_runid = runid
        # The chain the capture has just found for this query, else a walk (outside windows).
        site = capture.orm_site(context.query)
        frames = site.frames if site is not None else capture._user_frames(sys._getframe(1))
        if len(_sites) >= _MAX_SITES:
            _sites.clear()
        _sites[runid] = Location(*frames[0]) if frames else None
        for option in getattr(context.query, "_with_options", ()):
            if getattr(option, "strategy", None) == _LAZY and type(option).__name__.startswith(
                "_Wildcard"
            ):
                if len(_lazy_runs) >= _MAX_SITES:
                    _lazy_runs.clear()
                _lazy_runs.add(runid)
    except Exception:  # a guest in the user's query: never raise into it
        pass


def _parents_site(state: Any) -> Location | None:
    runid = getattr(state, "runid", None)
    return _sites.get(runid) if runid is not None else None


# -- describing one lazy load ------------------------------------------------------------------


def _expired(state: Any) -> bool:
    return bool(getattr(state, "expired_attributes", None) or getattr(state, "expired", False))


def allow_names(load: LazyLoad) -> list[tuple[str, str]]:
    """The ``(Class, key)`` names an ``allow_lazy`` entry can match ``load`` by (none for a
    column: only a bare marker allows it)."""
    if load.kind is None:
        return []
    head = load.attribute.rsplit(".", 1)[0]  # Class, or module.Class
    names = [(load.owner, load.key), (head, load.key), (head.rsplit(".", 1)[-1], load.key)]
    return list(dict.fromkeys(names))


def _async_io_greenlet() -> type | None:
    try:  # SQLAlchemy 2.0 tells its greenlets by class; 2.1 by a class attribute
        module = importlib.import_module("sqlalchemy.util._concurrency_py3k")
    except ImportError:
        return None
    found = getattr(module, "_AsyncIoGreenlet", None)
    return found if isinstance(found, type) else None


_AsyncIoGreenlet = _async_io_greenlet()


def in_greenlet_spawn() -> bool:
    """Whether sync-style code runs under ``greenlet_spawn`` (``run_sync``, an awaited ORM
    call), where a query can run."""
    current = greenlet.getcurrent()
    return getattr(current, "__sqlalchemy_greenlet_provider__", False) or (
        _AsyncIoGreenlet is not None and isinstance(current, _AsyncIoGreenlet)
    )


def context_of(state: Any) -> str:
    """Where a lazy load of ``state`` runs now: ``"greenlet"`` inside ``greenlet_spawn``
    (``run_sync``, ``awaitable_attrs``), ``"async"`` for an object of an async engine's session
    (its query needs an await), ``"sync"`` otherwise (and ``"detached"`` without a session)."""
    if in_greenlet_spawn():
        return "greenlet"
    session = getattr(state, "session", None)
    if session is None:
        return "detached"
    try:
        bind = session.get_bind(mapper=state.mapper)
    except Exception:  # unbound: the load fails the same way anywhere
        return "sync"
    return "async" if getattr(bind.dialect, "is_async", False) else "sync"


def _write_below(frame: FrameType | None) -> bool:
    """Whether an attribute assignment is between ``frame`` and the user's code."""
    for _ in range(12):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name == "__set__" and code.co_filename.endswith("attributes.py"):
            return True
        if _is_user(code.co_filename):
            return False
        frame = frame.f_back
    return False


def _describe(
    token: Any,
    state: Any,
    cause: str,
    touched: tuple[Location, ...],
    name: str | None = None,
    *,
    context: str | None = None,
    write: bool = False,
) -> LazyLoad:
    owner_class = getattr(state, "class_", None) or token.parent.class_
    key = token.key
    if isinstance(token, RelationshipProperty):
        kind: str | None = relationship_kind(token)
        if cause in ("missing_greenlet", "detached") and _expired(state):
            cause = "expired"
    else:  # a column: reloading an expired one, or loading a deferred one
        kind = None
        expired = state is not None and key in getattr(state, "expired_attributes", ())
        if cause == "missing_greenlet" or (cause == "detached" and expired):
            cause = "expired" if expired else "deferred"
    return LazyLoad(
        attribute=name or _attribute_name(token),
        owner=owner_class.__name__,
        key=key,
        kind=kind,
        cause=cause,
        touched=touched,
        parents_loaded_at=_parents_site(state),
        async_attrs=isinstance(owner_class, type) and issubclass(owner_class, AsyncAttrs),
        context=_context(state, cause) if context is None else context,
        write=write,
        loaded_via=_loaded_via(state) if isinstance(token, RelationshipProperty) else None,
        lazy_option=(
            lazy_option(state, token)
            if state is not None and isinstance(token, RelationshipProperty)
            else None
        ),
    )


_LAZY = (("lazy", "select"),)
#: The runs (``runid``) of queries with ``lazyload("*")``: the wildcard is not kept on the
#: objects it loads, so ``_on_load`` remembers the query.
_lazy_runs: set[int] = set()


def lazy_option(state: Any, prop: Any) -> str | None:
    """The option of ``state``'s query that asked for ``prop`` to load lazily, or None."""
    for option in state.load_options or ():
        for element in getattr(option, "context", ()):
            path: tuple[Any, ...] = tuple(getattr(element.path, "path", ()))
            if len(path) >= 2 and path[-2] is prop and element.strategy == _LAZY:
                return f"lazyload({prop.parent.class_.__name__}.{prop.key})"
    if _lazy_runs and getattr(state, "runid", None) in _lazy_runs:
        return 'lazyload("*")'
    return None


_LOADERS = {
    "selectin": "selectinload",
    "joined": "joinedload",
    "subquery": "subqueryload",
    "immediate": "immediateload",
}


def _loaded_via(state: Any) -> tuple[str, tuple[str, ...]] | None:
    """The query class and the loader options that brought ``state`` in through relationships
    (``("Address", ("selectinload(Address.user)",))``), or None for a top-level object."""
    try:
        path = tuple(getattr(getattr(state, "load_path", None), "path", ()) or ())
        if len(path) < 3:
            return None
        strategies: dict[tuple[Any, ...], Any] = {}
        for option in getattr(state, "load_options", ()) or ():
            for element in getattr(option, "context", ()):
                key = tuple(getattr(element.path, "path", ()))
                strategies.setdefault(key, dict(element.strategy or ()).get("lazy"))
        hops = []
        for end in range(2, len(path), 2):
            prop = path[end - 1]
            lazy = strategies.get(path[: end + 1])
            if lazy not in _LOADERS:
                lazy = prop.lazy if prop.lazy in _LOADERS else None
            if lazy is None:  # loaded lazily, or by a loader we cannot see: the usual one
                lazy = "selectin" if prop.uselist else "joined"
            hops.append(f"{_LOADERS[lazy]}({prop.parent.class_.__name__}.{prop.key})")
        return path[0].class_.__name__, tuple(hops)
    except Exception:  # a description, never a reason to fail
        return None


def _attribute_name(token: Any) -> str:
    """``User.posts``; ``shop.models.User.posts`` when another mapped class is named User."""
    from .enforcement import _all_mappers  # enforcement imports this module

    cls = token.parent.class_
    name = cls.__name__
    if any(m.class_ is not cls and m.class_.__name__ == name for m in _all_mappers()):
        return f"{cls.__module__}.{name}.{token.key}"
    return str(token)


def _context(state: Any, cause: str) -> str:
    if cause == "missing_greenlet":
        return "async"
    context = context_of(state) if state is not None else "sync"
    return "sync" if context == "detached" else context


def _cause(error: BaseException) -> tuple[str, re.Match[str] | None] | None:
    if isinstance(error, exc.MissingGreenlet):
        return "missing_greenlet", None
    if isinstance(error, orm_exc.DetachedInstanceError):
        return "detached", None
    if isinstance(error, exc.InvalidRequestError):
        match = _RAISE_MESSAGE.search(str(error))
        if match is not None:
            return match.group(3), match
    return None


def _is_user(filename: str) -> bool:
    kind = capture._kinds.get(filename)
    if kind is None:
        kind = capture._classify(filename)
    return kind == capture._USER


def _frames_of(tb: TracebackType | None) -> Iterator[tuple[FrameType, int]]:
    while tb is not None:
        yield tb.tb_frame, tb.tb_lineno
        tb = tb.tb_next


class _Located(NamedTuple):
    loader: FrameType
    touched: tuple[Location, ...]
    #: Whether ``greenlet_spawn`` ran the code that touched it (``run_sync``).
    in_greenlet: bool
    write: bool


def _distinct(locations: Iterable[Location]) -> tuple[Location, ...]:
    """The first ``_CALL_SITE`` locations, innermost first, skipping a repeated line (a lambda
    or comprehension on the line of its caller): the caller of that function is shown."""
    kept: list[Location] = []
    for location in locations:
        if kept and (location.filename, location.lineno) == (kept[-1].filename, kept[-1].lineno):
            continue
        kept.append(location)
        if len(kept) == _CALL_SITE:
            break
    return tuple(kept)


def _loader_in_traceback(tb: TracebackType | None) -> _Located | None:
    """The outermost loader frame of ``tb`` and the user's frames that led to it."""
    users: list[Location] = []
    in_greenlet = write = False
    for frame, lineno in _frames_of(tb):
        code = frame.f_code
        if code.co_name == _LOADER_FRAME and "self" in frame.f_locals:
            return _Located(frame, _distinct(reversed(users)), in_greenlet, write)
        if _is_user(code.co_filename):
            users.append(Location(code.co_filename, lineno, code.co_name))
            write = False
        elif code.co_name == "greenlet_spawn":
            in_greenlet = True
        elif code.co_name == "__set__" and code.co_filename.endswith("attributes.py"):
            write = True
    return None


def _graph(error: BaseException) -> Iterator[tuple[BaseException, tuple[BaseException, ...]]]:
    """Every exception reachable from ``error``, with the exceptions that led to it."""
    seen: set[int] = set()
    pending: list[tuple[BaseException, tuple[BaseException, ...]]] = [(error, ())]
    while pending:
        current, ancestors = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current, ancestors
        children: list[Any] = list(getattr(current, "exceptions", None) or ())
        children += [getattr(current, "orig", None), current.__cause__, current.__context__]
        for child in children:
            if isinstance(child, BaseException):
                pending.append((child, (current, *ancestors)))


def from_exception(error: BaseException) -> list[LazyLoad]:
    """The failed lazy loads in ``error``'s exception graph (empty when it is something else)."""
    loads: list[LazyLoad] = []
    for current, ancestors in _graph(error):
        found = _cause(current)
        if found is None:
            continue
        cause, match = found
        for candidate in (current, *ancestors):
            located = _loader_in_traceback(candidate.__traceback__)
            if located is not None:
                break
        else:
            located = None
        if located is not None:
            frame = located.loader
            token = getattr(frame.f_locals["self"], "parent_token", None)
            if token is None or not hasattr(token, "parent"):
                continue
            load = _describe(
                token,
                frame.f_locals.get("state"),
                cause,
                located.touched,
                context="greenlet" if located.in_greenlet else None,
                write=located.write,
            )
        elif match is not None:  # raised away from a traceback we can read: use the message
            prop = _find_relationship(match.group(1), match.group(2))
            if prop is None:
                continue
            load = _describe(prop, None, cause, (), name=f"{match.group(1)}.{match.group(2)}")
        elif id(current) in _raw:  # a MissingGreenlet raised away from any attribute
            load = _raw[id(current)][1]
        else:  # a MissingGreenlet or detached error that is not a lazy load
            continue
        if load not in loads:
            loads.append(load)
    return loads


def _find_relationship(class_name: str, key: str) -> Any:
    from .enforcement import _all_mappers  # enforcement imports this module

    for mapper in _all_mappers():
        if mapper.class_.__name__ == class_name:
            prop = mapper._props.get(key)
            if isinstance(prop, RelationshipProperty):
                return prop
    return None


# -- violations recorded as they happen --------------------------------------------------------


class Violation:
    """A lazy load that failed during the current test, however it was handled."""

    __slots__ = ("count", "errors", "load")

    def __init__(self, load: LazyLoad, errors: list[BaseException], count: int = 0) -> None:
        self.load = load
        #: The errors raised (a few per failure: SQLAlchemy 2.1 wraps MissingGreenlet).
        self.errors = errors
        #: How many times it failed.
        self.count = count

    def __repr__(self) -> str:
        return f"Violation(load={self.load!r}, errors={self.errors!r}, count={self.count!r})"


_lock = threading.Lock()
_violations: dict[LazyLoad, Violation] = {}
_MAX_ERRORS = 100


def begin_test() -> None:
    """Forget the violations of the previous test."""
    if _violations:  # most tests have none: no lock to take
        with _lock:
            _violations.clear()
            _raw.clear()


def violations() -> list[Violation]:
    """The violations recorded since ``begin_test``."""
    with _lock:
        return list(_violations.values())


def _add(load: LazyLoad, errors: Iterable[BaseException | None]) -> None:
    with _lock:
        violation = _violations.get(load)
        if violation is None:
            violation = _violations[load] = Violation(load, [])
        violation.count += 1
        if len(violation.errors) < _MAX_ERRORS:
            violation.errors.extend(error for error in errors if error is not None)


def _touched(frame: FrameType | None) -> tuple[Location, ...]:
    """The user's frames that touched an attribute, from ``frame`` outwards, innermost first."""
    return _distinct(Location(*user) for user in capture._user_frames(frame))


def record(prop: Any, state: Any, error: BaseException) -> None:
    """Called by the forced loader's guard when a lazy load raised."""
    try:
        found = _cause(error)
        if found is None:
            return
        frame = sys._getframe(2)
        load = _describe(prop, state, found[0], _touched(frame), write=_write_below(frame))
        _add(load, [error])
    except Exception:  # never replace the user's error with ours
        pass


# -- MissingGreenlet as it leaves a loader ----------------------------------------------------
# A lazy load (or an expired attribute's reload) that runs SQL in async code fails with
# MissingGreenlet, raised by the driver's adapter: while executing on asyncpg, while creating
# the cursor on aiosqlite with SQLAlchemy 2.1 (which wraps it in a StatementError). Every such
# load starts in the attribute implementation's _fire_loader_callables, so a wrapper there
# sees the error its caller will see, wrapped or not, while the stack is still live. (The
# engine's handle_error event sees it too, but a DialectEvents listener puts every statement
# of every dialect on SQLAlchemy's event-dispatch path, which cost more than the plugin's
# whole recorder: the README's Performance section.)


def _find_loader_owner() -> type | None:
    """The class that defines ``_fire_loader_callables`` (``_AttributeImpl`` on 2.1; both 2.0
    and 2.1 have it, and the traceback analysis reads the same frame)."""
    for value in vars(orm_attributes).values():
        if isinstance(value, type) and _LOADER_FRAME in value.__dict__:
            return value
    return None


_loader_owner = _find_loader_owner()
_loader_original: Any = _loader_owner.__dict__[_LOADER_FRAME] if _loader_owner else None
#: Errors recorded already: each wrapper on the stack sees the same error go by.
_seen_errors: weakref.WeakSet[BaseException] = weakref.WeakSet()


def _fire_loader_callables(self: Any, state: Any, key: str, passive: Any) -> Any:
    """Named as the original, with its ``self`` and ``state``: the diagnosis reads them."""
    __tracebackhide__ = True
    try:
        return _loader_original(self, state, key, passive)
    except exc.SQLAlchemyError as error:
        _loader_failed(error)
        raise


def _missing_greenlet(error: BaseException) -> BaseException | None:
    """``error`` itself, or what it wraps, when that is a ``MissingGreenlet``."""
    current: BaseException | None = error
    for _ in range(4):
        if current is None or isinstance(current, exc.MissingGreenlet):
            return current
        wrapped = getattr(current, "orig", None)
        if isinstance(current, exc.StatementError) and isinstance(wrapped, BaseException):
            current = wrapped
        else:
            current = current.__cause__
    return None


def _loader_failed(error: BaseException) -> None:
    try:
        original = _missing_greenlet(error)
        if original is None or error in _seen_errors:
            return
        _seen_errors.add(error)
        loader: FrameType | None = None
        frame: FrameType | None = sys._getframe(1)  # the wrapper, if no other is outside it
        while frame is not None:
            if frame.f_code.co_name == _LOADER_FRAME and "self" in frame.f_locals:
                loader = frame  # keep walking: the outermost one is what the user touched
            frame = frame.f_back
        if loader is None:
            return
        token = getattr(loader.f_locals["self"], "parent_token", None)
        if token is None or not hasattr(token, "parent"):
            return
        _forget_raw(original)
        touched = _touched(loader.f_back)
        state = loader.f_locals.get("state")
        write = _write_below(loader.f_back)
        load = _describe(token, state, "missing_greenlet", touched, write=write)
        _add(load, [error] if error is original else [error, original])
    except Exception:  # a guest in the user's load: never replace its error with ours
        pass


# -- every other MissingGreenlet -----------------------------------------------------------
# A query that async code runs without an await and outside any attribute (a GraphQL batch
# loader calling SQLAlchemy's selectin loader on an AsyncSession's sync_session, a sync helper
# using session.sync_session) fails with MissingGreenlet too, and is as often swallowed. Its
# creation is the one place every path shares: MissingGreenlet.__init__ records it while the
# stack is live (a load through an attribute is left to _loader_failed, which knows more).

#: ``id(error)`` -> (the error, its description), for the errors recorded at creation.
_raw: dict[int, tuple[BaseException, LazyLoad]] = {}
_missing_greenlet_init: Any = None
#: ``MissingGreenlet.__init__`` as the class defines it (None: inherited), to restore exactly.
_own_init: Any = None


def _forget_raw(error: BaseException) -> None:
    entry = _raw.pop(id(error), None)
    if entry is None or entry[0] is not error:
        return
    with _lock:
        violation = _violations.get(entry[1])
        if violation is not None:
            violation.count -= 1
            violation.errors = [each for each in violation.errors if each is not error]
            if violation.count <= 0:
                del _violations[entry[1]]


def _created(error: BaseException) -> None:
    try:
        frame: FrameType | None = sys._getframe(2)
        strategy: Any = None
        start = frame
        while frame is not None:
            code = frame.f_code
            if code.co_name == _LOADER_FRAME:
                return  # an attribute's load: _loader_failed describes it
            owner = frame.f_locals.get("self") if strategy is None else None
            if isinstance(getattr(owner, "parent_property", None), RelationshipProperty):
                strategy = owner
            frame = frame.f_back
        touched = _touched(start)
        if strategy is not None:
            token = strategy.parent_property
            load = LazyLoad(
                attribute=_attribute_name(token),
                owner=token.parent.class_.__name__,
                key=token.key,
                kind=relationship_kind(token),
                cause="no_await",
                touched=touched,
                parents_loaded_at=None,
                context="async",
            )
        else:
            load = LazyLoad("", "", "", None, "no_await", touched, None, context="async")
        if len(_raw) >= _MAX_SITES:
            _raw.clear()
        _raw[id(error)] = (error, load)
        _add(load, [error])
    except Exception:  # a guest in the user's error: never replace it with ours
        pass


def _recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
    __tracebackhide__ = True
    _missing_greenlet_init(self, *args, **kwargs)
    _created(self)


def _is_test_code(filename: str, python_files: Sequence[str]) -> bool:
    name = os.path.basename(filename)
    return name == "conftest.py" or any(
        fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(filename, pattern)
        for pattern in python_files
    )


def swallowed(python_files: Sequence[str]) -> list[Violation]:
    """Violations whose error was caught outside test code (the code under test hid it).

    An error's traceback starts at the frame that caught it: a test module or a conftest.py
    (``with pytest.raises(...)`` in a test or its helper) means the test saw it.
    """
    hidden = []
    for violation in violations():
        caught = [error.__traceback__ for error in violation.errors]
        if not any(
            tb is not None and _is_test_code(tb.tb_frame.f_code.co_filename, python_files)
            for tb in caught
        ):
            hidden.append(violation)
    return hidden


def explain_failure(error: BaseException | None, python_files: Sequence[str]) -> str | None:
    """The explanation to show before a failed test's traceback, or ``None``.

    A lazy load in the failure's exception graph is explained; failing that, lazy loads whose
    errors something caught before the test saw them (and which may be why it failed).
    """
    loads = from_exception(error) if error is not None else []
    if loads:
        recorded = {violation.load: violation.count for violation in violations()}
        return "\n\n".join(
            messages.lazy_load_explanation(load, recorded.get(load, 1)) for load in loads
        )
    hidden = swallowed(python_files)
    if hidden:
        return messages.lazy_load_report(hidden, swallowed=False)
    return None


#: The user's line in an explanation (``messages.lazy_load_report``).
_TOUCHED = re.compile(r"^  touched at: (.+):(\d+) in \S+$", re.MULTILINE)


class _Crash(NamedTuple):
    """What pytest reads of a ``reprcrash``: ``path:lineno: message``."""

    path: str
    lineno: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.message}"


def _crash(text: str, path: str, lineno: int) -> _Crash:
    touched = _TOUCHED.search(text)
    if touched is not None:
        path, lineno = touched.group(1), int(touched.group(2))
    return _Crash(path, lineno, text.splitlines()[0])


class _ExplainedText:
    """An explained failure as an xdist controller receives it (text), with its ``reprcrash``.

    The controller's summary line and ``--tb=line`` then read as without xdist (pytest
    shows the whole of a plain-text ``longrepr`` as the summary line on CI).
    """

    def __init__(self, text: str) -> None:
        self.text = text

    @property
    def reprcrash(self) -> _Crash:
        """The explanation's first line, at the user's line that touched the relationship."""
        return _crash(self.text, "?", 0)

    def toterminal(self, tw: Any) -> None:
        """Write the text as the worker's report had it."""
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


def explained_text(longrepr: str) -> Any:
    """An explained ``longrepr`` received as text, given back its one-line ``reprcrash``."""
    return _ExplainedText(longrepr)


class _Explained:
    """A failure's ``longrepr`` with the noplusone explanation in front of the traceback.

    Duck-typed like pytest's own representations (``toterminal``, ``reprcrash``, ``str``);
    without ``reprtraceback`` it travels to an xdist controller as text, explanation included.
    """

    def __init__(self, text: str, original: Any) -> None:
        self.text = text
        self.original = original

    @property
    def reprcrash(self) -> Any:
        """The one-line crash description, for ``-ra``, ``--tb=line`` and junitxml.

        The explanation's first line, at the line of the user's code that touched the
        relationship: the same summary line as under xdist (which sends the text), and a
        ``--tb=line`` location in the user's code rather than in SQLAlchemy's.
        """
        original = getattr(self.original, "reprcrash", None)
        if original is None:
            return None
        return _crash(self.text, original.path, original.lineno)

    def toterminal(self, tw: Any) -> None:
        """Write the explanation, then the original traceback."""
        for number, line in enumerate(self.text.splitlines()):
            tw.line(line, red=True, bold=number == 0)
        tw.line("")
        self.original.toterminal(tw)

    def __str__(self) -> str:
        return f"{self.text}\n\n{self.original}"


def explained(longrepr: Any, text: str) -> Any:
    """``longrepr`` with ``text`` in front of it."""
    if longrepr is None or isinstance(longrepr, tuple):  # a skip: nothing to explain
        return longrepr
    if hasattr(longrepr, "toterminal"):
        return _Explained(text, longrepr)
    return f"{text}\n\n{longrepr}"


# -- listeners ---------------------------------------------------------------------------------

_installed = 0


def install() -> None:
    """Listen for loaded objects, wrap the loaders' entry and record every MissingGreenlet
    (reference counted for nested sessions)."""
    global _installed, _missing_greenlet_init
    _installed += 1
    if _installed == 1:
        event.listen(Mapper, "load", _on_load, raw=True)
        if _loader_owner is not None:
            setattr(_loader_owner, _LOADER_FRAME, _fire_loader_callables)
        global _own_init
        _own_init = exc.MissingGreenlet.__dict__.get("__init__")
        _missing_greenlet_init = exc.MissingGreenlet.__init__
        exc.MissingGreenlet.__init__ = _recording_init  # type: ignore[method-assign]


def uninstall() -> None:
    """Remove the listeners when the last session is done."""
    global _installed, _last_runid
    _installed -= 1
    if _installed == 0:
        event.remove(Mapper, "load", _on_load)
        if _loader_owner is not None:
            setattr(_loader_owner, _LOADER_FRAME, _loader_original)  # exactly as defined
        if exc.MissingGreenlet.__dict__.get("__init__") is _recording_init:
            if _own_init is None:
                del exc.MissingGreenlet.__init__  # inherited, as defined
            else:
                exc.MissingGreenlet.__init__ = _own_init  # type: ignore[method-assign]
        _missing_greenlet_init = None
        _raw.clear()
        _lazy_runs.clear()
        _sites.clear()
        _last_runid = None
        begin_test()
