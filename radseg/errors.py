"""User-facing errors: one clear line, no traceback unless ``--debug``."""

from __future__ import annotations


class RadsegError(Exception):
    """An error caused by the user's input (data, config, arguments), not by a bug.

    The CLI prints ``str(err)`` on one line and exits non-zero; ``--debug`` adds the traceback.
    """


class ConfigError(RadsegError):
    """A config key, type or value that cannot be used."""


class DataError(RadsegError):
    """A dataset, file or image that cannot be used."""
