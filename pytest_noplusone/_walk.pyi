from collections.abc import Callable
from types import CodeType
from typing import Any

def configure(
    kinds: dict[str, int],
    classify: Callable[[str], int],
    getcurrent: Callable[[], Any],
    greenlet_type: type[Any],
    depth: int,
) -> None: ...
def offsets() -> tuple[int, ...]: ...
def user_frames() -> tuple[tuple[CodeType, int], ...]: ...
