"""One ``__hash__`` for the frozen dataclasses that key the simulator's caches (designs, the timing, a layer's use):
hashed once, on first use, and kept; such objects are looked up hundreds of thousands of times per sweep."""

from __future__ import annotations

import dataclasses
import functools


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls))


def hash_once(self) -> int:
    """The hash of the instance's field values (a shallow tuple: nested values hash themselves), computed on the
    first call and stored on the (frozen) instance. Set it as the class's ``__hash__``; equal instances have equal
    field values, so equality and hashing stay consistent."""
    cached = self.__dict__.get("_hash")
    if cached is None:
        cached = hash(tuple(getattr(self, name) for name in _field_names(type(self))))
        object.__setattr__(self, "_hash", cached)
    return cached
