"""Per-statement cost of the capture listener (count + fingerprint + location), in microseconds.

Runs the same statement loop on a sync pysqlite ``:memory:`` engine and on aiosqlite through an
``AsyncSession``-style greenlet path: without the plugin's recorder (the baseline), with it
installed and no window open (idle: the listeners' dispatch alone), and with a window open
(the full per-statement work: shape lookup, frame walk through the greenlet, per-shape
aggregates): a test body's window, which keeps no statements (the plugin's window for
every test), and a ``capture_queries()`` block, which keeps every statement for
``log.queries``. Each variant is repeated, interleaved, and the median CPU time (process_time,
so that other load on the machine does not skew it) is reported. Usage:

    python benchmarks/bench_statement.py [--statements 20000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select
from sqlalchemy.ext.asyncio import create_async_engine

from pytest_noplusone import capture, capture_queries

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String))


def sync_loop(statements: int) -> Callable[[], float]:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    query = select(items.c.name).where(items.c.id == 1)
    connection = engine.connect()

    def run() -> float:
        start = time.process_time()
        for _ in range(statements):
            connection.execute(query).all()
        return time.process_time() - start

    return run


def async_loop(statements: int) -> Callable[[], float]:
    engine = create_async_engine("sqlite+aiosqlite://")
    loop = asyncio.new_event_loop()
    query = select(items.c.name).where(items.c.id == 1)

    async def setup() -> object:
        connection = await engine.connect()
        await connection.run_sync(metadata.create_all)
        return connection

    connection = loop.run_until_complete(setup())

    async def body() -> None:
        for _ in range(statements):
            (await connection.execute(query)).all()  # type: ignore[attr-defined]

    def run() -> float:
        start = time.process_time()
        loop.run_until_complete(body())
        return time.process_time() - start

    return run


def measure(name: str, run: Callable[[], float], statements: int, repeats: int) -> None:
    none: list[float] = []
    idle: list[float] = []
    body: list[float] = []
    kept: list[float] = []
    run()  # warm caches (compiled statement, shape, frame classification)
    for _ in range(repeats):
        none.append(run())  # nothing of the plugin's is installed
        capture.acquire()
        try:
            idle.append(run())
            log = capture.QueryLog(keep=0)  # as the plugin opens for a test body
            capture.open_window(log)
            try:
                body.append(run())
            finally:
                capture.close_window(log)
            assert log.count == statements, log.count
            with capture_queries() as kept_log:
                kept.append(run())
            assert kept_log.count == len(kept_log.queries) == statements, kept_log.count
        finally:
            capture.release()
    base = statistics.median(none)
    for label, runs in (("idle", idle), ("test body", body), ("capture_queries", kept)):
        full = statistics.median(runs)
        print(
            f"{name:<26} {label:<16} baseline {base / statements * 1e6:6.2f} us/stmt   "
            f"with plugin {full / statements * 1e6:6.2f} us/stmt   "
            f"cost {(full - base) / statements * 1e6:5.2f} us/stmt   "
            f"ratio {full / base:5.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    measure("sync pysqlite :memory:", sync_loop(args.statements), args.statements, args.repeats)
    measure("aiosqlite (greenlet path)", async_loop(args.statements), args.statements, args.repeats)


if __name__ == "__main__":
    main()
