"""The one exception type users see: a clear message, no traceback, a non-zero exit from the CLI."""


class NmsimError(Exception):
    """A user-facing error: bad input, a missing model or data file, an impossible combination."""
