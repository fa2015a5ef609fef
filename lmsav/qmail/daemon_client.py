"""The wrapper's side of the daemon's LMSAVMAIL command (the exchange is mail/transfer.py's)."""

from ..mail import transfer


class DaemonUnavailable(Exception):
    """Nobody listens on the socket: the caller may scan in-process instead."""


def ask(path: str, message_fd: int, sender: bytes, recipients: list[bytes], group: str,
        client: str, timeout: float):
    """The plan for one message: (header, [(key, sender, recipients, body), ...])."""
    from .errors import Defer

    try:
        return transfer.ask(path, transfer.encode_request(sender, recipients, group, client),
                            message_fd, timeout)
    except transfer.ExchangeError as err:
        if not err.connected:
            raise DaemonUnavailable(str(err)) from None
        raise Defer(str(err)) from None
