"""The HTTP mirror client against a real server on 127.0.0.1: what it asks, and what it makes of
every kind of answer a mirror or the network in between can give."""

from __future__ import annotations

import time

import pytest

from lmsav import __version__
from lmsav.update.errors import NotFound, RateLimited, SourceError, TransientError
from lmsav.update.http import HttpMirror

from .conftest import genuine


def client(mirror, **kwargs) -> HttpMirror:
    settings = {"timeout": 2.0, "retries": 3, "retry_delay": 0.01}
    settings.update(kwargs)
    return HttpMirror(mirror.url, **settings)


def test_version_discovery_asks_for_the_512_byte_header_with_a_range_request(mirror):
    mirror.publish_genuine(6)
    head = client(mirror).header("test.cvd")
    assert head == genuine("test-6.cvd")[:512]
    (request,) = mirror.requests
    assert request.path == "test.cvd"
    assert request.range == "bytes=0-511"
    assert request.user_agent == f"lmsav/{__version__}"


def test_a_server_that_ignores_range_costs_only_the_header(mirror):
    mirror.publish_genuine(6)
    mirror.faults["test.cvd"] = "ignore-range"
    assert client(mirror).header("test.cvd") == genuine("test-6.cvd")[:512]


def test_download_writes_the_whole_file(mirror, tmp_path):
    mirror.publish_genuine(6)
    size = client(mirror).download("test.cvd", tmp_path / "test.cvd", b"ClamAV-VDB:")
    assert (tmp_path / "test.cvd").read_bytes() == genuine("test-6.cvd")
    assert size == len(genuine("test-6.cvd"))
    assert mirror.requests[0].range is None


def test_404_is_not_found_and_not_retried(mirror, tmp_path):
    with pytest.raises(NotFound, match=r"/daily.cvd: not found \(404\)$"):
        client(mirror).header("daily.cvd")
    assert mirror.paths() == ["daily.cvd"]


def test_500_is_retried_with_backoff_then_reported(mirror):
    mirror.publish_genuine(6)
    mirror.faults["test.cvd"] = ["500"] * 5
    with pytest.raises(TransientError, match="test.cvd: server error 500$"):
        client(mirror, retries=3).header("test.cvd")
    assert mirror.paths() == ["test.cvd"] * 3


def test_a_passing_server_error_is_ridden_out(mirror):
    mirror.publish_genuine(6)
    mirror.faults["test.cvd"] = ["500"]
    assert client(mirror).header("test.cvd").startswith(b"ClamAV-VDB:")
    assert len(mirror.requests) == 2


def test_a_short_retry_after_is_waited_out(mirror):
    mirror.publish_genuine(6)
    mirror.faults["test.cvd"] = ["429:1"]
    waits = []
    assert client(mirror, sleep=waits.append).header("test.cvd").startswith(b"ClamAV-VDB:")
    assert waits == [1.0]


def test_a_long_retry_after_ends_the_attempt_with_the_wait_asked_for(mirror):
    mirror.publish_genuine(6)
    mirror.faults["test.cvd"] = ["429:7200"]
    with pytest.raises(RateLimited) as caught:
        client(mirror).header("test.cvd")
    assert caught.value.wait == 7200
    assert "too many requests (429), asked to wait 2.0 h" in str(caught.value)
    assert len(mirror.requests) == 1  # nothing more was asked


def test_429_without_retry_after_means_four_hours(mirror):
    mirror.faults["test.cvd"] = ["429"]
    with pytest.raises(RateLimited) as caught:
        client(mirror).header("test.cvd")
    assert caught.value.wait == 4 * 3600


def test_an_html_error_page_with_status_200_is_recognised(mirror, tmp_path):
    mirror.publish_genuine(6)
    mirror.faults["test.cvd"] = "html"
    with pytest.raises(SourceError, match="answered with an HTML page instead of the file"):
        client(mirror).header("test.cvd")
    with pytest.raises(SourceError, match="answered with an HTML page"):
        client(mirror).download("test.cvd", tmp_path / "x", b"ClamAV-VDB:")
    assert len(mirror.requests) == 2  # not retried: the page will be the same


def test_a_body_cut_short_is_retried_then_reported_as_truncated(mirror, tmp_path):
    mirror.publish_genuine(6)
    mirror.faults["test.cvd"] = ["truncate"] * 3
    with pytest.raises(TransientError, match="test.cvd: (connection closed early|truncated)"):
        client(mirror).download("test.cvd", tmp_path / "x", b"ClamAV-VDB:")
    assert len(mirror.requests) == 3


def test_a_server_that_does_not_answer_times_out(mirror):
    mirror.publish_genuine(6)
    mirror.faults["test.cvd"] = ["pause:3"]
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"test.cvd: no answer within 0.5 s"):
        client(mirror, timeout=0.5, retries=1).header("test.cvd")
    assert time.monotonic() - started < 2.5


def test_a_trickle_is_abandoned_as_too_slow(mirror, tmp_path, monkeypatch):
    from lmsav.update import http

    monkeypatch.setattr(http, "LOW_SPEED_BYTES", 64)
    mirror.publish_genuine(6)
    mirror.faults["test.cvd"] = "trickle"
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"too slow \(under 1 KiB in 1 s\)"):
        client(mirror, timeout=1.0, retries=1).download("test.cvd", tmp_path / "x",
                                                        b"ClamAV-VDB:")
    assert time.monotonic() - started < 4


def test_a_refused_connection_is_reported(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    source = HttpMirror(f"http://127.0.0.1:{port}", timeout=1, retries=2, retry_delay=0.01)
    with pytest.raises(TransientError, match=rf"127.0.0.1:{port}/test.cvd: cannot connect"):
        source.header("test.cvd")


def test_a_name_that_does_not_resolve_is_reported(monkeypatch):
    import socket

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    source = HttpMirror("http://mirror.example", timeout=1, retries=2, retry_delay=0.01)
    with pytest.raises(TransientError, match="mirror.example/test.cvd: cannot connect: .*not "
                                             "known"):
        source.header("test.cvd")


def test_a_file_that_is_not_a_database_is_refused(mirror, tmp_path):
    mirror.files["test.cvd"] = b"PK\x03\x04" + b"\0" * 600
    with pytest.raises(SourceError, match="does not start with 'ClamAV-VDB:'"):
        client(mirror).header("test.cvd")
