"""pytest-noplusone: N+1 queries and lazy-load crashes in SQLAlchemy async code fail your tests."""

from .allow_lazy import AllowLazyWarning
from .assertions import QueryCountError, assert_max_queries, assert_queries, capture_queries
from .capture import CapturedQuery, Location, QueryLog
from .detection import Finding, NPlusOneWarning, UnusedAllowWarning, fingerprint
from .scale import QueryScaleError, assert_constant_queries

__version__ = "0.1.0"

__all__ = [
    "AllowLazyWarning",
    "CapturedQuery",
    "Finding",
    "Location",
    "NPlusOneWarning",
    "QueryCountError",
    "QueryLog",
    "QueryScaleError",
    "UnusedAllowWarning",
    "__version__",
    "assert_constant_queries",
    "assert_max_queries",
    "assert_queries",
    "capture_queries",
    "fingerprint",
]
