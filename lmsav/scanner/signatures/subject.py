"""What a signature matcher sees of one object: its bytes, types and where it sits.

The engine builds one ``Subject`` per scanned object and hands it to every matcher of the
database (hashes, bodies, logical, container metadata, YARA, phishing). Expensive views —
the parsed executable, normalised HTML or text — are computed on first use and only for the
objects that need them, so a plain file costs nothing beyond its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class MemberMeta:
    """What a container records about one member (for .cdb rules); unknown fields stay None."""

    name: str = ""
    index: int = 0  # position in the container, from 1
    packed_size: int | None = None
    size: int | None = None
    crc32: int | None = None
    encrypted: bool = False
    method: int | None = None  # compression method as the format numbers it
    # Mail parts only: what ClamAV does with the part besides describing it (MAIL_* below).
    mail_use: str = ""


# MemberMeta.mail_use: ClamAV also checks the part's links for phishing; checks them but
# describes the part to no .cdb rule; never reads the part (an attached message it skips).
MAIL_LINKS, MAIL_LINKS_ONLY, MAIL_UNREAD = "links", "links-only", "unread"


@dataclass(slots=True)
class Subject:
    data: object  # bytes or mmap
    size: int
    ftype: str  # lmsav's sniffed type ("pe", "zip", "html" …)
    clamav_type: str = "CL_TYPE_ANY"  # ClamAV's name for the same type (clamav_types.clamav_type)
    # ClamAV types of the containers this object came out of, outermost first; () at top level.
    ancestry: tuple[str, ...] = ()
    in_mail: bool = False  # some ancestor is a mail message (phishing checks apply)
    name: str = ""
    member: MemberMeta | None = None  # how the parent container describes this object
    container_size: int | None = None  # size of the parent container in bytes
    origin: str | None = None  # the file on disk the scanned input came from (its owner)
    _cache: dict = field(default_factory=dict)

    @property
    def container(self) -> str:
        """ClamAV type of the immediate parent container, CL_TYPE_ANY at top level."""
        return self.ancestry[-1] if self.ancestry else "CL_TYPE_ANY"

    @property
    def exe(self):
        """The parsed executable (exe_headers.ExeInfo) or None; parsed once, on first use."""
        if "exe" not in self._cache:
            from .exe_headers import parse

            self._cache["exe"] = parse(self.data, self.ftype)
        return self._cache["exe"]

    def view(self, key: str, make):
        """A derived buffer (normalised HTML, text …) computed once per object."""
        if key not in self._cache:
            self._cache[key] = make(self.data)
        return self._cache[key]
