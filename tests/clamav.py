"""The oracle in one place: run the real clamscan on files and read what it found."""

from __future__ import annotations

import subprocess
from pathlib import Path


def clamscan_found(db_dir: Path, paths, unofficial: bool = False) -> dict[str, set[str]]:
    """{file name: names clamscan --allmatch found}; ``.UNOFFICIAL`` dropped unless asked for."""
    proc = subprocess.run(["clamscan", "--no-summary", "--allmatch", "-d", str(db_dir),
                           *sorted(map(str, paths))], capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    found: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines():
        if line.endswith(" FOUND"):
            path, _, name = line.rpartition(": ")
            name = name.removesuffix(" FOUND")
            if not unofficial:
                name = name.removesuffix(".UNOFFICIAL")
            found.setdefault(Path(path).name, set()).add(name)
    return found
