"""One ``__hash__`` for the frozen dataclasses that key the simulator's caches (designs, the timing, a layer's use):
hashed once, on first use, and kept; such objects are looked up hundreds of thousands of times per sweep."""

from __future__ import annotations

import dataclasses


def hash_once(self) -> int:
    """``hash(dataclasses.astuple(self))``, computed on the first call and stored on the (frozen) instance. Set it
    as the class's ``__hash__``; equal instances have equal field tuples, so equality and hashing stay consistent."""
    cached = self.__dict__.get("_hash")
    if cached is None:
        cached = hash(dataclasses.astuple(self))
        object.__setattr__(self, "_hash", cached)
    return cached
