"""Why a store could not do what was asked, and what a client is told then."""

from types import TracebackType

from redis.exceptions import RedisError

from edgeproxy.sip import Request, Response, make_response


class StoreError(Exception):
    """The store failed (unreachable, too contended); the request gets 500/503."""


class StoreFull(StoreError):
    """A bound was reached: refusing beats growing without limit."""


def store_unavailable(req: Request) -> Response:
    """A request that needs shared state while the store is out: try again soon
    (RFC 3261 §21.5.4), possibly at another instance."""
    return make_response(req, 503, "Service Unavailable (state store)", [("Retry-After", "5")])


class _RedisErrors:
    """`with redis_errors:` turns a Redis failure into a StoreError (one shared
    instance, stateless: nothing is allocated per use)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(err, RedisError):
            raise StoreError(f"redis: {err}") from err


redis_errors = _RedisErrors()
