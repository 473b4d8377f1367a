"""The ``noplusone`` command (also ``python -m pytest_noplusone``).

``noplusone compare OLD.json NEW.json``: per-test query count deltas. Exit status: 0 when no
test's count rose, 1 when one did, 2 for a bad command line or file.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__, messages
from .counts import Change, CountsFileError, Entry, compare, load_counts, without_schema

__all__ = ["main"]

#: Display order of the rows: what needs attention first.
_ORDER = {"regression": 0, "new": 1, "improvement": 2, "removed": 3, "unchanged": 4}


def _prog() -> str:
    """How the user called us: ``noplusone`` (the console script) or ``python -m ...``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name in ("", "__main__.py", "-c"):
        return "python -m pytest_noplusone"
    return name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description="Tools for pytest-noplusone report and baseline files.",
    )
    parser.add_argument("--version", action="version", version=f"pytest-noplusone {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    command = commands.add_parser(
        "compare",
        help="compare the per-test query counts of two report or baseline files.",
        description=(
            "Compare the per-test query counts of two pytest-noplusone report or baseline "
            "files (e.g. main's and a branch's). Exits 1 if any test's count rose. Like the "
            "baseline, it leaves schema work (DDL, PRAGMA, catalog reads) out unless asked."
        ),
    )
    command.add_argument("old", type=Path, metavar="OLD.json", help="the file to compare with.")
    command.add_argument("new", type=Path, metavar="NEW.json", help="the file being checked.")
    command.add_argument(
        "--all", action="store_true", help="also list the tests whose count did not change."
    )
    command.add_argument(
        "--compare-schema",
        action="store_true",
        help="compare schema work (DDL, PRAGMA, catalog reads) too.",
    )
    return parser


def _rows(old: dict[str, Entry], new: dict[str, Entry]) -> list[tuple[str, Change]]:
    rows = [(change.status, change) for change in compare(old, new)]
    rows += [
        ("removed", Change(nodeid, old[nodeid].queries, 0)) for nodeid in old if nodeid not in new
    ]
    rows.sort(key=lambda row: (_ORDER[row[0]], row[1].nodeid))
    return rows


def render(old: dict[str, Entry], new: dict[str, Entry], *, show_all: bool = False) -> str:
    """The comparison as a text table, the statements that grew, and a one-line verdict."""
    rows = _rows(old, new)
    table = [("test", "old", "new", "change")]
    for status, change in rows:
        if status == "unchanged" and not show_all:
            continue
        before = "-" if change.old is None else str(change.old)
        after = "-" if status == "removed" else str(change.new)
        if status in ("new", "removed", "unchanged"):
            delta = status
        else:
            delta = f"{change.new - (change.old or 0):+d}"
        table.append((change.nodeid, before, after, delta))
    lines = []
    if len(table) > 1:
        widths = [max(len(row[column]) for row in table) for column in range(4)]
        for row in table:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells).rstrip())
    for status, change in rows:
        if status == "regression" and change.grown:
            lines.append("")
            lines.append(f"{change.nodeid} ({change.old} -> {change.new}):")
            lines.extend(f"  {messages.grown_line(*row)}" for row in change.grown)
    counts = dict.fromkeys(_ORDER, 0)
    for status, _ in rows:
        counts[status] += 1
    if lines:
        lines.append("")
    lines.append(
        messages.compare_verdict(
            {
                "rose": counts["regression"],
                "fell": counts["improvement"],
                "new": counts["new"],
                "removed": counts["removed"],
                "unchanged": counts["unchanged"],
            },
            sum(entry.queries for entry in old.values()),
            sum(entry.queries for entry in new.values()),
        )
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:  # no command: say what there is
        parser.print_help()
        return 0
    try:
        old = load_counts(arguments.old)
        new = load_counts(arguments.new)
    except CountsFileError as error:
        print(messages.compare_bad_file(error.path, error.reason), file=sys.stderr)
        return 2
    if not arguments.compare_schema:
        old = {nodeid: without_schema(entry) for nodeid, entry in old.items()}
        new = {nodeid: without_schema(entry) for nodeid, entry in new.items()}
    print(render(old, new, show_all=arguments.all))
    rose = any(change.status == "regression" for change in compare(old, new))
    return 1 if rose else 0


if __name__ == "__main__":
    sys.exit(main())
