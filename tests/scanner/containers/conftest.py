"""Fixtures the container tests share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A real engine over the bundled database, compiled once per test module."""
    from lmsav import paths
    from lmsav.scanner.engine import Engine
    from lmsav.scanner.signatures.database import Database

    cache = tmp_path_factory.mktemp("db") / "bases.lmsavc"
    return Engine(Database.load(paths.bundled_database_dir(), cache_path=cache))
