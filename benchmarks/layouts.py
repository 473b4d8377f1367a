"""Memory layouts for the benchmarks: the same process, with its objects and type tags moved.

CPython's type attribute cache has 4,096 slots, picked from a class's version tag and the
address of the attribute's name. Which hot lookups collide there is fixed by where the
interpreter's strings lie and by the order in which classes are first looked up (tags are
handed out in that order), and any change to the process (importing one more module, a plugin
looking up a few classes) deals a new hand. On the generated suites a hand decides several
thousand instructions per statement, more than the plugin's own recording costs, and neither
``PYTHONHASHSEED`` nor padding the heap moves the version tags (measured: both kept one hand's
collisions, using up tags moved them). So a benchmark that compares two variants runs each in
several layouts: ``objects`` objects allocated and ``classes`` classes created and looked up
before anything is imported.
"""

from __future__ import annotations

import argparse
from typing import NamedTuple


class Layout(NamedTuple):
    """How much to allocate (``objects``) and how many tags to use up (``classes``) first."""

    objects: int
    classes: int

    def __str__(self) -> str:
        return f"{self.objects}/{self.classes}"


#: The first is the plain process; the steps are unrelated so that no two hands repeat.
LAYOUTS = (
    Layout(0, 0),
    Layout(700, 37),
    Layout(1500, 1111),
    Layout(2600, 213),
    Layout(3300, 777),
    Layout(4100, 3001),
)


def padding(layout: Layout) -> str:
    """Source that sets up ``layout``: run it first, and keep its namespace alive."""
    return (
        f"_objects = [object() for _ in range({layout.objects})]\n"
        f"_tags = [getattr(type('Pad', (), {{}}), 'x', None) for _ in range({layout.classes})]\n"
    )


def boot(layout: Layout) -> str:
    """Source for ``python -c`` that sets up ``layout`` and then runs pytest on ``sys.argv``."""
    return padding(layout) + "import pytest\nraise SystemExit(pytest.main())\n"


def layout_count(text: str) -> int:
    """An argparse ``type``: how many of ``LAYOUTS`` to run (0 to all of them)."""
    try:
        count = int(text)
    except ValueError:
        count = -1
    if not 0 <= count <= len(LAYOUTS):
        raise argparse.ArgumentTypeError(f"takes 0 to {len(LAYOUTS)} layouts, not {text!r}")
    return count
