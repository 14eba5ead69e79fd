"""Exceptions that carry a message a user can act on.

Every error raised on bad input names the offending file(s) and says what to do, so the CLI can print
the message as is (no traceback) and exit non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable


class GmsegError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ConfigError(GmsegError, ValueError):
    """A configuration value or key is invalid."""


class DataError(GmsegError):
    """One or more dataset files are missing, unreadable or inconsistent.

    Collects every problem before raising, so a user fixes a dataset in one pass rather than one file
    at a time.
    """

    def __init__(self, summary: str, problems: Iterable[str] = ()):
        self.summary = summary
        self.problems = list(problems)
        lines = [summary] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class CheckpointError(GmsegError):
    """A checkpoint or weight file cannot be loaded safely or does not match the model."""


class FirstStageError(GmsegError):
    """The frozen autoencoder (first stage) could not be obtained."""
