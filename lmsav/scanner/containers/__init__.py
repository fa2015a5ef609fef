"""Registry of container handlers: the sniffed type picks the handler from this one table."""

from __future__ import annotations

from .base import Corrupted, Encrypted, Handler, Unsupported

__all__ = ["Corrupted", "Encrypted", "Handler", "Unsupported", "handler_for", "HANDLERS"]


def _build_table() -> dict[str, Handler]:
    from .archive import ArchiveHandler
    from .compressed import CompressedHandler
    from .mail import MailHandler
    from .mbox import MboxHandler
    from .ole2 import Ole2Handler
    from .rtf import RtfHandler

    table: dict[str, Handler] = {}
    for handler in (ArchiveHandler(), CompressedHandler(), MailHandler(), MboxHandler(),
                    Ole2Handler(), RtfHandler()):
        for t in handler.types:
            table[t] = handler
    return table


HANDLERS: dict[str, Handler] = _build_table()


def handler_for(file_type: str) -> Handler | None:
    return HANDLERS.get(file_type)
