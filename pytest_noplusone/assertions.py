"""Context managers that capture and assert the queries of a block of code."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from . import capture, messages
from .capture import QueryLog

if TYPE_CHECKING:  # not at run time: sqlalchemy.ext.asyncio imports the ORM (~0.1 s)
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["QueryCountError", "assert_max_queries", "assert_queries", "capture_queries"]

#: Whether messages show parameter values; the plugin sets it from ``noplusone_show_params``.
show_params = True


class QueryCountError(AssertionError):
    """A block ran a different number of queries than it was allowed."""

    def __init__(self, message: str, log: QueryLog) -> None:
        super().__init__(message)
        self.log = log


def check_count(n: object, name: str) -> int:
    """Validate a query budget: a non-negative int, not a bool."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise TypeError(f"{name} expects a non-negative int, got {n!r}")
    return n


def _sync_engine(engine: Engine | AsyncEngine | None) -> Engine | None:
    if engine is None or isinstance(engine, Engine):
        return engine
    sync_engine = getattr(engine, "sync_engine", None)  # an AsyncEngine
    if isinstance(sync_engine, Engine):
        return sync_engine
    raise TypeError(f"engine must be an Engine or AsyncEngine, got {engine!r}")


class capture_queries:
    """Capture the queries run while the block runs, from every thread and task.

    Usable as ``with`` and ``async with``; yields a :class:`QueryLog` that fills as the block
    runs. ``engine=`` limits capture to one ``Engine`` or ``AsyncEngine``.
    """

    def __init__(self, *, engine: Engine | AsyncEngine | None = None) -> None:
        self.log = QueryLog(engine=_sync_engine(engine))
        self._open = False

    def __enter__(self) -> QueryLog:
        if self._open:
            raise RuntimeError("this capture_queries block is already open")
        self._open = True
        capture.open_window(self.log)
        return self.log

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        __tracebackhide__ = True
        self._open = False
        capture.close_window(self.log)
        if exc_type is None:
            self._check()

    async def __aenter__(self) -> QueryLog:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        __tracebackhide__ = True
        self.__exit__(exc_type, exc, tb)

    def _check(self) -> None:
        """Called on a clean exit."""


class _CountAssertion(capture_queries):
    _kind = ""
    _name = ""

    def __init__(self, n: int, *, engine: Engine | AsyncEngine | None = None) -> None:
        self.expected = check_count(n, self._name)
        super().__init__(engine=engine)

    def _failed(self, actual: int) -> bool:
        raise NotImplementedError

    def _check(self) -> None:
        __tracebackhide__ = True
        if self._failed(self.log.count):
            message = messages.budget_failure(
                self._kind,
                self.expected,
                self.log,
                raise_with=f"{self._name}({{}})",
                show_params=show_params,
            )
            raise QueryCountError(message, self.log)


class assert_queries(_CountAssertion):
    """Fail with :class:`QueryCountError` unless the block ran exactly ``n`` queries."""

    _kind = "exactly"
    _name = "assert_queries"

    def _failed(self, actual: int) -> bool:
        return actual != self.expected


class assert_max_queries(_CountAssertion):
    """Fail with :class:`QueryCountError` if the block ran more than ``n`` queries."""

    _kind = "at most"
    _name = "assert_max_queries"

    def _failed(self, actual: int) -> bool:
        return actual > self.expected
