from collections.abc import Callable
from types import CodeType
from typing import Any

def configure(
    kinds: dict[str, int],
    classify: Callable[[str], int],
    getcurrent: Callable[[], Any],
    greenlet_type: type[Any],
    depth: int,
    sites: dict[int, tuple[Any, tuple[CodeType, ...], tuple[int, ...]]],
) -> None: ...
def site() -> Any: ...
def locate() -> tuple[int, tuple[tuple[CodeType, int, int], ...]]: ...
