"""Evaluation: metrics as pure functions, full ranking, slices, significance."""
