"""Why a store could not do what was asked, and what a client is told then."""

import time
from types import TracebackType

from redis.exceptions import RedisError

from edgeproxy.observability.metrics import STORE_SECONDS
from edgeproxy.sip import Request, Response, make_response


class StoreError(Exception):
    """The store failed (unreachable, too contended); the request gets 500/503."""


class StoreFull(StoreError):
    """A bound was reached: refusing beats growing without limit."""


def store_unavailable(req: Request) -> Response:
    """A request that needs shared state while the store is out: try again soon
    (RFC 3261 §21.5.4), possibly at another instance."""
    return make_response(req, 503, "Service Unavailable (state store)", [("Retry-After", "5")])


class redis_errors:
    """`with redis_errors():` around a Redis operation: its duration goes to the
    store latency histogram, and a Redis failure becomes a StoreError."""

    __slots__ = ("start",)

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        STORE_SECONDS.observe(time.perf_counter() - self.start)
        if isinstance(err, RedisError):
            raise StoreError(f"redis: {err}") from err
