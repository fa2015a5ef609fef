"""A container unpacked into a directory, patched by .cdiff scripts, and packed back as a .cld.

The ``.cld`` is laid out as freshclam's buildcld lays it out, so ClamAV reads it too: the first
line of ``<name>.info`` padded with spaces to the 512-byte header, then an uncompressed tar of
``COPYING``, ``<name>.info``, ``<name>.cfg`` (if any) and every other member. Its authenticity
is the ``.info`` file's: ClamAV signed its ``DSIG:`` line, which pins the SHA-256 of every
member, so a patched tree is either exactly what ClamAV published or refused.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

from ..scanner.signatures import cvd

HEADER_SIZE = cvd.HEADER_SIZE


class TreeError(Exception):
    """A patched tree that is not what ClamAV's signed .info describes; one line."""


def unpack(container: cvd.Container, directory: Path) -> None:
    """Write every member of a verified container into ``directory`` (created)."""
    directory.mkdir(parents=True)
    for name, data in container.members.items():
        with open(directory / name, "wb") as fh:
            fh.write(data)


def check(directory: Path, name: str, expected_version: int) -> cvd.Header:
    """Check a patched tree against its signed ``<name>.info``: the version it must have reached,
    the DSIG, and the size and SHA-256 of every member it lists. Returns the .info header."""
    info_path = directory / f"{name}.info"
    try:
        info = info_path.read_bytes()
    except OSError as err:
        raise TreeError(f"{info_path.name}: cannot read: {err.strerror}") from None
    try:
        header, entries = cvd.parse_info(info, signed=True)
    except ValueError as err:
        raise TreeError(f"{info_path.name}: {err}") from None
    if header.version != expected_version:
        raise TreeError(f"{info_path.name}: version {header.version} where "
                        f"{expected_version} was expected")
    for member, (size, sha256) in entries.items():
        path = directory / member
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise TreeError(f"{info_path.name} lists {member}, which the update did not "
                            f"produce") from None
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            raise TreeError(f"{member} differs from what {info_path.name} describes")
    for member in os.listdir(directory):
        if member.lower().endswith(cvd.DATABASE_SUFFIXES) and member not in entries:
            raise TreeError(f"{member} is not listed in {info_path.name}")
    return header


def write_cld(directory: Path, name: str, destination: Path) -> None:
    """Pack a checked tree into ``destination`` (a ``.cld``), fsynced."""
    info_path = directory / f"{name}.info"
    first = info_path.read_bytes().split(b"\n", 1)[0].rstrip(b"\r")
    if len(first) > HEADER_SIZE:
        raise TreeError(f"{info_path.name}: header line longer than {HEADER_SIZE} bytes")
    if not (directory / "COPYING").is_file():
        raise TreeError("no COPYING member (ClamAV cannot build a .cld without it)")
    leading = ["COPYING", info_path.name, f"{name}.cfg"]
    members = [m for m in leading if (directory / m).is_file()]
    members += sorted(m for m in os.listdir(directory)
                      if m not in leading and not m.startswith(".")
                      and (directory / m).is_file())
    with open(destination, "wb") as fh:
        fh.write(first.ljust(HEADER_SIZE, b" "))
        with tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for member in members:
                path = directory / member
                info = tarfile.TarInfo(member)
                info.size = path.stat().st_size
                info.mode = 0o644
                with open(path, "rb") as data:
                    tar.addfile(info, data)
        fh.flush()
        os.fsync(fh.fileno())


__all__ = ["TreeError", "check", "unpack", "write_cld"]
