"""Which ClamAV database file is which kind of signature: one table, read by the database loader.

A *kind* is one family of signatures with one parser, one compiled form and one matcher (hashes,
bodies, logical …). Several file extensions may feed one kind (``.hdb`` and ``.hsb`` are both
file hashes). Files ClamAV knows but lmsav does not execute (bytecode, Authenticode trust lists,
icons) are listed here too, so they are counted and reported, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One signature family and the files that feed it; its code is kinds.ADAPTERS[name]."""

    name: str  # section prefix and key in `db info`
    extensions: tuple[str, ...]


# Order matters only for reporting. Extensions ending in "u" (.hdu, .ndu …) are ClamAV's
# "potentially unwanted" variants: loaded only when PUA detection is on, as in ClamAV.
KINDS: tuple[Kind, ...] = (
    Kind("hash", (".hdb", ".hsb", ".hdu", ".hsu")),
    Kind("section", (".mdb", ".msb", ".mdu", ".msu", ".imp")),
    Kind("body", (".ndb", ".ndu")),
    Kind("logical", (".ldb", ".ldu")),
    Kind("container", (".cdb",)),
    Kind("filetype", (".ftm",)),
    Kind("phishing", (".pdb", ".gdb", ".wdb")),
    Kind("yara", (".yar", ".yara")),
    Kind("allow", (".fp", ".sfp")),
    Kind("ignore", (".ign", ".ign2")),
)

PUA_EXTENSIONS = frozenset({".hdu", ".hsu", ".mdu", ".msu", ".ndu", ".ldu"})

# Files ClamAV reads that lmsav counts and lists but does not execute, with the reason.
NOT_EXECUTED: dict[str, str] = {
    ".cbc": "bytecode signatures are not executed",
    ".crb": "Authenticode trust rules are not applied",
    ".cat": "Authenticode catalogue is not applied",
    ".idb": "icon signatures are not matched",
    ".cfg": "engine configuration (dconf) is not applied",
    ".pwdb": "archive password list is not used",
    ".hwp": "not a signature file lmsav reads",
}

# Containers of database files (read by cvd.py; their .info lists and the .sign files beside
# them are checked there, never loaded as signatures).
CONTAINERS = (".cvd", ".cld", ".cud")

BY_EXTENSION: dict[str, Kind] = {ext: k for k in KINDS for ext in k.extensions}
SIGNATURE_EXTENSIONS = tuple(BY_EXTENSION)
KNOWN = SIGNATURE_EXTENSIONS + tuple(NOT_EXECUTED) + CONTAINERS + (".sign",)


def extension(name: str) -> str:
    """The database extension of a file name, lower-case with the dot ("" for none)."""
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""
