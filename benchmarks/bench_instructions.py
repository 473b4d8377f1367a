"""CPU instructions the plugin adds to one statement, under valgrind, averaged over memory layouts.

A loop of ``AsyncSession.execute`` statements runs in a child process under ``valgrind
--tool=callgrind``, once with 100 and once with 600 statements; the difference over 500 is the
cost of one statement, without the process's start-up. The plugin variant records into a test
body's window (``QueryLog(keep=0)``, what the plugin opens for every test) with lazy-load
diagnosis installed, as in a test; the other variant has nothing of the plugin's installed.

CPython's type attribute cache makes the count depend on where the interpreter's strings lie
and on the order classes get their version tags, by several thousand instructions per
statement, so each variant runs in several of the layouts of ``layouts.py`` (set up before the
imports, with ``PYTHONHASHSEED`` set to the layout's number) and the mean and median of the
per-layout differences are reported. Uses PostgreSQL through asyncpg when ``NOPLUSONE_PG_URL``
is set, else aiosqlite. Usage:

    python benchmarks/bench_instructions.py [--layouts 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from layouts import LAYOUTS, layout_count, padding

SCHEMA = "noplusone_bench"


def child(variant: str, statements: int, number: int, url: str) -> None:
    """The measured process: layout ``number`` first, then the imports and the loop."""
    layout: dict[str, object] = {}
    exec(padding(LAYOUTS[number]), layout)
    from bench_statement import items, metadata  # the same table (this script's directory)
    from sqlalchemy import bindparam, select, text
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from pytest_noplusone import capture, diagnosis

    query = select(items.c.name).where(items.c.id == bindparam("id"))

    async def main() -> None:
        options = {}
        if url.startswith("postgresql"):
            options["connect_args"] = {"server_settings": {"search_path": SCHEMA}}
            async with create_async_engine(url).begin() as conn:
                await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        engine = create_async_engine(url, **options)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.run_sync(metadata.create_all)
            await conn.execute(items.insert(), [{"id": i, "name": f"n{i}"} for i in range(100)])
        log = capture.QueryLog(keep=0)
        if variant == "plugin":
            diagnosis.install()
            capture.open_window(log)
        async with AsyncSession(engine) as session:
            for i in range(statements):
                (await session.execute(query, {"id": i % 100})).all()
        if variant == "plugin":
            capture.close_window(log)
            assert log.count == statements, log.count
        await engine.dispose()

    asyncio.run(main())
    del layout


def instructions(variant: str, statements: int, number: int, url: str) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        variant,
        str(statements),
        str(number),
        url,
    ]
    env = {**os.environ, "PYTHONHASHSEED": str(number)}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(
            f"callgrind run failed ({variant}, layout {LAYOUTS[number]})\n{result.stderr[-3000:]}"
        )
    return int(found.group(1))


def per_statement(variant: str, number: int, url: str) -> float:
    return (instructions(variant, 600, number, url) - instructions(variant, 100, number, url)) / 500


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        variant, statements, number, url = sys.argv[2:6]
        child(variant, int(statements), int(number), url)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", type=layout_count, default=len(LAYOUTS))
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind on PATH")
    if args.layouts == 0:
        parser.error("--layouts: takes at least 1 layout")
    url = os.environ.get("NOPLUSONE_PG_URL", "")
    directory = None
    if not url:
        directory = tempfile.mkdtemp()
        url = f"sqlite+aiosqlite:///{directory}/bench.sqlite3"
    print(f"{url.split('://')[0]}: instructions per statement (600 minus 100 statements, / 500)")
    added = []
    for number in range(args.layouts):
        without = per_statement("none", number, url)
        with_plugin = per_statement("plugin", number, url)
        added.append(with_plugin - without)
        print(
            f"  layout {LAYOUTS[number]!s:>9}: without {without:9.0f}"
            f"   with the plugin {with_plugin:9.0f}   added {with_plugin - without:7.0f}"
        )
    # The median too: one run in a layout can be off by tens of thousands (seen once).
    print(
        f"added by the plugin over {len(added)} layouts: mean {statistics.mean(added):.0f}, "
        f"median {statistics.median(added):.0f}"
    )
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
