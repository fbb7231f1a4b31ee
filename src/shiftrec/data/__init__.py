"""Data layer: canonical schema, readers, cleaning with quarantine, splits, synthetic store."""
