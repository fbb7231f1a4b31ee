"""shiftrec: capture how e-commerce users' interests migrate, and recommend accordingly."""

__version__ = "0.1.0"
SCHEMA_VERSION = 1
