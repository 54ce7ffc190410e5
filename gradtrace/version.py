"""The gradtrace version: one home, on the ground floor (pyproject.toml repeats it; a test checks they agree)."""

__version__ = "0.1.0"
