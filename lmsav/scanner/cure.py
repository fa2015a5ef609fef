"""Cure: an object with every member that holds a threat removed, rebuilt by its handlers.

The one definition of "curable" for sweeps and mail: a container is cured by removing each
member whose subtree is bad — or, for a member that is itself a container and not bad itself,
by curing it in turn and putting it back (a zip in a zip, a zip attached to a message, a tar in
a gzip) — through each handler's rebuilder (``containers.rebuilder_for``) and the member index
the scan recorded (``ObjectResult.member``). Children of one container that share a member
index go together (a mail part and the uuencoded files found in its text). The result is
scanned again and must no longer be bad. A file that is the threat itself is never curable.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable

from . import filetype
from .containers import (
    Corrupted,
    Encrypted,
    RebuildError,
    Unsupported,
    handler_for,
    rebuilder_for,
)
from .limits import Context, LimitExceeded, running
from .objects import PATH_SEP, ObjectResult, ScanObject, Status

__all__ = ["Uncurable", "cure"]


class Uncurable(Exception):
    """Cure cannot get rid of what was found; ``str(err)`` says why, in one line."""

    def __init__(self, why: str):
        # Member names may hold line breaks; a reason goes into one-line reports and logs.
        super().__init__(why.replace("\r", "\\r").replace("\n", "\\n"))


def cure(engine, data: bytes, result: ObjectResult,
         bad: Callable[[Status], bool] = lambda s: s >= Status.SUSPICIOUS) -> bytes:
    """``data`` — the object ``result`` describes — without every member whose subtree is
    ``bad``, checked by scanning the outcome with ``engine``; raises Uncurable."""
    data = bytes(data)
    cured = _Cure(engine, bad).object(data, result)
    after = engine.scan_bytes(cured, result.path)
    still = [r for r in after.walk() if bad(r.status)]
    if still:
        names = sorted({t.name for r in still for t in r.threats})
        raise Uncurable(f"still {after.status.label} after the cure"
                        + (f": {', '.join(names)}" if names else ""))
    return cured


class _Cure:
    def __init__(self, engine, bad: Callable[[Status], bool]):
        self.engine = engine
        self.bad = bad

    def object(self, data: bytes, node: ObjectResult) -> bytes:
        """``data`` (described by ``node``) without its bad members."""
        if self.bad(node.status):
            raise Uncurable(_whole(node))
        bad_children = [c for c in node.children if self._holds_bad(c)]
        if not bad_children:
            return data
        rebuild = rebuilder_for(node.type)
        if rebuild is None:
            raise Uncurable(f"{node.type or 'such'} files cannot be rebuilt")
        for child in bad_children:
            if child.member is None:
                raise Uncurable(f"cannot tell which member of the {node.type} holds "
                                f"{_name_in(node, child)}")
        # The members cured in place are read out of the container in one pass.
        contents = self._contents(data, node, self._in_place(node, bad_children))
        edits: dict[int, bytes | None] = {}
        for child in bad_children:
            if child.member not in edits:
                edits[child.member] = self._member(contents.get(child.member), child)
        try:
            return rebuild(data, edits)
        except RebuildError as err:
            if all(new is None for new in edits.values()):
                raise Uncurable(str(err)) from None
            refused = err
        # A member cured in place that the container cannot take back goes whole instead.
        try:
            return rebuild(data, dict.fromkeys(edits))
        except RebuildError:
            raise Uncurable(str(refused)) from None

    def _in_place(self, node: ObjectResult, bad_children: list[ObjectResult]
                  ) -> dict[int, ObjectResult]:
        """The members cured in place rather than removed (member -> its child): those a
        single child alone holds the content of, a container that is not bad itself."""
        holders = Counter(c.member for c in node.children)
        return {c.member: c for c in bad_children
                if holders[c.member] == 1 and not self.bad(c.status)
                and rebuilder_for(c.type) is not None}

    def _member(self, content: bytes | None, child: ObjectResult) -> bytes | None:
        """The new content of ``child``'s member: ``content`` (its bytes, None when it goes
        whole) cured in place; None (the member goes) when that cannot be done."""
        if content is None:
            return None
        try:
            return self.object(content, child)
        except Uncurable:
            return None  # it cannot be cured in place: the whole member goes

    def _contents(self, data: bytes, node: ObjectResult,
                  wanted: dict[int, ObjectResult]) -> dict[int, bytes]:
        """The bytes of each member in ``wanted`` (member -> its child), read again by the
        container's handler in a single pass; a member whose bytes cannot be told apart from
        another member's is left out."""
        if not wanted:
            return {}
        handler = handler_for(node.type)
        ftype, offset = filetype.locate(data, len(data))
        if handler is None or ftype != node.type:
            return {}
        ctx = Context(self.engine.limits, self.engine.tmp_root)
        obj = ScanObject(node.path, data=data)
        obj.type, obj.offset = ftype, offset
        found: dict[int, list[tuple[str, bytes | None]]] = {}
        # Damage or a limit met on the way: what was read stands; a member not found goes whole.
        damage = (Corrupted, Encrypted, Unsupported, LimitExceeded)
        try:
            with running(ctx), contextlib.suppress(*damage):
                for member in handler.explode(obj, ctx):
                    if member.member in wanted and not member.meta_only:
                        found.setdefault(member.member, []).append((member.name, _read(member)))
        finally:
            ctx.cleanup()
        contents = {}
        for index, copies in found.items():
            if len(copies) == 1:
                name, content = copies[0]
                if name == _name_in(node, wanted[index]) and content is not None:
                    contents[index] = content
        return contents

    def _holds_bad(self, node: ObjectResult) -> bool:
        return any(self.bad(r.status) for r in node.walk())


def _read(member) -> bytes | None:
    if member.status is not None:
        return None
    if member.path is not None:
        with open(member.path, "rb") as fh:
            return fh.read()
    return member.data or b""


def _name_in(node: ObjectResult, child: ObjectResult) -> str:
    return child.path.removeprefix(node.path + PATH_SEP)


def _whole(node: ObjectResult) -> str:
    if node.threats:
        return "the whole file is the threat"
    reason = f" ({node.reason})" if node.reason else ""
    if node.status == Status.PROTECTED:
        return f"the file is encrypted{reason}"
    return f"the file itself is {node.status.label}{reason}"
