"""What ``allow_lazy`` lets through: parsing its entries and the allowance of the running test.

Free of ``sqlalchemy.orm``: the plugin reads markers and ini lines in every run, and a suite
that never imports the ORM must not pay for importing it (about 0.1 s) because of the plugin.
The guards of ``enforcement`` consult ``permits``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import pytest

from . import messages

__all__ = [
    "AllowLazyWarning",
    "Pattern",
    "end_test_allowance",
    "marker_allowance",
    "matches",
    "parse_pattern",
    "patterns_from_ini",
    "permits",
    "start_test_allowance",
]

#: ``("User", "posts")``; either part may be ``"*"``, and the first may be qualified by its
#: module (``"shop.models.User"``) or be a module (``("shop.models", "*")``).
Pattern = tuple[str, str]
_NAME = r"[A-Za-z_]\w*"
_PATTERN = re.compile(rf"(\*|{_NAME}(?:\.{_NAME})*)\.(\*|{_NAME})\Z")


def parse_pattern(text: object) -> Pattern:
    """``"User.posts"`` -> ``("User", "posts")``; a malformed entry raises ``ValueError``."""
    match = _PATTERN.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not {messages.FORMS}")
    return match.group(1), match.group(2)


class AllowLazyWarning(pytest.PytestWarning):
    """An allow_lazy entry that matches no mapped relationship (a typo allows nothing)."""


def patterns_from_ini(lines: Iterable[str]) -> frozenset[Pattern]:
    """The ``noplusone_allow_lazy`` entries; a malformed one is a ``pytest.UsageError``."""
    patterns = set()
    for line in lines:
        try:
            patterns.add(parse_pattern(line))
        except ValueError as error:
            raise pytest.UsageError(
                messages.allow_lazy_invalid("noplusone_allow_lazy", str(error))
            ) from None
    return frozenset(patterns)


def marker_allowance(markers: Sequence[pytest.Mark]) -> frozenset[Pattern] | None:
    """What a test's ``@pytest.mark.allow_lazy`` markers (closest first) allow: ``None`` is
    everything."""
    if not markers:
        return frozenset()
    patterns: set[Pattern] = set()
    for marker in markers:
        if not marker.args and not marker.kwargs:
            return None
        try:
            valid = not marker.kwargs
            patterns.update(parse_pattern(arg) for arg in marker.args)
        except ValueError:
            valid = False
        if not valid:
            shown = [repr(arg) for arg in marker.args]
            shown += [f"{key}={value!r}" for key, value in marker.kwargs.items()]
            pytest.fail(
                messages.bad_marker_argument(
                    "allow_lazy",
                    "names like 'Model.attr', 'Model.*', '*.attr', 'package.module.Model.attr' or "
                    "'package.module.*' (none: every relationship)",
                    f"allow_lazy({', '.join(shown)})",
                ),
                pytrace=False,
            )
    return frozenset(patterns)


def matches(names: Iterable[Pattern], patterns: frozenset[Pattern]) -> bool:
    """Whether any of ``names`` is matched by one of ``patterns``.

    A relationship's names are ``(Class, key)``, ``(module.Class, key)`` and ``(package, key)``
    for its module and each package above it, so ``Class.*``, ``module.Class.key`` and
    ``module.*`` match by the same three lookups."""
    return (
        any(
            name in patterns or (name[0], "*") in patterns or ("*", name[1]) in patterns
            for name in names
        )
        or ("*", "*") in patterns
    )


# -- the running test's allowance, process-wide (tests may lazy load from other threads) ------

_allow_all = False
_allowed: frozenset[Pattern] = frozenset()


def start_test_allowance(patterns: frozenset[Pattern] | None) -> None:
    """Allow lazy loads of these relationships (``None``: all) until ``end_test_allowance``."""
    global _allow_all, _allowed
    _allow_all = patterns is None
    _allowed = patterns or frozenset()


def end_test_allowance() -> None:
    """Enforce every forced relationship again."""
    start_test_allowance(frozenset())


def permits(names: Callable[[], Iterable[Pattern]]) -> bool:
    """Whether the running test allows a lazy load of the relationship mapped as ``names()``."""
    return _allow_all or (bool(_allowed) and matches(names(), _allowed))
