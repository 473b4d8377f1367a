"""The report and baseline files: per-test query counts, their comparison, atomic writes."""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, NamedTuple

from .schema import is_schema

__all__ = [
    "VERSION",
    "Change",
    "CountsFileError",
    "Entry",
    "compare",
    "dumps",
    "grown",
    "load_counts",
    "schema_count",
    "without_schema",
    "write_atomic",
]

#: The schema version of the report and baseline files.
VERSION = 1


class CountsFileError(Exception):
    """A baseline or report file that is missing, unreadable or not in our format."""

    def __init__(self, path: Path, reason: str, *, missing: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.missing = missing


class Entry(NamedTuple):
    """One test's counts in a baseline or report file."""

    queries: int
    fingerprints: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        """The entry as written to a baseline."""
        return {"queries": self.queries, "fingerprints": dict(sorted(self.fingerprints.items()))}


def schema_count(fingerprints: Mapping[str, int]) -> int:
    """How many of these statements are schema work (DDL, PRAGMA, catalog reads)."""
    return sum(count for fingerprint, count in fingerprints.items() if is_schema(fingerprint))


def without_schema(entry: Entry) -> Entry:
    """The entry without its schema work: what the baseline compares by default."""
    if not any(is_schema(fingerprint) for fingerprint in entry.fingerprints):
        return entry
    kept = {fp: count for fp, count in entry.fingerprints.items() if not is_schema(fp)}
    return Entry(entry.queries - schema_count(entry.fingerprints), kept)


class Change(NamedTuple):
    """One test's count against the baseline; ``old`` is None for a test new to it."""

    nodeid: str
    old: int | None
    new: int
    #: (fingerprint, old count, new count) of the statements that ran more often.
    grown: tuple[tuple[str, int, int], ...] = ()

    @property
    def status(self) -> str:
        """``regression``, ``improvement``, ``new`` or ``unchanged``."""
        if self.old is None:
            return "new"
        if self.new > self.old:
            return "regression"
        return "improvement" if self.new < self.old else "unchanged"


def grown(old: Mapping[str, int], new: Mapping[str, int]) -> tuple[tuple[str, int, int], ...]:
    """The fingerprints that ran more often in ``new`` than in ``old``, most grown first."""
    rows = [(fp, old.get(fp, 0), count) for fp, count in new.items() if count > old.get(fp, 0)]
    rows.sort(key=lambda row: (row[1] - row[2], row[0]))
    return tuple(rows)


def compare(old: Mapping[str, Entry], new: Mapping[str, Entry]) -> list[Change]:
    """A Change for every test of ``new``, sorted by node id."""
    changes = []
    for nodeid in sorted(new):
        entry = new[nodeid]
        before = old.get(nodeid)
        if before is None:
            changes.append(Change(nodeid, None, entry.queries))
        else:
            rows = grown(before.fingerprints, entry.fingerprints)
            changes.append(Change(nodeid, before.queries, entry.queries, rows))
    return changes


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _sorted(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_sorted(item) for item in value]
    return value


def dumps(totals: Mapping[str, Any], tests: Mapping[str, Any]) -> str:
    """A report or baseline file: version and totals first, every key below them sorted."""
    document = {"version": VERSION, "totals": _sorted(totals), "tests": _sorted(tests)}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same directory and a rename.

    A crash at any point leaves either the old file or the new one, never a truncated file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # 0o666 through os.open honours the umask, like a plain open() of a new file would.
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        with suppress(FileNotFoundError):
            os.chmod(temp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
    with suppress(OSError):  # make the rename itself durable where the platform allows it
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _wrong_version(version: object) -> str:
    if version is None:
        return f'no "version"; this plugin reads "version": {VERSION}'
    if isinstance(version, (str, int, float)):
        shown = json.dumps(version)
    else:
        shown = f"a JSON {type(version).__name__}"
    hint = " (a number, not a string)" if version == str(VERSION) else ""
    return f'"version": {shown}, but this plugin reads "version": {VERSION}{hint}'


def load_counts(path: Path) -> dict[str, Entry]:
    """The per-test counts of a baseline or report file; ``CountsFileError`` names what is wrong.

    Tests a report marks as incomplete (their body failed) are left out: their count is partial.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        raise CountsFileError(path, "no such file", missing=True) from None
    except IsADirectoryError:
        raise CountsFileError(path, "a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CountsFileError(path, f"unreadable ({error})") from None
    try:
        document = json.loads(text)
    except ValueError as error:
        raise CountsFileError(path, f"not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise CountsFileError(path, "not a JSON object")
    version = document.get("version")
    if version != VERSION or isinstance(version, bool):
        raise CountsFileError(path, _wrong_version(version))
    tests = document.get("tests")
    if not isinstance(tests, dict):
        raise CountsFileError(path, 'no "tests" object')
    entries: dict[str, Entry] = {}
    for nodeid, data in tests.items():
        where = f"tests[{nodeid!r}]"
        if not isinstance(data, dict):
            raise CountsFileError(path, f"{where} is not an object")
        queries, fingerprints = data.get("queries"), data.get("fingerprints", {})
        if not isinstance(queries, int) or not _count(queries):
            raise CountsFileError(path, f'{where}["queries"] is not a non-negative integer')
        if not isinstance(fingerprints, dict) or not all(
            _count(count) for count in fingerprints.values()
        ):
            raise CountsFileError(
                path, f'{where}["fingerprints"] is not an object of non-negative integers'
            )
        if data.get("complete", True) is False:
            continue
        entries[nodeid] = Entry(queries, dict(fingerprints))
    return entries
