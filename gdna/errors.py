"""Errors that the CLI turns into one line naming the field or file, with exit code 2."""


class GdnaError(Exception):
    """Base for user-facing errors: the message is one line and names what is wrong."""


class ConfigError(GdnaError):
    """A sweep spec, search space or config value is wrong (names the key)."""


class DataError(GdnaError):
    """Input data is missing or malformed (names the file)."""
