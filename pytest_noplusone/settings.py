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

    #: False with ``--noplusone-off`` or ini ``noplusone = off``: nothing is enforced or
    #: checked; the markers stay registered and ``noplusone_queries`` still counts.
    enabled: bool = True
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
        if not self.enabled:
            return "noplusone: off (markers are ignored; noplusone_queries still counts)"
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
        "--noplusone-off",
        action="store_true",
        default=False,
        help="switch pytest-noplusone off for this run: no enforcement, budgets, N+1 checks, "
        "report or baseline; its markers stay registered and noplusone_queries still counts.",
    )
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
        "noplusone",
        "false (or off) switches the plugin off, as --noplusone-off does (default true).",
        type="bool",
        default=True,
    )
    parser.addini(
        "noplusone_enforce", "raise_on_sql (default), raise or off.", default="raise_on_sql"
    )
    parser.addini(
        "noplusone_max_queries",
        "default query budget (an int) for tests without a marker.",
        type="int",
        default=None,
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
        "repeats of one statement from one call site that make an N+1 (an int, default 2).",
        type="int",
        default=2,
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


#: The value at the end of pytest's (or ``int()``'s) complaint about an ini value:
#: "invalid truth value 'perhaps'", "... expects an int, got str: 'many'".
_CULPRIT = re.compile(r"""^.*(?:: | )('.*'|".*"|[^ ]+)$""")


def _ini(config: pytest.Config, name: str, expected: str) -> object:
    """``config.getini(name)``; a value of the wrong type is a usage error that names it."""
    try:
        return config.getini(name)
    except (ValueError, TypeError, pytest.UsageError) as error:
        text = str(error)
        match = _CULPRIT.search(text)
        culprit = match.group(1) if match else text
        raise pytest.UsageError(f"{culprit} is not a valid {name}; use {expected}.") from None


def _int(config: pytest.Config, name: str, minimum: int) -> int | None:
    expected = f"a whole number >= {minimum}"
    value = _ini(config, name, expected)
    if value is None:
        return None
    if isinstance(value, str):  # pytest < 9's TOML ini_options may hand us a string
        try:
            value = int(value.strip())
        except ValueError:
            raise pytest.UsageError(f"{value!r} is not a valid {name}; use {expected}.") from None
    assert isinstance(value, int)
    if value < minimum:
        raise pytest.UsageError(f"{str(value)!r} is not a valid {name}; use {expected}.")
    return value


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
    threshold = _int(config, "noplusone_threshold", 2)
    return Settings(
        enabled=not option.noplusone_off and bool(_ini(config, "noplusone", "true or false")),
        enforce=enforce,
        max_queries=_int(config, "noplusone_max_queries", 0),
        ignore=_patterns(list(config.getini("noplusone_ignore"))),
        show_params=bool(_ini(config, "noplusone_show_params", "true or false")),
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
        threshold=2 if threshold is None else threshold,
        report=_path(config, option.noplusone_report, "noplusone_report"),
        baseline=_path(config, option.noplusone_baseline, "noplusone_baseline"),
        update_baseline=bool(option.noplusone_update_baseline),
        compare_schema=bool(
            option.noplusone_compare_schema or config.getini("noplusone_compare_schema")
        ),
    )
