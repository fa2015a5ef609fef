"""`lmsav keys list --json`: JSON Lines, one key per line, nothing for an empty store."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lmsav.update import keys
from lmsav.update.keycommands import keys as keys_group

from ..jsonlines import records


@pytest.fixture
def stores(tmp_path, monkeypatch):
    system, personal = tmp_path / "etc-keys", tmp_path / "home" / "lmsav"
    monkeypatch.setattr(keys, "SYSTEM_KEY_DIR", system)
    monkeypatch.setattr(keys.paths, "config_dir", lambda *args, **kwargs: personal)
    return system, personal / "keys"


def invoke(*args):
    return CliRunner().invoke(keys_group, list(args), catch_exceptions=False)


def test_an_empty_store_lists_nothing_as_json_and_says_so_as_text(stores):
    as_json = invoke("list", "--json")
    assert as_json.exit_code == 0 and as_json.stdout == ""
    assert invoke("list").stdout.startswith("no trusted keys (")


def test_each_key_is_one_json_line(stores, tmp_path):
    system, personal = stores
    for directory, name in ((system, "site"), (personal, "mine"), (personal, "another")):
        directory.mkdir(parents=True, exist_ok=True)
        pem = keys.public_pem(Ed25519PrivateKey.generate().public_key())
        (directory / f"{name}.pub").write_bytes(pem)
    listed = records(invoke("list", "--json").stdout)
    assert [(k["name"], k["scope"]) for k in listed] == [
        ("site", "system"), ("another", "personal"), ("mine", "personal")]
    assert all(set(k) == {"name", "id", "scope", "path"} for k in listed)
