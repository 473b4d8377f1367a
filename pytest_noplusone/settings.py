"""Every setting, resolved once per session: command line, then ini, then default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest

__all__ = ["Settings", "add_options", "resolve"]

ENFORCE_MODES = ("raise_on_sql", "raise", "off")
NPLUSONE_MODES = ("fail", "warn", "off")
AWAITABLE_ATTRS_MODES = ("allow", "forbid")
RUN_SYNC_MODES = ("allow", "forbid")
SYNC_LAZY_MODES = ("forbid", "allow")


class Settings(NamedTuple):
    """The plugin's configuration for one session."""

    enforce: str = "raise_on_sql"
    max_queries: int | None = None
    ignore: tuple[re.Pattern[str], ...] = ()
    show_params: bool = True
    allow_lazy: tuple[str, ...] = ()
    awaitable_attrs: str = "allow"
    run_sync: str = "allow"
    sync_lazy: str = "forbid"
    audit: bool = False
    nplusone: str = "fail"
    threshold: int = 2
    report: Path | None = None
    baseline: Path | None = None
    update_baseline: bool = False
    #: Whether schema work (DDL, PRAGMA, catalog reads) is compared with the baseline too.
    compare_schema: bool = False

    def header(self) -> str:
        """The one line shown in pytest's header."""
        parts = [
            f"enforce={self.enforce}",
            f"nplusone={self.nplusone}",
            f"threshold={self.threshold}",
        ]
        if self.enforce != "off" and self.sync_lazy != "forbid":
            parts.append(f"sync_lazy={self.sync_lazy}")
        if self.enforce != "off" and self.run_sync != "allow":
            parts.append(f"run_sync={self.run_sync}")
        if self.max_queries is not None:
            parts.append(f"max_queries={self.max_queries}")
        if self.report is not None:
            parts.append(f"report={self.report}")
        if self.baseline is not None:
            parts.append(f"baseline={self.baseline}")
            if self.update_baseline:
                parts.append("update-baseline")
            if self.compare_schema:
                parts.append("compare-schema")
        return "noplusone: " + " ".join(parts)


def add_options(parser: pytest.Parser) -> None:
    """Register the command-line options and ini keys."""
    group = parser.getgroup("noplusone", "SQLAlchemy query counting and N+1 prevention")
    group.addoption(
        "--noplusone-enforce",
        choices=ENFORCE_MODES,
        default=None,
        help="lazy loading policy for relationships: raise_on_sql (default), raise or off.",
    )
    group.addoption(
        "--noplusone-nplusone",
        choices=NPLUSONE_MODES,
        default=None,
        help="what an N+1 finding does: fail (default), warn or off.",
    )
    group.addoption(
        "--noplusone-audit",
        action="store_true",
        default=False,
        help="list every relationship that still relies on implicit lazy loading.",
    )
    group.addoption(
        "--noplusone-report",
        metavar="PATH",
        default=None,
        help="write a JSON report of query counts and findings to PATH.",
    )
    group.addoption(
        "--noplusone-baseline",
        metavar="PATH",
        default=None,
        help="fail tests whose query count rose above the counts recorded in PATH.",
    )
    group.addoption(
        "--noplusone-update-baseline",
        action="store_true",
        default=False,
        help="write the current query counts to the baseline file instead of comparing.",
    )
    group.addoption(
        "--noplusone-compare-schema",
        action="store_true",
        default=False,
        help="compare schema work (DDL, PRAGMA, catalog reads) with the baseline too.",
    )
    parser.addini(
        "noplusone_enforce", "raise_on_sql (default), raise or off.", default="raise_on_sql"
    )
    parser.addini(
        "noplusone_max_queries", "default query budget for tests without a marker.", default=""
    )
    parser.addini(
        "noplusone_ignore",
        "regular expressions; matching statements are not counted.",
        type="linelist",
        default=[],
    )
    parser.addini(
        "noplusone_show_params",
        "show parameter values in failure messages (default true).",
        type="bool",
        default=True,
    )
    parser.addini(
        "noplusone_allow_lazy",
        "relationships allowed to lazy load: Model.attr, Model.*, *.attr, "
        "package.module.Model.attr or package.module.*.",
        type="linelist",
        default=[],
    )
    parser.addini(
        "noplusone_awaitable_attrs",
        "allow (default) or forbid loads through obj.awaitable_attrs.",
        default="allow",
    )
    parser.addini(
        "noplusone_run_sync",
        "allow (default) or forbid lazy loads inside AsyncSession.run_sync.",
        default="allow",
    )
    parser.addini(
        "noplusone_sync_lazy",
        "forbid (default) or allow lazy loads in sync code (counted, N+1 checked).",
        default="forbid",
    )
    parser.addini("noplusone_nplusone", "fail (default), warn or off.", default="fail")
    parser.addini(
        "noplusone_threshold",
        "repeats of one statement from one call site that make an N+1 (default 2).",
        default="2",
    )
    parser.addini("noplusone_report", "path of the JSON report.", default="")
    parser.addini("noplusone_baseline", "path of the query-count baseline.", default="")
    parser.addini(
        "noplusone_compare_schema",
        "compare schema work (DDL, PRAGMA, catalog reads) with the baseline too (default false).",
        type="bool",
        default=False,
    )


def _choice(value: str, name: str, valid: tuple[str, ...]) -> str:
    value = value.strip()
    if value not in valid:
        raise pytest.UsageError(
            f"{value!r} is not a valid {name}; use one of: {', '.join(valid)}."
        )
    return value


def _int(value: str, name: str, minimum: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise pytest.UsageError(
            f"{value.strip()!r} is not a valid {name}; use a whole number >= {minimum}."
        )
    return number


def _patterns(lines: list[str]) -> tuple[re.Pattern[str], ...]:
    patterns = []
    for line in lines:
        try:
            patterns.append(re.compile(line))
        except re.error as error:
            raise pytest.UsageError(
                f"{line!r} in noplusone_ignore is not a valid regular expression: {error}"
            ) from None
    return tuple(patterns)


def _path(config: pytest.Config, option: str | None, ini: str) -> Path | None:
    if option:
        return Path(option)
    value = str(config.getini(ini)).strip()
    return config.rootpath / value if value else None


def resolve(config: pytest.Config) -> Settings:
    """Read every setting; a bad value is a ``pytest.UsageError`` naming it."""
    option = config.option
    enforce = option.noplusone_enforce or _choice(
        str(config.getini("noplusone_enforce")), "noplusone_enforce", ENFORCE_MODES
    )
    nplusone = option.noplusone_nplusone or _choice(
        str(config.getini("noplusone_nplusone")), "noplusone_nplusone", NPLUSONE_MODES
    )
    max_queries_ini = str(config.getini("noplusone_max_queries")).strip()
    return Settings(
        enforce=enforce,
        max_queries=(
            _int(max_queries_ini, "noplusone_max_queries", 0) if max_queries_ini else None
        ),
        ignore=_patterns(list(config.getini("noplusone_ignore"))),
        show_params=bool(config.getini("noplusone_show_params")),
        allow_lazy=tuple(str(line) for line in config.getini("noplusone_allow_lazy")),
        awaitable_attrs=_choice(
            str(config.getini("noplusone_awaitable_attrs")),
            "noplusone_awaitable_attrs",
            AWAITABLE_ATTRS_MODES,
        ),
        run_sync=_choice(
            str(config.getini("noplusone_run_sync")), "noplusone_run_sync", RUN_SYNC_MODES
        ),
        sync_lazy=_choice(
            str(config.getini("noplusone_sync_lazy")), "noplusone_sync_lazy", SYNC_LAZY_MODES
        ),
        audit=bool(option.noplusone_audit),
        nplusone=nplusone,
        threshold=_int(str(config.getini("noplusone_threshold")), "noplusone_threshold", 2),
        report=_path(config, option.noplusone_report, "noplusone_report"),
        baseline=_path(config, option.noplusone_baseline, "noplusone_baseline"),
        update_baseline=bool(option.noplusone_update_baseline),
        compare_schema=bool(
            option.noplusone_compare_schema or config.getini("noplusone_compare_schema")
        ),
    )
