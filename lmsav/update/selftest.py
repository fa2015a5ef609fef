"""Compile a staged database in a child process and prove it works before it goes live.

The proof: the database compiles (every container verified again on the way), a clean sample
stays clean (a signature that matches everything would stop all mail), its own self-test samples
(``selftest.toml``, as ``lmsav db test`` runs them) give their expected verdicts, and a database
whose predecessor detected the EICAR test file still detects it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..scanner.engine import Engine
from ..scanner.signatures.database import Database, DatabaseError
from ..scanner.signatures.errors import SignatureError
from .errors import SourceError

# Built from pieces so that this file itself never matches a signature.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-" + b"TEST-FILE!$H+H*"
CLEAN = b"lmsav update self-test: an ordinary line of text that no signature names.\n"


@dataclass(frozen=True)
class Proof:
    signatures: int
    build_seconds: float
    eicar: str  # the name EICAR is reported as, "" if the database does not detect it
    samples: int


def prove(directory: Path, previous_eicar: str = "", rebuild: bool = True) -> Proof:
    """Compile ``directory`` in a child (``rebuild``: even if a compiled file is there) and
    test it; raise SourceError saying what failed."""
    try:
        db = Database.load(directory, rebuild=rebuild, build_in_child=True)
    except (DatabaseError, SignatureError) as err:
        raise SourceError(f"the new database does not compile: {err}") from None
    if db.refused:  # a container changed since it was compiled, and is refused now
        raise SourceError(f"the database is refused: {db.refused}")
    engine = Engine(db)
    found = _names(engine, CLEAN, "clean")
    if found:
        raise SourceError(f"the new database reports a clean sample as {found[0]}")
    for sample in db.samples:
        names = _names(engine, sample.data, sample.name)
        ok = sample.expect in names if sample.expect else not names
        if not ok:
            raise SourceError(f"self-test sample {sample.name}: expected "
                              f"{sample.expect or 'clean'}, got {', '.join(names) or 'clean'}")
    eicar = _names(engine, EICAR, "eicar")
    if previous_eicar and not eicar:
        raise SourceError(f"the new database no longer detects the EICAR test file "
                          f"(the active one reports {previous_eicar})")
    return Proof(db.total, db.build_seconds, eicar[0] if eicar else "", len(db.samples))


def _names(engine: Engine, data: bytes, name: str) -> list[str]:
    verdict = engine.scan_bytes(data, f"selftest:{name}")
    return [threat.name for _path, threat in verdict.threats]


__all__ = ["Proof", "prove"]
