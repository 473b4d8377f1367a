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
def forget() -> None: ...
def locate() -> tuple[int, tuple[tuple[CodeType, int, int], ...]]: ...
def bind(
    namespace: dict[str, Any],
    shapes: dict[str, str],
    shape: Callable[[str], str],
    intern: Callable[[], Any],
    loader: Callable[[Any, Any], Any],
    errors: list[BaseException],
) -> None: ...
def capture(
    cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool = False, /
) -> None: ...
def drain(
    settled: dict[Any, dict[str, bytearray]], clear: bool, /
) -> list[tuple[str, Any, int]]: ...

class Hook:
    """A dialect method replaced by one that records its statement first."""

    @property
    def original(self) -> Any: ...
    def __call__(self, *args: Any) -> Any: ...

def hook(original: Any, name: str, kind: int, /) -> Hook: ...
