"""Helpers below every other layer of the package (no imports of models,
datasets or engine)."""
