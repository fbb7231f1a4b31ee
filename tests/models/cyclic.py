"""A tiny catalogue with a known answer (the library's `cyclic_split`, re-exported for tests)."""

from shiftrec.data.synthetic import cyclic_split

__all__ = ["cyclic_split"]
