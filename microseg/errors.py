"""Errors a user can act on. The CLI prints them as one line, never as a traceback."""


class MicrosegError(Exception):
    """Base class: anything raised as this reaches the user as `error: <message>`."""


class WarehouseBusyError(MicrosegError):
    """Another process holds the warehouse (DuckDB allows one writer): worth waiting for."""


class UsageError(MicrosegError):
    """The command asked for something that cannot be (a date without features, a segment
    that does not exist): exit code 2, like an argument the parser refuses."""


class ConfigError(UsageError):
    """A setting or definition is wrong (names the setting and the value)."""


class InputError(MicrosegError):
    """An input file or argument cannot be used (names the file and the problem)."""


class DataQualityError(MicrosegError):
    """Data failed a quality gate (expectations, rejected files): retrying cannot fix it."""


class NothingToRunError(MicrosegError):
    """A night too far from the newest event to build (no data for it yet): the run stops
    without failing; Airflow marks its tasks skipped."""
