"""What can go wrong in an update, each ``str()`` one line an administrator can act on."""

from __future__ import annotations


class UpdateError(Exception):
    """The update did not happen; the previous database stays active."""


class SourceError(UpdateError):
    """A source failed (unreachable, bad answer, bad file): the next source is tried."""

    retryable = False  # worth asking the same source again after a pause


class TransientError(SourceError):
    """A failure that may pass: a timeout, a dropped connection, a server error."""

    retryable = True


class NotFound(SourceError):
    """The source does not have this file (404, or no such file in a directory)."""


class RateLimited(SourceError):
    """The server asked us to wait (429): ``wait`` seconds from now."""

    def __init__(self, message: str, wait: float):
        super().__init__(message)
        self.wait = wait


class StagingError(UpdateError):
    """A local failure while staging (disk full, permissions): no other source would help."""


class Busy(UpdateError):
    """Another update holds the lock."""
