"""Errors a user can act on. The CLI prints them as one line, never as a traceback."""


class MicrosegError(Exception):
    """Base class: anything raised as this reaches the user as `error: <message>`."""


class ConfigError(MicrosegError):
    """A setting or definition is wrong (names the setting and the value)."""


class InputError(MicrosegError):
    """An input file or argument cannot be used (names the file and the problem)."""


class DataQualityError(MicrosegError):
    """Data failed a quality gate (expectations, rejected files): retrying cannot fix it."""
