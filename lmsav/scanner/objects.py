"""The engine's contract: what goes in (ScanObject) and what comes out (Verdict)."""

from __future__ import annotations

import enum
import mmap
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .filetype import locate
from .signatures.subject import MemberMeta

# Separates a container from a member inside it: ``mail.eml//2:invoice.zip//clam.exe``.
PATH_SEP = "//"

# A run of white space with a line break in it (libarchive ends some messages with "\n").
_LINE_BREAK_RUN = re.compile(r"\s*[\r\n\v\f\x85\u2028\u2029]\s*")


def one_line(text: str) -> str:
    """``text`` on one line: every run of white space holding a line break becomes one space.
    Reasons end up in ``PATH: reason STATUS`` lines, which a reader splits on newlines."""
    if not text or _LINE_BREAK_RUN.search(text) is None:
        return text
    return _LINE_BREAK_RUN.sub(" ", text).strip()


class Status(enum.IntEnum):
    """Outcome of scanning one object; a larger value is worse and wins."""

    CLEAN = 0
    ERROR = 1  # could not be scanned: limit, timeout, unreadable, unsupported
    CORRUPTED = 2
    PROTECTED = 3  # encrypted or password protected
    SUSPICIOUS = 4
    INFECTED = 5

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Threat:
    """A detection: the signature's name and where the signature came from."""

    name: str
    signature_source: str  # e.g. "main.ndb", "eicar.hdb", "rules.yar"

    def to_json(self) -> dict:
        return {"name": self.name, "source": self.signature_source}


@dataclass(slots=True)
class ObjectResult:
    """The result for one object, with its members' results as children."""

    path: str
    type: str
    size: int
    status: Status = Status.CLEAN
    threats: list[Threat] = field(default_factory=list)
    reason: str = ""
    children: list["ObjectResult"] = field(default_factory=list)
    # The index of the member its container's rebuild removes or replaces to get rid of this
    # object (Child.member); None when the container cannot place it.
    member: int | None = None

    def __post_init__(self) -> None:
        self.reason = one_line(self.reason)

    def walk(self) -> Iterator["ObjectResult"]:
        yield self
        for child in self.children:
            yield from child.walk()

    def worst(self) -> Status:
        return max((r.status for r in self.walk()), default=Status.CLEAN)

    def to_json(self) -> dict:
        """This object and its members as JSON (lmsav/data/scan-result.schema.json, "node").

        ``status`` is the worst of the object's own and its members' (the README's rule), so a
        reader can stop at any level; ``own_status`` says what the object itself was judged
        when that differs (a damaged archive holding an infected member)."""
        return self._json()[0]

    def _json(self) -> tuple[dict, Status]:
        # Bottom-up, so the worst status of every subtree is known in one pass.
        worst = self.status
        children = []
        for child in self.children:
            data, child_worst = child._json()
            children.append(data)
            worst = max(worst, child_worst)
        out = {
            "path": self.path,
            "type": self.type,
            "size": self.size,
            "status": worst.label,
        }
        if worst != self.status:
            out["own_status"] = self.status.label
        out["threats"] = [t.to_json() for t in self.threats]
        if self.reason:
            out["reason"] = one_line(self.reason)
        if self.member is not None:
            out["member"] = self.member
        if children:
            out["children"] = children
        return out, worst


@dataclass(slots=True)
class Verdict:
    """The whole result for one input: a tree of ObjectResult, worst status on top."""

    root: ObjectResult

    @property
    def status(self) -> Status:
        return self.root.worst()

    @property
    def threats(self) -> list[tuple[str, Threat]]:
        """Every threat with the in-container path of the object it was found in."""
        return [(r.path, t) for r in self.root.walk() for t in r.threats]

    def walk(self) -> Iterator[ObjectResult]:
        return self.root.walk()

    def findings(self) -> list[ObjectResult]:
        """Objects whose own status is not CLEAN, in tree order."""
        return [r for r in self.root.walk() if r.status != Status.CLEAN]

    def to_json(self) -> dict:
        """One line of ``lmsav scan --json`` (lmsav/data/scan-result.schema.json, "file")."""
        result, status = self.root._json()
        return {
            "path": self.root.path,
            "status": status.label,
            "threats": [{"path": p, **t.to_json()} for p, t in self.threats],
            "result": result,
        }


class ScanObject:
    """Something to scan: bytes in memory or a file read lazily (mmap when large).

    ``name`` is the full in-container path (``a.zip//b.exe``); ``depth`` is 0 for an input given
    by the user and grows by one for each container level.
    """

    __slots__ = ("name", "depth", "parents", "_data", "_path", "_mm", "_fh", "_size", "_type",
                 "_offset", "ancestry", "clamav_ancestry", "member", "container_size")

    MMAP_THRESHOLD = 1 << 20

    def __init__(
        self,
        name: str,
        data: bytes | None = None,
        path: str | os.PathLike | None = None,
        depth: int = 0,
        parents: tuple[str, ...] = (),
        size: int | None = None,
    ):
        if (data is None) == (path is None):
            raise ValueError("ScanObject needs exactly one of data or path")
        self.name = name
        self.depth = depth
        self.parents = parents
        self._data = data
        self._path = os.fspath(path) if path is not None else None
        self._mm = None
        self._fh = None
        self._size = len(data) if data is not None else size
        self._type: str | None = None
        self._offset = 0
        # Sniffed types of the containers this object came out of, outermost first, and what
        # the innermost one records about it (signature kinds that look at containers).
        self.ancestry: tuple[str, ...] = ()
        self.clamav_ancestry: tuple[str, ...] = ()  # the same containers as ClamAV types them
        self.member = None
        self.container_size: int | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike, name: str | None = None) -> "ScanObject":
        return cls(name or os.fspath(path), path=path)

    @property
    def path(self) -> str | None:
        """The file on disk behind this object, if any (handlers may hand it to libraries)."""
        return self._path

    @property
    def type(self) -> str:
        """The engine's type name, sniffed once (filetype.locate): the engine sets it on entry,
        handlers read it and never sniff again."""
        if self._type is None:
            self._sniff()
        return self._type

    @type.setter
    def type(self, value: str) -> None:
        self._type = value

    @property
    def offset(self) -> int:
        """Where content of that type starts: 0, but for an archive behind other bytes."""
        if self._type is None:
            self._sniff()
        return self._offset

    def _sniff(self) -> None:
        self._type, self._offset = locate(self.data, self.size)

    @offset.setter
    def offset(self, value: int) -> None:
        self._offset = value

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = os.stat(self._path).st_size
        return self._size

    @property
    def data(self) -> bytes | mmap.mmap:
        """The content; small files are read whole, large ones mapped."""
        if self._data is None:
            self._data = self._load()
        return self._data

    def _load(self):
        with open(self._path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            self._size = size
            if size < self.MMAP_THRESHOLD:
                return fh.read()
            self._fh = open(self._path, "rb")
        self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mm

    def head(self, n: int = 4096) -> bytes:
        data = self.data
        return bytes(data[:n])

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._data = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass(slots=True)
class Child:
    """A member yielded by a container handler: its name and its content (bytes or a temp file)."""

    name: str
    data: bytes | None = None
    path: Path | None = None
    # A member the handler could see but not extract (encrypted, damaged) carries a status.
    status: Status | None = None
    reason: str = ""
    size: int | None = None
    # How the container describes the member (name, position, sizes …), for .cdb rules.
    meta: MemberMeta | None = None
    # Only metadata to judge (a directory entry): reported only if a .cdb rule names it.
    meta_only: bool = False
    # The index of the member the container's rebuild (containers.rebuilder_for) removes or
    # replaces to get rid of this child; None when the handler cannot place it there. Several
    # children may share one (a mail part and the uuencoded files found in its text).
    member: int | None = None


def join_path(parent: str, child: str) -> str:
    return f"{parent}{PATH_SEP}{child}"
