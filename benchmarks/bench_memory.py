"""Memory: one test body running 1,000,000 statements of 50 shapes; peak RSS growth.

Runs the statements once with no window open (the baseline: SQLAlchemy's own caches), then again
inside a window shaped like the body of a test that asks for ``noplusone_queries`` (the worst
case: the plugin's ``QueryLog`` keeping 1,000 statements), and prints the peak RSS growth of
each phase. Usage:

    python benchmarks/bench_memory.py [--statements 1000000] [--shapes 50]
"""

from __future__ import annotations

import argparse
import resource
import time

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select

from pytest_noplusone import capture
from pytest_noplusone.capture import QueryLog
from pytest_noplusone.plugin import KEPT_PER_TEST

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=1_000_000)
    parser.add_argument("--shapes", type=int, default=50)
    args = parser.parse_args()
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    # Distinct shapes: each selects the column under another label.
    queries = [
        select(items.c.name.label(f"name_{shape}")).where(items.c.id == shape)
        for shape in range(args.shapes)
    ]
    rounds = args.statements // args.shapes

    def run(conn: object) -> None:
        for _ in range(rounds):
            for query in queries:
                conn.execute(query).all()  # type: ignore[attr-defined]

    capture.acquire()
    with engine.connect() as conn:
        start = peak_rss_mb()
        begin = time.perf_counter()
        run(conn)
        baseline_time = time.perf_counter() - begin
        baseline = peak_rss_mb()
        log = QueryLog(keep=KEPT_PER_TEST)
        capture.open_window(log)
        begin = time.perf_counter()
        try:
            run(conn)
        finally:
            capture.close_window(log)
        captured_time = time.perf_counter() - begin
        captured = peak_rss_mb()
    capture.release()
    total = rounds * args.shapes
    assert log.count == total, log.count
    groups = len(log.shapes)
    print(f"{total:,} statements of {args.shapes} shapes, {groups} (shape, call site) groups")
    print(f"without a window: peak RSS +{baseline - start:6.1f} MiB  ({baseline_time:6.1f} s)")
    print(f"inside a window:  peak RSS +{captured - baseline:6.1f} MiB  ({captured_time:6.1f} s)")


if __name__ == "__main__":
    main()
