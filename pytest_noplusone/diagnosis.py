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
import os
import re
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from types import FrameType, TracebackType
from typing import Any, NamedTuple

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
    "begin_test",
    "explain_failure",
    "explained",
    "explained_text",
    "from_exception",
    "install",
    "record",
    "relationship_kind",
    "swallowed",
    "uninstall",
]

#: Why the load failed: the forced (or mapped) raise, an implicit query in async code, a
#: detached parent, a parent expired by commit(), or a deferred column.
CAUSES = ("raise_on_sql", "raise", "missing_greenlet", "detached", "expired", "deferred")

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
        frames = capture._user_frames(sys._getframe(1))
        if len(_sites) >= _MAX_SITES:
            _sites.clear()
        _sites[runid] = Location(*frames[0]) if frames else None
    except Exception:  # a guest in the user's query: never raise into it
        pass


def _parents_site(state: Any) -> Location | None:
    runid = getattr(state, "runid", None)
    return _sites.get(runid) if runid is not None else None


# -- describing one lazy load ------------------------------------------------------------------


def _expired(state: Any) -> bool:
    return bool(getattr(state, "expired_attributes", None) or getattr(state, "expired", False))


def _describe(
    token: Any, state: Any, cause: str, touched: tuple[Location, ...], name: str | None = None
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
        attribute=name or str(token),
        owner=owner_class.__name__,
        key=key,
        kind=kind,
        cause=cause,
        touched=touched,
        parents_loaded_at=_parents_site(state),
        async_attrs=isinstance(owner_class, type) and issubclass(owner_class, AsyncAttrs),
    )


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


def _loader_in_traceback(
    tb: TracebackType | None,
) -> tuple[FrameType, tuple[Location, ...]] | None:
    """The outermost loader frame of ``tb`` and the user's frames that led to it."""
    users: list[Location] = []
    for frame, lineno in _frames_of(tb):
        code = frame.f_code
        if code.co_name == _LOADER_FRAME and "self" in frame.f_locals:
            return frame, tuple(reversed(users[-_CALL_SITE:]))
        if _is_user(code.co_filename):
            users.append(Location(code.co_filename, lineno, code.co_name))
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
            frame, touched = located
            token = getattr(frame.f_locals["self"], "parent_token", None)
            if token is None or not hasattr(token, "parent"):
                continue
            load = _describe(token, frame.f_locals.get("state"), cause, touched)
        elif match is not None:  # raised away from a traceback we can read: use the message
            prop = _find_relationship(match.group(1), match.group(2))
            if prop is None:
                continue
            load = _describe(prop, None, cause, (), name=f"{match.group(1)}.{match.group(2)}")
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
    return tuple(Location(*user) for user in capture._user_frames(frame)[:_CALL_SITE])


def record(prop: Any, state: Any, error: BaseException) -> None:
    """Called by the forced loader's guard when a lazy load raised."""
    try:
        found = _cause(error)
        if found is None:
            return
        _add(_describe(prop, state, found[0], _touched(sys._getframe(2))), [error])
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
        touched = _touched(loader.f_back)
        load = _describe(token, loader.f_locals.get("state"), "missing_greenlet", touched)
        _add(load, [error] if error is original else [error, original])
    except Exception:  # a guest in the user's load: never replace its error with ours
        pass


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
    """Listen for loaded objects and wrap the loaders' entry (reference counted for nested
    sessions)."""
    global _installed
    _installed += 1
    if _installed == 1:
        event.listen(Mapper, "load", _on_load, raw=True)
        if _loader_owner is not None:
            setattr(_loader_owner, _LOADER_FRAME, _fire_loader_callables)


def uninstall() -> None:
    """Remove the listeners when the last session is done."""
    global _installed, _last_runid
    _installed -= 1
    if _installed == 0:
        event.remove(Mapper, "load", _on_load)
        if _loader_owner is not None:
            setattr(_loader_owner, _LOADER_FRAME, _loader_original)  # exactly as defined
        _sites.clear()
        _last_runid = None
        begin_test()
