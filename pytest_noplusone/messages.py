"""Every user-facing text of the plugin."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .capture import QueryLog, ShapeStats

#: Statement groups listed in one message before the rest is summarised.
MAX_LISTED = 25
_SQL_WIDTH = 200
_PARAMS_WIDTH = 200
_WHITESPACE = re.compile(r"\s+")


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 query``, ``2 queries``."""
    if count == 1:
        return f"{count} {singular}"
    return f"{count} {plural_form or singular + 's'}"


def were(count: int) -> str:
    """``1 was``, ``6 were``."""
    return f"{count} {'was' if count == 1 else 'were'}"


def shorten(text: str, width: int) -> str:
    """One line of at most ``width`` characters."""
    text = _WHITESPACE.sub(" ", text).strip()
    return text if len(text) <= width else text[: width - 3] + "..."


def expectation(kind: str, expected: int, actual: int) -> str:
    """``Expected at most 2 queries but 6 were run.``"""
    return f"Expected {kind} {plural(expected, 'query', 'queries')} but {were(actual)} run."


def statement_lines(shapes: Iterable[ShapeStats], *, show_params: bool) -> list[str]:
    """The numbered statements, identical shapes from one call site grouped with their count."""
    lines: list[str] = []
    groups = list(shapes)
    for number, stats in enumerate(groups[:MAX_LISTED], start=1):
        example = stats.example
        repeat = f"{stats.count}x " if stats.count > 1 else ""
        lines.append(f"{number:>3}. {repeat}{shorten(example.sql, _SQL_WIDTH)}")
        site = example.call_site
        if site:
            lines.append(f"       from {site[0]}")
            if len(site) > 1:
                lines.append(f"       called from {site[1]}")
        else:
            lines.append("       from (no frame of your code on the stack)")
        if show_params and example.parameters not in (None, (), {}, []):
            label = "first parameters" if stats.count > 1 else "parameters"
            lines.append(f"       {label}: {shorten(repr(example.parameters), _PARAMS_WIDTH)}")
    if len(groups) > MAX_LISTED:
        rest = sum(stats.count for stats in groups[MAX_LISTED:])
        lines.append(
            f"  ... and {plural(rest, 'more statement')} in "
            f"{plural(len(groups) - MAX_LISTED, 'more group')}"
        )
    return lines


def budget_fix(log: QueryLog, raise_with: str) -> str:
    """The ``fix:`` line of a budget failure; ``raise_with`` formats the new budget."""
    bigger = raise_with.format(log.count)
    repeated = max(log.shapes.values(), key=lambda stats: stats.count, default=None)
    if repeated is not None and repeated.count > 1:
        example = repeated.example
        where = f" from {example.location}" if example.location else ""
        if example.relationship:
            return (
                f"fix: {example.relationship} was lazily loaded {repeated.count} times{where}; "
                f"eager-load it in the query that loads the parents, e.g. "
                f".options(selectinload({example.relationship}))"
            )
        return (
            f"fix: the same statement ran {repeated.count} times{where}; load all rows in one "
            f"query (e.g. .where(Model.id.in_(ids)) or selectinload), or raise the budget: "
            f"{bigger}"
        )
    return f"fix: remove queries, or raise the budget: {bigger}"


def budget_failure(
    kind: str, expected: int, log: QueryLog, *, raise_with: str, show_params: bool
) -> str:
    """The failure message of a query budget (marker or context manager)."""
    lines = [expectation(kind, expected, log.count)]
    lines.extend(statement_lines(log.shapes.values(), show_params=show_params))
    lines.append(budget_fix(log, raise_with))
    return "\n".join(lines)


def bad_marker_argument(marker: str, signature: str, value: str) -> str:
    """A one-line error for a misused marker."""
    return f"@pytest.mark.{marker} expects {signature}, got {value}"
