"""pyclamd (PyPI), the Python client many mail filters use, against the daemon."""

from __future__ import annotations

import pytest

from tests.conftest import EICAR
from tests.daemon_clients.conftest import EICAR_NAME

pyclamd = pytest.importorskip("pyclamd")

pytestmark = pytest.mark.integration


@pytest.fixture(params=["unix", "tcp"])
def client(request, daemon):
    if request.param == "unix":
        return pyclamd.ClamdUnixSocket(str(daemon.socket), timeout=30)
    return pyclamd.ClamdNetworkSocket("127.0.0.1", daemon.tcp_port, timeout=30)


def found(result: dict | None, path: str) -> str:
    assert result is not None and path in result, result
    # allmatchscan lists every match of a file: [(status, name), ...]
    matches = result[path] if isinstance(result[path], list) else [result[path]]
    assert matches and all(status == "FOUND" for status, _name in matches), result
    return matches[0][1]


def test_ping_and_version(client):
    assert client.ping() is True
    assert client.version().strip()


def test_scan_stream(client):
    assert found(client.scan_stream(EICAR), "stream").startswith(EICAR_NAME)
    assert client.scan_stream(b"a clean message body\n" * 1000) is None


def test_scan_stream_in_small_chunks(client):
    # pyclamd sends its chunk size as given: here ten INSTREAM chunks of 7 bytes or fewer.
    assert found(client.scan_stream(EICAR, chunk_size=7), "stream").startswith(EICAR_NAME)


@pytest.mark.parametrize("method", ["scan_file", "multiscan_file", "contscan_file",
                                    "allmatchscan"])
def test_scan_paths(client, scan_tree, method):
    scan = getattr(client, method)
    infected = str(scan_tree / "sub" / "eicar.com")
    assert found(scan(infected), infected).startswith(EICAR_NAME)
    assert scan(str(scan_tree / "clean.txt")) is None
    assert found(scan(str(scan_tree)), infected).startswith(EICAR_NAME)


def test_missing_file_is_an_error(client, scan_tree):
    missing = str(scan_tree / "nothing-here")
    status, _reason = client.scan_file(missing)[missing]
    assert status == "ERROR"


def test_eicar_helper_is_found(client):
    # pyclamd's own EICAR string, as its users test their setup with it.
    assert found(client.scan_stream(client.EICAR()), "stream").startswith(EICAR_NAME)
