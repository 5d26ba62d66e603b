"""Why a store could not do what was asked."""


class StoreError(Exception):
    """The store failed (unreachable, too contended); the request gets 500/503."""


class StoreFull(StoreError):
    """A bound was reached: refusing beats growing without limit."""
