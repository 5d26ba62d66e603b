"""abc.ABC's guarantee without its metaclass.

A class with abstract methods still cannot be instantiated (nor can a subclass
that leaves one unimplemented), but isinstance() against these classes stays
the C fast path: ABCMeta's __instancecheck__ is a Python-level call, and the
message and transaction classes are checked several times per SIP message.
"""

from __future__ import annotations

from typing import Any


class Abstract:
    """Methods decorated with abc.abstractmethod must be implemented before a class
    can be instantiated (object.__new__ refuses a class whose __abstractmethods__ is
    not empty, whatever its metaclass)."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__abstractmethods__ = frozenset(  # type: ignore[misc]
            name for name in dir(cls) if getattr(getattr(cls, name, None), "__isabstractmethod__", False))
