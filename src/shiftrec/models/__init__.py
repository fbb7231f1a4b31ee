"""Recommenders behind one small Protocol, in an explicit registry (see models.registry)."""
