"""Exceptions with messages meant for users: each names the file or key and what was wrong.

The CLI prints any ``FnafError`` as one line and exits with status 2.
"""


class FnafError(Exception):
    """Base class of every error fnaf-jax raises on purpose."""


class DataError(FnafError, ValueError):
    """A data file or folder is missing, corrupt or not in fastMRI format."""


class CheckpointError(FnafError, ValueError):
    """A checkpoint cannot be read, or its keys or shapes do not fit the model."""


class ConfigError(FnafError, ValueError):
    """An option, preset or architecture name is unknown or inconsistent."""
