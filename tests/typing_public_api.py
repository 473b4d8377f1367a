"""Type-checked use of the public API (mypy --strict runs on this file; pytest does not collect it)."""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from pytest_noplusone import (
    CapturedQuery,
    Location,
    QueryCountError,
    QueryLog,
    assert_max_queries,
    assert_queries,
    capture_queries,
)


def sync_use() -> int:
    engine = create_engine("sqlite://")
    with capture_queries(engine=engine) as log, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    first: CapturedQuery = log.queries[0]
    where: Location | None = first.location
    sql: str = first.sql
    engine_url: str = first.engine
    many: bool = first.executemany
    print(where, sql, engine_url, many, first.parameters)
    with assert_queries(0), assert_max_queries(1, engine=engine):
        pass
    return log.count + len(log)


async def async_use() -> QueryLog:
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        async with assert_max_queries(1, engine=engine) as log, engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except QueryCountError as error:
        return error.log
    return log
