"""The in-process API: capture_queries, assert_queries, assert_max_queries, QueryLog."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pytest_noplusone import (
    CapturedQuery,
    QueryCountError,
    QueryLog,
    assert_max_queries,
    assert_queries,
    capture_queries,
)

HERE = "tests/test_api.py"


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(tmp_path: object) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/api.sqlite3")
    yield engine
    await engine.dispose()


def _line(marker: str) -> int:
    source, _ = inspect.getsourcelines(inspect.getmodule(_line))  # type: ignore[arg-type]
    return next(n for n, line in enumerate(source, start=1) if marker in line and "_line(" not in line)


def run(engine: Engine, sql: str, **params: object) -> None:
    with engine.connect() as conn:
        conn.execute(text(sql), params)  # in run


def test_capture_queries_records_every_statement(engine: Engine) -> None:
    with capture_queries() as log:
        run(engine, "SELECT 1")  # first
        run(engine, "SELECT :x", x=2)
    assert isinstance(log, QueryLog)
    assert log.count == len(log) == 2
    first, second = log
    assert isinstance(first, CapturedQuery)
    assert [q.sql for q in log.queries] == ["SELECT 1", "SELECT ?"]
    assert second.parameters == (2,)
    line, inner = _line("# first"), _line("# in run")
    assert str(first.location) == f"{HERE}:{inner} in run"
    assert str(first.call_site[1]) == f"{HERE}:{line} in test_capture_queries_records_every_statement"
    assert first.engine == "sqlite://"


def test_assert_queries_message(engine: Engine) -> None:
    def three_queries() -> None:
        for _ in range(3):
            run(engine, "SELECT :n", n=7)  # repeated

    with pytest.raises(QueryCountError) as excinfo, assert_queries(1):
        three_queries()
    line, inner = _line("# repeated"), _line("# in run")
    assert str(excinfo.value) == (
        "Expected exactly 1 query but 3 were run.\n"
        "  1. 3x SELECT ?\n"
        f"       from {HERE}:{inner} in run\n"
        f"       called from {HERE}:{line} in three_queries\n"
        "       first parameters: (7,)\n"
        f"fix: the same statement ran 3 times from {HERE}:{inner} in run; load all rows in one query "
        "(e.g. .where(Model.id.in_(ids)) or selectinload), or raise the budget: assert_queries(3)"
    )
    assert excinfo.value.log.count == 3
    assert isinstance(excinfo.value, AssertionError)


def test_assert_max_queries_singular_and_pass(engine: Engine) -> None:
    with assert_max_queries(1):
        run(engine, "SELECT 1")
    with (
        pytest.raises(QueryCountError, match=r"^Expected at most 0 queries but 1 was run\.\n"),
        assert_max_queries(0),
    ):
        run(engine, "SELECT 1")


def test_the_block_exception_is_reraised_untouched(engine: Engine) -> None:
    error = KeyError("mine")

    def failing_block() -> None:
        run(engine, "SELECT 1")
        raise error

    with pytest.raises(KeyError) as excinfo, assert_queries(0):
        failing_block()
    assert excinfo.value is error


@pytest.mark.parametrize("bad", ["two", -1, True, 1.5, None])
def test_bad_counts_are_type_errors(bad: object) -> None:
    with pytest.raises(TypeError, match=rf"^assert_queries expects a non-negative int, got {bad!r}$"):
        assert_queries(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^assert_max_queries expects a non-negative int"):
        assert_max_queries(bad)  # type: ignore[arg-type]


def test_engine_must_be_an_engine() -> None:
    with pytest.raises(TypeError, match=r"^engine must be an Engine or AsyncEngine, got 'sqlite://'$"):
        capture_queries(engine="sqlite://")  # type: ignore[arg-type]


async def test_async_with_and_async_engine_filter(async_engine: AsyncEngine, engine: Engine) -> None:
    async with assert_queries(1, engine=async_engine) as log:
        async with async_engine.connect() as conn:
            await conn.execute(text("SELECT 1"))  # the await
        run(engine, "SELECT 2")  # another engine: not counted here
    assert log.queries[0].location is not None
    assert log.queries[0].location.lineno == _line("# the await")
    assert log.queries[0].engine.startswith("sqlite+aiosqlite:///")


def test_nested_windows_both_count(engine: Engine) -> None:
    with capture_queries() as outer:
        run(engine, "SELECT 1")
        with capture_queries() as inner:
            run(engine, "SELECT 2")
    assert (outer.count, inner.count) == (2, 1)


def test_a_block_cannot_be_entered_twice(engine: Engine) -> None:
    block = capture_queries()
    with block, pytest.raises(RuntimeError, match="already open"), block:
        pass


def test_fixture_sees_the_test_body(engine: Engine, noplusone_queries: QueryLog) -> None:
    run(engine, "SELECT 1")
    run(engine, "SELECT 2")
    assert noplusone_queries.count == 2
