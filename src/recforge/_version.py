"""The package version (a module of its own so that any layer may read it without importing
the top-level package, which re-exports names from the upper layers)."""

__version__ = "0.1.0"
