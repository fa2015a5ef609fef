"""ClamAV's ``.cdiff`` incremental updates: the signed file, and its script run on a container.

A ``.cdiff`` file is ``ClamAV-Diff:<version>:<script length>:``, a gzip stream holding the
script, then ``:`` and a classic signature (ClamAV's "cdiff" key, the PSS-like scheme) of the
SHA-256 of every byte before that last ``:``. A detached ``<file>.cdiff.sign`` (PKCS#7), when
present and usable, is checked instead; one that is there and does not verify refuses the file.

The script edits the unpacked container in place, one line per command (``#`` starts a comment):

- ``OPEN name`` / ``CLOSE`` — choose a member; edits are applied and additions appended at CLOSE.
- ``ADD text`` — append a line to the open member.
- ``DEL n start`` — remove line ``n`` (counted from 1), which must begin with ``start`` (the
  first space-separated word given).
- ``XCHG n start new line`` — replace line ``n``, which must begin with ``start``.
- ``MOVE src dst n1 start1 n2 start2`` — move lines ``n1``..``n2`` of ``src`` to the end of
  ``dst`` (no member open), checking the first words of both ends.
- ``UNLINK name`` — remove a member (no member open).

Member names are plain file names of ASCII letters, digits, ``.`` and ``_``: nothing outside the
working directory can be named. lmsav is stricter than ClamAV where ClamAV would silently do less:
the version in the header must be the one the file name promised, and a script must not end with
a member still open (its edits would be lost).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..scanner.signatures import cvd

MAGIC = b"ClamAV-Diff:"
MAX_DSIG_BYTES = 350  # ClamAV reads the signature from at most this many trailing bytes
MAX_SCRIPT_BYTES = 256 << 20  # a decompressed script larger than this is refused (gzip bomb)
_NAME = re.compile(r"[A-Za-z0-9._]+")


class CdiffError(Exception):
    """A .cdiff that cannot be used; ``str()`` is one line."""


@dataclass(frozen=True)
class Cdiff:
    version: int
    script: bytes
    verified_by: str  # "ClamAV key" or "<file>.sign (<signer>)"


def read_cdiff(path, expected_version: int | None = None, trust_dirs=(), *,
               check_time: int | None = None) -> Cdiff:
    """Verify and decode one ``.cdiff`` file, or raise CdiffError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CdiffError(f"{path.name}: cannot read: {err.strerror}") from None
    try:
        verified_by = _verify(path, data, trust_dirs, check_time)
        version, declared, body = _split(data)
        if expected_version is not None and version != expected_version:
            raise CdiffError(f"its header says version {version}, expected {expected_version}")
        script = _decompress(body)
    except CdiffError as err:
        raise CdiffError(f"{path.name}: {err}") from None
    del declared  # ClamAV only logs a mismatch with the script's real length; so does nothing
    return Cdiff(version, script, verified_by)


def _verify(path: Path, data: bytes, trust_dirs, check_time: int | None) -> str:
    sign = path.with_name(path.name + ".sign")
    try:
        signer = cvd.verify_sign_file(data, sign, trust_dirs, check_time=check_time)
    except cvd.SignFileError as err:
        raise CdiffError(f"{sign.name} does not verify: {err}") from None
    except OSError as err:
        raise CdiffError(f"certificate directory {err.filename}: {err.strerror}") from None
    if signer is not None:
        return f"{sign.name} ({signer})"
    tail = data[-(MAX_DSIG_BYTES + 1):]
    colon = tail.rfind(b":")
    if colon < 0 or len(data) <= MAX_DSIG_BYTES:
        raise CdiffError("no digital signature at the end (truncated?)")
    dsig = tail[colon + 1:]
    signed = data[:len(data) - len(dsig) - 1]
    try:
        text = dsig.decode("ascii")
    except UnicodeDecodeError:
        raise CdiffError("bad digital signature: not ClamAV's encoding") from None
    if not cvd.verify_dsig(hashlib.sha256(signed).digest(), text, "cdiff"):
        raise CdiffError("bad digital signature: it does not match ClamAV's key")
    return "ClamAV key"


def _split(data: bytes) -> tuple[int, int, bytes]:
    """(version, declared script length, the bytes from the gzip stream on)."""
    if not data.startswith(MAGIC):
        raise CdiffError("not a ClamAV .cdiff (no ClamAV-Diff header)")
    fields = data[len(MAGIC):len(MAGIC) + 64].split(b":", 2)
    if len(fields) < 3:
        raise CdiffError("bad header: expected ClamAV-Diff:VERSION:LENGTH:")
    numbers = []
    for label, text in (("version", fields[0]), ("length", fields[1])):
        if not text.isdigit() or len(text) > 19:
            raise CdiffError(f"bad header: {label} {text[:24]!r} is not a number")
        numbers.append(int(text))
    start = len(MAGIC) + len(fields[0]) + len(fields[1]) + 2
    return numbers[0], numbers[1], data[start:]


def _decompress(body: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        script = inflater.decompress(body, MAX_SCRIPT_BYTES + 1)
    except zlib.error as err:
        raise CdiffError(f"corrupt gzip script: {err}") from None
    if len(script) > MAX_SCRIPT_BYTES or inflater.unconsumed_tail:
        raise CdiffError(f"script larger than {MAX_SCRIPT_BYTES >> 20} MiB")
    if not inflater.eof:
        raise CdiffError("truncated gzip script")
    return script


# -- the script --------------------------------------------------------------------------------

def apply_script(script: bytes, directory) -> None:
    """Run ``script`` on the member files in ``directory``; raise CdiffError("line N: …").

    On an error the directory is left half-edited: callers work on a scratch copy."""
    _Script(Path(directory)).run(script)


class _Failed(Exception):
    pass


class _Script:
    def __init__(self, directory: Path):
        self.dir = directory
        self.open: str | None = None
        self.edits: dict[int, tuple[bytes, bytes | None]] = {}  # line → (start, new or None)
        self.additions: list[bytes] = []

    def run(self, script: bytes) -> None:
        lines = script.split(b"\n")
        ends_with_newline = lines[-1] == b""
        if ends_with_newline:
            lines.pop()
        number = 0
        for number, line in enumerate(lines, 1):
            if line.startswith(b"#"):
                continue
            newline = number < len(lines) or ends_with_newline
            try:
                self.command(line, newline)
            except _Failed as err:
                raise CdiffError(f"line {number}: {err}") from None
            except OSError as err:
                raise CdiffError(f"line {number}: {err.strerror or err}") from None
        if self.open is not None:
            raise CdiffError(f"the script ends with {self.open} still open")

    def command(self, line: bytes, newline: bool) -> None:
        word, _, rest = line.partition(b" ")
        handler = {b"OPEN": self.cmd_open, b"ADD": self.cmd_add, b"DEL": self.cmd_del,
                   b"XCHG": self.cmd_xchg, b"CLOSE": self.cmd_close, b"MOVE": self.cmd_move,
                   b"UNLINK": self.cmd_unlink}.get(word)
        if handler is None:
            shown = word[:40].decode("latin-1") or "an empty line"
            raise _Failed(f"unknown command {shown!r}")
        if word == b"ADD":  # the line is added with its own newline, if it has one
            handler(rest + (b"\n" if newline else b""))
        else:
            handler(rest)

    # -- commands ---------------------------------------------------------------------------
    def cmd_open(self, rest: bytes) -> None:
        name = _member(rest, "OPEN")
        if self.open is not None:
            raise _Failed(f"OPEN {name} while {self.open} is still open")
        self.open = name

    def cmd_add(self, text: bytes) -> None:
        self._need_open("ADD")
        if not text.strip(b"\n"):
            raise _Failed("ADD without a line to add")
        self.additions.append(text)

    def cmd_del(self, rest: bytes) -> None:
        self._need_open("DEL")
        fields = rest.split(b" ")
        if len(fields) < 2:
            raise _Failed("DEL needs a line number and the start of the line")
        self.edits[_line_number(fields[0], "DEL")] = (fields[1], None)

    def cmd_xchg(self, rest: bytes) -> None:
        self._need_open("XCHG")
        fields = rest.split(b" ", 2)
        if len(fields) < 3:
            raise _Failed("XCHG needs a line number, the start of the line and the new line")
        self.edits[_line_number(fields[0], "XCHG")] = (fields[1], fields[2])

    def cmd_close(self, rest: bytes) -> None:
        self._need_open("CLOSE")
        name, self.open = self.open, None
        path = self.dir / name
        if self.edits:
            self._rewrite(path, name)
        if self.additions:
            with open(path, "ab") as fh:
                fh.writelines(self.additions)
        self.edits, self.additions = {}, []

    def cmd_move(self, rest: bytes) -> None:
        if self.open is not None:
            raise _Failed(f"MOVE while {self.open} is open")
        fields = rest.split(b" ")
        if len(fields) < 6:
            raise _Failed("MOVE needs SOURCE DESTINATION FIRST START LAST START")
        src, dst = _member(fields[0], "MOVE"), _member(fields[1], "MOVE")
        first, last = _line_number(fields[2], "MOVE"), _line_number(fields[4], "MOVE")
        if src == dst or last < first:
            raise _Failed("MOVE needs two different members and a range of lines in order")
        source, target = self.dir / src, self.dir / dst
        if not target.is_file():
            raise _Failed(f"MOVE into {dst}, which does not exist")
        moved = 0
        with open(source, "rb") as fh, open(target, "ab") as out, \
                _Replacement(source) as keep:
            for number, line in enumerate(fh, 1):
                if first <= number <= last:
                    expected = fields[3] if number == first else fields[5]
                    if number in (first, last) and not line.startswith(expected):
                        raise _Failed(f"MOVE: line {number} of {src} does not start with "
                                      f"{_show(expected)}")
                    out.write(line)
                    moved += 1
                else:
                    keep.write(line)
            if moved != last - first + 1:
                raise _Failed(f"MOVE: {src} has fewer than {last} lines")
            keep.commit()

    def cmd_unlink(self, rest: bytes) -> None:
        name = _member(rest, "UNLINK")
        if self.open is not None:
            raise _Failed(f"UNLINK {name} while {self.open} is open")
        try:
            (self.dir / name).unlink()
        except FileNotFoundError:
            raise _Failed(f"UNLINK {name}: no such member") from None

    # -- helpers ----------------------------------------------------------------------------
    def _need_open(self, command: str) -> None:
        if self.open is None:
            raise _Failed(f"{command} with no member open")

    def _rewrite(self, path: Path, name: str) -> None:
        pending = sorted(self.edits.items())
        index = 0
        if not path.is_file():
            raise _Failed(f"CLOSE: {name} does not exist, so its lines cannot change")
        with open(path, "rb") as source, _Replacement(path) as out:
            for number, line in enumerate(source, 1):
                if not line.endswith(b"\n"):
                    raise _Failed(f"CLOSE: the last line of {name} has no newline")
                if index < len(pending) and pending[index][0] == number:
                    start, new = pending[index][1]
                    if not line.startswith(start):
                        what = "XCHG" if new is not None else "DEL"
                        raise _Failed(f"{what}: line {number} of {name} does not start with "
                                      f"{_show(start)}")
                    index += 1
                    if new is not None:
                        out.write(new + b"\n")
                else:
                    out.write(line)
            if index < len(pending):
                raise _Failed(f"CLOSE: {name} has no line {pending[index][0]}")
            out.commit()


class _Replacement:
    """A temporary file beside ``path`` that replaces it on ``commit()``, else is removed."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".cdiff-")
        self.fh = os.fdopen(fd, "wb")
        self.committed = False
        return self

    def write(self, data: bytes) -> None:
        self.fh.write(data)

    def commit(self) -> None:
        self.fh.close()
        os.replace(self.tmp, self.path)
        self.committed = True

    def __exit__(self, *exc) -> None:
        if not self.committed:
            self.fh.close()
            os.unlink(self.tmp)


def _member(raw: bytes, command: str) -> str:
    text = raw.decode("latin-1")
    if not _NAME.fullmatch(text) or text in (".", ".."):
        raise _Failed(f"{command}: {_show(raw)} is not a plain member name")
    return text


def _line_number(raw: bytes, command: str) -> int:
    if not raw.isdigit() or len(raw) > 12 or int(raw) == 0:
        raise _Failed(f"{command}: {_show(raw)} is not a line number")
    return int(raw)


def _show(raw: bytes) -> str:
    return repr(raw[:60].decode("latin-1"))


__all__ = ["Cdiff", "CdiffError", "apply_script", "read_cdiff"]
