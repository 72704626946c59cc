"""Errors every layer raises; each message names the file, field or value that is wrong."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field and the value."""


class DataError(ValueError):
    """Input data is wrong (annotations, mixtures, benchmark files); the message names the file and line."""
