"""YARA rules (.yar/.yara) compiled once with yara-x and loaded from the serialized form."""

from __future__ import annotations

import io
import threading

import yara_x

from .errors import SignatureError

# ClamAV reports YARA hits as "YARA.<rule>"; keeping that makes logs and ignore lists portable.
NAME_PREFIX = "YARA."


def compile_rules(sources: list[tuple[str, str]]) -> bytes:
    """Compile ``(file name, rule text)`` pairs into one serialized rule set ("" if none)."""
    if not sources:
        return b""
    compiler = yara_x.Compiler()
    for source, text in sources:
        # One namespace per file, so two files may both define a rule called "test".
        compiler.new_namespace(source)
        try:
            compiler.add_source(text, origin=source)
        except yara_x.CompileError as err:
            first = str(err).strip().splitlines()
            raise SignatureError(source, _error_line(str(err)), first[0] if first else "error")
    rules = compiler.build()
    out = io.BytesIO()
    rules.serialize_into(out)
    return out.getvalue()


def _error_line(message: str) -> int:
    # yara-x errors carry "--> origin:LINE:COL"; the line is what an admin needs.
    for line in message.splitlines():
        line = line.strip()
        if line.startswith("-->"):
            parts = line.split(":")
            if len(parts) >= 3 and parts[-2].isdigit():
                return int(parts[-2])
    return 0


class YaraMatcher:
    """Runs the rule set over data.

    A yara-x scanner may only be used and freed by the thread that made it. The matcher makes
    one, lazily, for the first thread that scans (after fork, in a worker: its only thread)
    and keeps it; any other thread scans with a scanner made and freed within the call. A
    thread that is done with the matcher calls ``release()`` so the matcher can then be handed
    to, and freed by, any thread (the daemon self-tests a new database on its reload thread)."""

    def __init__(self, blob: bytes):
        self._rules = yara_x.Rules.deserialize_from(io.BytesIO(blob))
        self._scanner = None
        self._owner: int | None = None  # the thread that made self._scanner
        self.count = sum(1 for _ in self._rules)

    def match(self, data) -> list[tuple[str, str]]:
        if not isinstance(data, bytes):
            data = bytes(data)  # yara-x takes bytes only, not an mmap
        me = threading.get_ident()
        if self._scanner is None:
            self._scanner, self._owner = yara_x.Scanner(self._rules), me
        if self._owner == me:
            results = self._scanner.scan(data)
        else:
            results = self._rules.scan(data)  # its scanner lives and dies on this thread
        return [(NAME_PREFIX + r.identifier, r.namespace) for r in results.matching_rules]

    def release(self) -> None:
        """Free the kept scanner if this thread made it (a no-op otherwise)."""
        if self._scanner is not None and self._owner == threading.get_ident():
            self._scanner, self._owner = None, None
