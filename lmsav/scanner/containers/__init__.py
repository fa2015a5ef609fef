"""Registry of container handlers: the sniffed type picks the handler from this one table, and
the handler's rebuilder (``rebuilder_for``) where it can rebuild its format."""

from __future__ import annotations

import importlib

from .base import Corrupted, Encrypted, Handler, Rebuilder, RebuildError, Unsupported

__all__ = ["Corrupted", "Encrypted", "Handler", "Rebuilder", "RebuildError", "Unsupported",
           "handler_for", "load_all", "rebuilder_for", "HANDLERS"]


# One line per family: (module, handler class). The sniffed type picks the handler.
_REGISTRY = (
    ("archive", "ArchiveHandler"),        # zip 7z rar tar cpio cab iso9660 ar (libarchive)
    ("compressed", "CompressedHandler"),  # gzip bzip2 xz lzma zstd
    ("message", "MailHandler"),           # RFC 822 messages
    ("mbox", "MboxHandler"),
    ("ole2", "Ole2Handler"),              # doc xls ppt msi: streams, packages, VBA
    ("rtf", "RtfHandler"),                # objdata, bin
    ("pdf", "PdfHandler"),                # decoded streams, embedded files
    ("html", "HtmlHandler"),              # data: URIs, literal base64/hex in scripts
    ("textenc", "TextEncodedHandler"),    # uuencode, yEnc, base64 blocks in plain text
    ("sevenzip", "SevenZipHandler"),      # arj chm (and zips libarchive cannot decode)
    ("executable", "ExecutableHandler"),  # UPX, NSIS, AutoIt, InstallShield, appended archives
    ("sfx", "SfxHandler"),                # (its types are the executable handler's, first)
    ("nsis", "NsisHandler"),              # NSIS installer data (7-Zip)
    ("autoit", "AutoitHandler"),          # compiled AutoIt scripts (EA05, EA06)
    ("installshield", "InstallShieldHandler"),  # InstallShield setup streams
    ("powerpoint", "PowerPointHandler"),  # embedded objects of a "PowerPoint Document" stream
    ("onenote", "OneNoteHandler"),        # files embedded in OneNote sections
    ("packages", "LhaHandler"),
    ("packages", "CompressHandler"),      # Unix .Z
    ("packages", "RpmHandler"),
    ("szdd", "SzddHandler"),              # MS compress.exe (SZDD, KWAJ)
    ("binhex", "BinhexHandler"),
    ("sis", "SisHandler"),                # Symbian installers
    ("tnef", "TnefHandler"),              # winmail.dat
)


# Filled on first use: the handlers' modules (libarchive, olefile, zstandard …) take ~60 ms to
# import, which a sweep that finds every file unchanged never needs. Processes that fork
# workers call load_all() first, so the workers share the imported modules.
HANDLERS: dict[str, Handler] = {}
_loaded = False


def load_all() -> dict[str, Handler]:
    global _loaded
    if not _loaded:
        for module, cls in _REGISTRY:
            handler = getattr(importlib.import_module(f".{module}", __name__), cls)()
            for t in handler.types:
                HANDLERS.setdefault(t, handler)  # setdefault: an entry put in first stays
        _loaded = True
    return HANDLERS


def handler_for(file_type: str) -> Handler | None:
    return (HANDLERS if _loaded else load_all()).get(file_type)


def rebuilder_for(file_type: str) -> Rebuilder | None:
    """How to rebuild a ``file_type`` container with members removed or replaced —
    ``rebuild(data, edits)``, ``edits`` mapping a member index (``Child.member``) to its new
    content or to None — or None when its handler cannot. A rebuild that cannot be done
    raises RebuildError."""
    offer = getattr(handler_for(file_type), "rebuilder", None)
    return offer(file_type) if offer is not None else None
