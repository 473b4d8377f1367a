"""pytest-noplusone: N+1 queries and lazy-load crashes in SQLAlchemy async code fail your tests."""

from .assertions import QueryCountError, assert_max_queries, assert_queries, capture_queries
from .capture import CapturedQuery, Location, QueryLog

__version__ = "0.1.0"

__all__ = [
    "CapturedQuery",
    "Location",
    "QueryCountError",
    "QueryLog",
    "__version__",
    "assert_max_queries",
    "assert_queries",
    "capture_queries",
]
