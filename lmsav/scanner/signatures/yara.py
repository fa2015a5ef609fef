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

    A yara-x scanner may only be used and freed by the thread that made it, so each thread that
    scans gets its own, lazily, in thread-local storage: Python frees it on that thread when
    the thread ends (a worker after fork: its only thread keeps one). A thread done with the
    matcher before it ends calls ``release()`` so the matcher can then be handed to, and freed
    by, any thread (the daemon self-tests a new database on its reload thread)."""

    def __init__(self, blob: bytes):
        self._rules = yara_x.Rules.deserialize_from(io.BytesIO(blob))
        self._local = threading.local()
        self.count = sum(1 for _ in self._rules)

    def match(self, data) -> list[tuple[str, str]]:
        if not isinstance(data, bytes):
            data = bytes(data)  # yara-x takes bytes only, not an mmap
        scanner = getattr(self._local, "scanner", None)
        if scanner is None:
            scanner = self._local.scanner = yara_x.Scanner(self._rules)
        results = scanner.scan(data)
        return [(NAME_PREFIX + r.identifier, r.namespace) for r in results.matching_rules]

    def release(self) -> None:
        """Free this thread's scanner (a no-op when it has none)."""
        self._local.__dict__.pop("scanner", None)
