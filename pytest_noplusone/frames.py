"""Where a statement came from: the chain of the user's frames, one invocation per frame.

Every frame is classified once per source file: the user's code (code under test, or test code:
the test modules and ``conftest.py`` files), infrastructure to skip (SQLAlchemy, this plugin,
the standard library, everything installed in site-packages), or a boundary where the walk
stops (pytest, pluggy, the event loop's callback runner).

A statement's chain is a linked list of ``Node`` objects, one per user frame, innermost first.
A node is one *frame instance* at one instruction: while a frame runs, the frames above it are
suspended at the call that led to it, so the chain above a frame instance never changes and is
computed once per instance (a loop that runs a statement 1,000 times walks no frame at all after
the first). Frames reached through a parent greenlet (an ``AsyncSession`` call), the task that
created an asyncio task, and the code that handed work to a thread continue the chain, so a
statement made in a ``gather`` child or a worker thread belongs to the invocation that created
it. Nodes hold their frames: a frame's address is reused by the next call once it is gone, so
only a live frame is a real identity. The cache is emptied when the last window closes.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import concurrent.futures.thread
import contextlib
import contextvars
import fnmatch
import inspect
import os
import sys
import sysconfig
import threading
import weakref
from collections.abc import Callable, Iterable
from types import CodeType, FrameType
from typing import Any

import greenlet
import sqlalchemy

__all__ = ["Node", "Site"]

#: Frame kinds. The odd ones are skipped by walks (``kind & 1``).
USER, SKIP, BOUNDARY, LIBRARY = 0, 1, 2, 3

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: Packages whose frames are never the user's line wherever they are installed.
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
    {
        os.path.abspath(p) + os.sep
        for p in (
            sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"],
            *getattr(sys, "path", ()),
        )
        if p and os.path.basename(os.path.normpath(p)) in ("site-packages", "dist-packages")
    }
)
_ASYNCIO_EVENTS = os.path.abspath(asyncio.events.__file__)
_SQLALCHEMY_DIR = os.path.dirname(os.path.abspath(sqlalchemy.__file__)) + os.sep

#: filename -> kind; read by the listener's walk without a function call.
kinds: dict[str, int] = {}
#: filename -> whether it is test code.
_tests: dict[str, bool] = {}
#: Basename patterns of test modules (pytest's ``python_files``), besides ``conftest.py``.
_test_patterns: list[str] = ["test_*.py", "*_test.py"]


def _module_dir(name: str) -> str | None:
    path = getattr(sys.modules.get(name), "__file__", None)
    return os.path.dirname(os.path.abspath(path)) + os.sep if path else None


def classify(filename: str) -> int:
    """The kind of the frames of ``filename`` (cached in ``kinds``)."""
    # Runs once per source file; modules imported late (a driver first imported by a test)
    # are looked up in sys.modules at that moment.
    if filename.startswith("<"):
        kind = SKIP
    else:
        path = os.path.abspath(filename)
        boundaries = tuple(d for d in (_module_dir("pluggy"), _module_dir("_pytest")) if d)
        skipped = tuple(d for d in map(_module_dir, _INFRASTRUCTURE) if d)
        if (
            path.startswith(boundaries)
            or path == os.path.abspath(str(getattr(sys.modules.get("pytest"), "__file__", "")))
            # The event loop's callback runner: beyond it lies what drives the loop; a task's
            # chain goes on at the code that created the task.
            or path == _ASYNCIO_EVENTS
        ):
            kind = BOUNDARY
        elif path.startswith((_PACKAGE_DIR, _SQLALCHEMY_DIR, *skipped)) or (
            path.startswith(_STDLIB) and not path.startswith(_SITE_DIRS)
        ):
            kind = SKIP
        elif path.startswith(_SITE_DIRS) or os.sep + "site-packages" + os.sep in path:
            kind = LIBRARY  # FastAPI, Starlette, httpx, SQLModel, a repository library, ...
        else:
            kind = USER  # the rootdir, an editable install, anything else of yours
    kinds[filename] = kind
    return kind


def kind_of(filename: str) -> int:
    """The cached kind of ``filename``."""
    kind = kinds.get(filename)
    return classify(filename) if kind is None else kind


def set_test_patterns(patterns: Iterable[str]) -> None:
    """Basenames of test modules (``python_files``); ``conftest.py`` always is test code."""
    for pattern in patterns:
        if pattern not in _test_patterns:
            _test_patterns.append(pattern)
    _tests.clear()


def is_test(filename: str) -> bool:
    """Whether ``filename`` is test code: a test module or a ``conftest.py``."""
    test = _tests.get(filename)
    if test is None:
        base = os.path.basename(filename)
        test = _tests[filename] = base == "conftest.py" or any(
            fnmatch.fnmatch(base, pattern) for pattern in _test_patterns
        )
    return test


# --- sites: the static chain of lines ---------------------------------------------------------

_Frames = tuple[tuple[str, int, str], ...]


class Site:
    """One chain of user lines, innermost first, interned: grouping by it is by identity."""

    __slots__ = ("background", "frames", "tests")

    def __init__(self, frames: _Frames, tests: tuple[bool, ...], background: bool) -> None:
        self.frames = frames
        #: Per frame: whether it is test code.
        self.tests = tests
        #: True when the chain starts in a thread or task begun before the window opened by
        #: code of yours (a poller started by a fixture): never part of a test's findings.
        self.background = background


EMPTY = Site((), (), False)
_MAX_SITES = 50_000
#: (id(code), lasti, site above, background) -> (site, code): the code is kept alive so that
#: its id stays unique while cached.
_sites: dict[tuple[int, int, Site, bool], tuple[Site, CodeType]] = {}
_lines: dict[tuple[int, int], int] = {}


def _site(code: CodeType, lasti: int, lineno: int, up: Site, background: bool) -> Site:
    key = (id(code), lasti, up, background)
    entry = _sites.get(key)
    if entry is not None:
        return entry[0]
    if len(_sites) >= _MAX_SITES:
        _sites.clear()
    filename = code.co_filename
    site = Site(
        ((filename, lineno, code.co_name), *up.frames),
        (is_test(filename), *up.tests),
        background or up.background,
    )
    _sites[key] = (site, code)
    return site


# --- nodes: frame instances -------------------------------------------------------------------


class Node:
    """One user frame instance at one instruction, with the chain above it."""

    __slots__ = ("frame", "site", "up")

    def __init__(self, frame: FrameType, site: Site, up: Node | None) -> None:
        #: The frame itself: its identity is the invocation.
        self.frame = frame
        self.site = site
        self.up = up


class _Entry:
    """What is known of one live frame instance: the chain above it, its nodes by offset."""

    __slots__ = ("back", "back_lasti", "nodes", "up")

    def __init__(self, up: Node | None, back: FrameType | None, back_lasti: int) -> None:
        self.up = up
        #: For generator frames, which can be resumed from anywhere: the frame that resumed
        #: it and where (the entry is valid only while they are the same).
        self.back = back
        self.back_lasti = back_lasti
        self.nodes: dict[int, Node] = {}


_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR
#: frame -> entry, for the frames seen while a window is open (emptied with the last window).
entries: dict[FrameType, _Entry] = {}
_MAX_ENTRIES = 20_000


def _entry(frame: FrameType) -> _Entry | None:
    entry = entries.get(frame)
    if entry is None or entry.back is None:
        return entry
    back = frame.f_back
    if back is entry.back and back is not None and back.f_lasti == entry.back_lasti:
        return entry
    return None


def node(frame: FrameType, glet: Any = None) -> Node:
    """The node of the user frame ``frame`` at its current instruction (``glet``: the greenlet
    it runs in, None for the current one)."""
    entry = _entry(frame)
    if entry is None:
        entry = _build(frame, glet)
    return _position(frame, entry)


def _node(frame: FrameType, lasti: int, up: Node | None, background: bool) -> Node:
    code = frame.f_code
    line = _lines.get((id(code), lasti))
    if line is None:
        if len(_lines) >= _MAX_SITES:
            _lines.clear()
        line = _lines[id(code), lasti] = frame.f_lineno
    return Node(frame, _site(code, lasti, line, up.site if up else EMPTY, background), up)


def _build(frame: FrameType, glet: Any) -> _Entry:
    """Walk outwards from ``frame`` to the first frame whose entry is known, then make the
    entries of the frames between, outermost first."""
    pending: list[tuple[FrameType, int]] = []  # user frames without an entry, and where from
    current: FrameType = frame
    up: Node | None = None
    while True:
        back = current.f_back
        pending.append((current, back.f_lasti if back is not None else -1))
        parent, glet, origin, _ = first_user(back, glet)
        if parent is None:
            up = origin
            break
        entry = _entry(parent)
        if entry is not None:
            up = _position(parent, entry)
            break
        current = parent
    if len(entries) >= _MAX_ENTRIES:
        entries.clear()
    made: _Entry | None = None
    for each, back_lasti in reversed(pending):
        resumable = each.f_code.co_flags & _RESUMABLE
        made = entries[each] = _Entry(up, each.f_back if resumable else None, back_lasti)
        lasti = each.f_lasti
        up = made.nodes[lasti] = _node(each, lasti, up, False)
    assert made is not None
    return made


def _position(frame: FrameType, entry: _Entry) -> Node:
    lasti = frame.f_lasti
    found = entry.nodes.get(lasti)
    if found is None:
        found = entry.nodes[lasti] = _node(frame, lasti, entry.up, False)
    return found


def first_user(
    frame: FrameType | None, glet: Any, threads: bool = True
) -> tuple[FrameType | None, Any, Node | None, FrameType | None]:
    """From ``frame`` outwards (``frame`` included), the first user frame with its greenlet, or
    None and the node of the code that created this task or handed this work over (to this
    thread too, with ``threads``). Last, the frame just below the user frame when it is a
    library's."""
    below = None
    while True:
        while frame is not None:
            filename = frame.f_code.co_filename
            kind = kinds.get(filename)
            if kind is None:
                kind = classify(filename)
            if kind == USER:
                return frame, glet, None, below if below is not None and is_library(below) else None
            if kind == BOUNDARY:
                if filename == _ASYNCIO_EVENTS:
                    handed = _task_origin()
                    if handed is None and threads:
                        handed = _thread_origin()
                    return None, None, handed, None
                return None, None, None, None
            below = frame
            frame = frame.f_back
        parent = (glet if glet is not None else greenlet.getcurrent()).parent
        if parent is None:
            return None, None, _thread_origin() if threads else None, None
        glet = parent
        frame = parent.gr_frame


def is_library(frame: FrameType) -> bool:
    """Whether ``frame`` is a frame of a library installed in site-packages."""
    return kind_of(frame.f_code.co_filename) == LIBRARY


# --- handovers: tasks and threads -------------------------------------------------------------

#: task -> the node of the code that created it (None: no code of yours).
_task_origins: weakref.WeakKeyDictionary[Any, Node | None] = weakref.WeakKeyDictionary()
_local = threading.local()
_ORIGIN = "_noplusone_origin"
#: Whether a window is open (set by capture): a handover made while none is open, from code of
#: yours, starts background work.
windows_open: list[bool] = [False]


def origin(frame: FrameType | None, threads: bool = True) -> Node | None:
    """The node of the first user frame from ``frame`` outwards (through asyncio's, the
    executor's and the libraries' frames), marked as background when no window is open
    (``threads``: or else of the code that handed the work to this thread)."""
    try:
        parent, glet, handed, _ = first_user(frame, None, threads)
        if parent is None:
            return handed
        found = node(parent, glet)
        if windows_open[0]:
            return found
        return _node(found.frame, found.frame.f_lasti, found.up, True)
    except Exception:  # a guest in the user's code: never raise into it
        return None


def _task_origin() -> Node | None:
    """The code of yours that created the running task, or that handed it over from another
    thread (a blocking portal's call)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    found = _task_origins.get(task) if task is not None else None
    return found if found is not None else _handover.get()


def _thread_origin() -> Node | None:
    handed: Node | None = getattr(_local, "origin", None)
    if handed is not None:
        return handed
    return getattr(threading.current_thread(), _ORIGIN, None)


def _create_task(self: Any, coro: Any, *args: Any, **kwargs: Any) -> Any:
    task = _originals["create_task"](self, coro, *args, **kwargs)
    # Code of yours in this thread, or the task that runs this code: a task started by a
    # library in a thread of its own (a portal) is handed over by the portal's caller instead.
    with contextlib.suppress(TypeError):  # a task type that takes no weak reference
        _task_origins[task] = origin(sys._getframe(1), threads=False)
    return task


#: The code of yours that handed a task over from another thread (a blocking portal's call);
#: set inside that task, so it reaches the tasks it creates too.
_handover: contextvars.ContextVar[Node | None] = contextvars.ContextVar(
    "noplusone_handover", default=None
)


def _start_task_soon(self: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    handover = origin(sys._getframe(1))
    if handover is not None:
        inner = func

        def func(*args: Any, **kwargs: Any) -> Any:
            _handover.set(handover)  # in the portal's task: its own context
            return inner(*args, **kwargs)

    return _originals["start_task_soon"](self, func, *args, **kwargs)


def _start(self: threading.Thread) -> None:
    setattr(self, _ORIGIN, origin(sys._getframe(1)))
    _originals["start"](self)


def handed(handover: Node | None, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, run with ``handover`` as the origin of the statements it makes in its thread."""
    if handover is None:
        return fn

    def run(*args: Any, **kwargs: Any) -> Any:
        previous = getattr(_local, "origin", None)
        _local.origin = handover
        try:
            return fn(*args, **kwargs)
        finally:
            _local.origin = previous

    return run


def _submit(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    return _originals["submit"](self, handed(origin(sys._getframe(1)), fn), *args, **kwargs)


async def _run_sync(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    fn = handed(origin(sys._getframe(1)), func)
    return await _originals["run_sync"](fn, *args, **kwargs)


_originals: dict[str, Any] = {}
_PATCHES: tuple[tuple[Any, str, str, Any], ...] = (
    (asyncio.base_events.BaseEventLoop, "create_task", "create_task", _create_task),
    (threading.Thread, "start", "start", _start),
    (concurrent.futures.thread.ThreadPoolExecutor, "submit", "submit", _submit),
)


def install() -> None:
    """Follow tasks and threads to the code that started them (restored by ``uninstall``)."""
    for owner, attribute, name, replacement in _PATCHES:
        if name not in _originals:
            _originals[name] = owner.__dict__[attribute]
            setattr(owner, attribute, replacement)
    follow_anyio()


def follow_anyio() -> None:
    """Follow ``anyio.to_thread.run_sync`` (Starlette's ``run_in_threadpool``) and blocking
    portals' calls (Starlette's ``TestClient``) once anyio is imported."""
    if not _originals:
        return
    to_thread: Any = sys.modules.get("anyio.to_thread")
    if to_thread is not None and "run_sync" not in _originals:
        _originals["run_sync"] = to_thread.run_sync
        to_thread.run_sync = _run_sync
    from_thread: Any = sys.modules.get("anyio.from_thread")
    portal = getattr(from_thread, "BlockingPortal", None)
    if portal is not None and "start_task_soon" not in _originals:
        _originals["start_task_soon"] = portal.__dict__["start_task_soon"]
        portal.start_task_soon = _start_task_soon


def uninstall() -> None:
    """Put back what ``install`` replaced, where nobody replaced it since."""
    for owner, attribute, name, replacement in _PATCHES:
        if owner.__dict__.get(attribute) is replacement:
            setattr(owner, attribute, _originals[name])
        _originals.pop(name, None)
    to_thread: Any = sys.modules.get("anyio.to_thread")
    original = _originals.pop("run_sync", None)
    if to_thread is not None and getattr(to_thread, "run_sync", None) is _run_sync:
        to_thread.run_sync = original
    from_thread: Any = sys.modules.get("anyio.from_thread")
    portal = getattr(from_thread, "BlockingPortal", None)
    original = _originals.pop("start_task_soon", None)
    if portal is not None and portal.__dict__.get("start_task_soon") is _start_task_soon:
        portal.start_task_soon = original


def forget() -> None:
    """Drop the frame cache (the frames it held are released)."""
    entries.clear()


def user_frames(frame: FrameType | None) -> _Frames:
    """The user frames (innermost first) from ``frame`` outwards, through parent greenlets,
    creating tasks and handing threads."""
    parent, glet, handed_over, _ = first_user(frame, None)
    if parent is not None:
        return node(parent, glet).site.frames
    return handed_over.site.frames if handed_over is not None else ()
