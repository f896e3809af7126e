"""The package version, alone in a module so that any layer can read it without importing
the API (`amoseg/__init__` re-exports it)."""

__version__ = "0.1.0"
