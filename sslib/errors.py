"""sslib's error types for bad input: what a user gave (a config value, an argument, a file) and can fix.

The command line prints an :class:`SslibError` as one line and exits with status 2; any other exception
is a bug in sslib or a library beneath it and keeps its traceback. Each type also derives from the
built-in error it refines, so ``except ValueError`` and ``except FileNotFoundError`` still catch them.
"""

from __future__ import annotations


class SslibError(Exception):
    """Bad input, with a one-line message that names the bad value and what is allowed."""


class ConfigError(SslibError, ValueError):
    """A config value, override or argument that is not allowed."""


class MissingFileError(SslibError, FileNotFoundError):
    """A file or folder that the input names does not exist."""
