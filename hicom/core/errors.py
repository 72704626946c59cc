"""Errors every layer raises; each message names the file, field or value that is wrong."""
from __future__ import annotations


class InputError(Exception):
    """Caused by the user's input (params, data, checkpoints), not by a bug: commands report it in one line."""


class ConfigError(ValueError, InputError):
    """A configuration value is wrong; the message names the field and the value."""


class DataError(ValueError, InputError):
    """Input data is wrong (annotations, mixtures, benchmark files); the message names the file and line."""
