"""``cached_property`` without Python 3.11's lock shared by every instance of a class.

Up to Python 3.11, ``functools.cached_property`` computes under one lock per property *per
class*: while one target instance computes its ``workspace`` (an ARM round trip), every other
target of the run waits to compute its own.  A fleet of ten Azure targets serialized its first
reads that way (1.5x the time of one target instead of ~1x).  Python 3.12 removed the lock
(python/cpython#101890); this is its version of the descriptor, for 3.11.  Targets are not
shared between threads, so no per-instance lock is needed either: at worst a value is computed
twice, and the last one is kept.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")

if sys.version_info >= (3, 12):
    from functools import cached_property
else:
    class cached_property(Generic[T]):  # noqa: N801 - the functools name, on purpose
        def __init__(self, func: Callable[[Any], T]) -> None:
            self.func = func
            self.attrname: str | None = None
            self.__doc__ = func.__doc__
            self.__module__ = func.__module__

        def __set_name__(self, owner: type, name: str) -> None:
            if self.attrname is None:
                self.attrname = name
            elif name != self.attrname:
                raise TypeError(f"cannot assign the same cached_property to two names ({self.attrname!r} and {name!r})")

        @overload
        def __get__(self, instance: None, owner: type | None = None) -> cached_property[T]: ...

        @overload
        def __get__(self, instance: object, owner: type | None = None) -> T: ...

        def __get__(self, instance: object | None, owner: type | None = None) -> Any:
            if instance is None:
                return self
            if self.attrname is None:
                raise TypeError("cached_property used without __set_name__")
            value = self.func(instance)
            instance.__dict__[self.attrname] = value
            return value

__all__ = ["cached_property"]
