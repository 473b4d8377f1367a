"""Scale assertions: prove that an action runs the same number of queries at every data size."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, overload

from . import capture, detection, messages
from .capture import QueryLog, ShapeStats

__all__ = ["QueryScaleError", "assert_constant_queries"]

#: The statements each measured run keeps for the message; counts stay exact.
_KEEP = 1000


class QueryScaleError(AssertionError):
    """An action ran a different number of queries at different data scales."""

    def __init__(self, message: str, scales: Sequence[int], logs: Sequence[QueryLog]) -> None:
        super().__init__(message)
        self.scales = tuple(scales)
        #: The queries of each measured run, in the order of ``scales``.
        self.logs = tuple(logs)

    @property
    def counts(self) -> dict[int, int]:
        """The number of queries at each scale."""
        return {n: log.count for n, log in zip(self.scales, self.logs, strict=True)}


def _scales(value: object) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list, range)):
        raise TypeError(messages.bad_scales(value))
    scales = tuple(value)
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in scales):
        raise TypeError(messages.bad_scales(value))
    if len(set(scales)) < 2:
        raise ValueError(messages.bad_scales(value))
    return scales


@overload
def assert_constant_queries(  # type: ignore[overload-overlap]
    action: Callable[[], Awaitable[object]],
    *,
    populate: Callable[[int], object],
    scales: Sequence[int] = ...,
    warmup: bool = ...,
) -> Awaitable[None]: ...


@overload
def assert_constant_queries(  # type: ignore[overload-overlap]
    action: Callable[[], object],
    *,
    populate: Callable[[int], Awaitable[object]],
    scales: Sequence[int] = ...,
    warmup: bool = ...,
) -> Awaitable[None]: ...


@overload
def assert_constant_queries(
    action: Callable[[], object],
    *,
    populate: Callable[[int], object],
    scales: Sequence[int] = ...,
    warmup: bool = ...,
) -> None: ...


def assert_constant_queries(
    action: Callable[[], object],
    *,
    populate: Callable[[int], object],
    scales: Sequence[int] = (2, 3),
    warmup: bool = True,
) -> Awaitable[None] | None:
    """Fail unless ``action()`` runs as many queries after ``populate(n)`` for every ``n``.

    ``populate(n)`` should leave ``n`` items (users, orders...) for the action to work on; its
    own queries are not counted. ``warmup`` runs the action once on the first scale's data
    before measuring, so first-use caches do not skew the count. When ``action`` or ``populate``
    is async (returns an awaitable), the result is an awaitable to ``await``; otherwise the
    check runs at once. Raises :class:`QueryScaleError` naming the statements that grew.
    """
    __tracebackhide__ = True
    if not callable(action) or not callable(populate):
        raise TypeError("assert_constant_queries expects callables for action and populate")
    steps = _run(action, populate, _scales(scales), warmup)
    try:
        pending = next(steps)  # runs synchronously up to the first awaitable, if any
    except StopIteration:
        return None
    return _finish(steps, pending)


async def _finish(steps: Generator[Awaitable[Any], None, None], pending: Awaitable[Any]) -> None:
    __tracebackhide__ = True
    while True:
        try:
            await pending
        except BaseException as error:  # let the run close its windows, then re-raise
            try:
                pending = steps.throw(error)
            except StopIteration:
                return
            continue
        try:
            pending = steps.send(None)
        except StopIteration:
            return


def _run(
    action: Callable[[], object],
    populate: Callable[[int], object],
    scales: tuple[int, ...],
    warmup: bool,
) -> Generator[Awaitable[Any], None, None]:
    """The whole assertion; yields each awaitable that a call returned, to be awaited."""
    __tracebackhide__ = True
    outer = capture.open_windows()
    harness = QueryLog(keep=0)  # everything this assertion runs: populate, warmup, each run
    logs: list[QueryLog] = []
    capture.open_window(harness)
    try:
        for index, n in enumerate(scales):
            result = populate(n)
            if inspect.isawaitable(result):
                yield result
            if index == 0 and warmup:
                result = action()
                if inspect.isawaitable(result):
                    yield result
            log = QueryLog(keep=_KEEP)
            capture.open_window(log)
            try:
                result = action()
                if inspect.isawaitable(result):
                    yield result
            finally:
                capture.close_window(log)
            logs.append(log)
    finally:
        capture.close_window(harness)
        _exempt(outer, harness, logs)
    if len({log.count for log in logs}) > 1:
        raise QueryScaleError(messages.scale_failure(scales, logs, _grown(logs)), scales, logs)


def _exempt(outer: list[QueryLog], harness: QueryLog, logs: list[QueryLog]) -> None:
    """The test's own N+1 detection must not flag the repetitions this assertion makes."""
    # A shape that is an N+1 within one run stays visible to the test's detection.
    looped = {key for log in logs for key, _ in detection.findings(log, detection.threshold)}
    keys = set(harness.shapes) - looped
    for window in outer:
        window.exempt.update(keys)


def _grown(logs: list[QueryLog]) -> list[tuple[ShapeStats, list[int]]]:
    """The statements whose count changed between scales, with the count at each scale."""
    grown: list[tuple[ShapeStats, list[int]]] = []
    seen: set[str] = set()
    for log in reversed(logs):
        for shape, _site in log.shapes:
            if shape in seen:
                continue
            seen.add(shape)
            counts = [run.fingerprints.get(shape, 0) for run in logs]
            if len(set(counts)) > 1:
                best = max(
                    (s for (f, _), s in log.shapes.items() if f == shape), key=lambda s: s.count
                )
                grown.append((best, counts))
    return grown
