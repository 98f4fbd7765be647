"""The errors the applications (benchmark, tune, audit) raise for a person to act on, each with a one-line message."""

from __future__ import annotations

__all__ = ["ConfigError", "RunError"]


class ConfigError(ValueError):
    """A configuration that cannot run: found before anything is trained (or before a file is overwritten), with one
    line saying what to change. ``BenchmarkConfigError``, ``TuneConfigError`` and ``AuditConfigError`` are this
    class (the commands exit with status 2)."""


class RunError(RuntimeError):
    """A step the run cannot go on without failed: a model that could not be trained, a row under ``fail_fast``
    (the commands exit with status 1; what finished is kept and reused by the next start)."""
