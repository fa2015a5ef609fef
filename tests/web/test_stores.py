"""The Quarantine & backup page: the kept originals of the three stores in one filtered, paged
list, an entry's findings and headers, and download, restore, release and delete — admins only,
with the form's CSRF token, audited, with their effect on disk."""

from __future__ import annotations

import html
import json
import os
import re
import socket
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from lmsav import paths
from lmsav.mail.backup import BackupStore
from lmsav.quarantine.store import FileStore, file_facts

from .conftest import BASE_URL, flashes, form_post, page_text

MESSAGE = (b"From: =?utf-8?q?Ren=C3=A9?= <rene@example.org>\r\nTo: bob@example.net\r\n"
           b"Subject: =?utf-8?b?RmFjdHVyZSDDqXTDqQ==?=\r\nX-Evil: <script>alert(1)</script>\r\n"
           b"\r\nbody with Subject: not a header\r\n")


class Stores:
    def __init__(self, state: Path, files: Path):
        self.quarantine = FileStore(paths.quarantine_dir(state), "quarantine")
        self.backup_files = FileStore(paths.backup_files_dir(state), "backup")
        self.mail = BackupStore(paths.backup_dir(state))
        self.files = files

    def quarantined(self, name="invoice.exe", data=b"MZ bad bytes", threat="Win.Trojan.X",
                    store=None) -> tuple[Path, str]:
        """A file taken away as `lmsav scan --action quarantine` does: kept, then removed."""
        path = self.files / name
        path.write_bytes(data)
        os.chmod(path, 0o640)
        fd = os.open(path, os.O_RDONLY)
        try:
            entry_id = (store or self.quarantine).put(fd, {
                **file_facts(str(path), os.lstat(path)), "action": "quarantine",
                "status": "infected", "threats": [threat],
                "findings": [{"path": f"{path}", "status": "infected", "threats": [threat],
                              "reason": ""}],
                "verdict": {"path": str(path), "status": "infected",
                            "threats": [{"path": str(path), "name": threat}],
                            "result": {"path": str(path), "type": "zip", "size": len(data),
                                       "status": "infected", "own_status": "clean",
                                       "threats": [], "children": [
                                           {"path": f"{path}//a.exe", "type": "pe",
                                            "size": 3, "status": "infected",
                                            "threats": [{"name": threat}]}]}}})
        finally:
            os.close(fd)
        path.unlink()
        return path, entry_id

    def kept_message(self, recipients=("bob@example.net", "carol@example.com")) -> str:
        return self.mail.save(MESSAGE, {
            "sender": "rene@example.org", "recipients": list(recipients),
            "subject": "Facture été", "status": "infected", "threats": ["Eicar-Signature"],
            "groups": [{"group": "staff", "recipients": list(recipients),
                        "status": "infected", "action": "cure"}], "actions": ["cure"],
            "verdict": {"path": "message", "status": "infected", "result": {
                "path": "message", "type": "mail", "size": len(MESSAGE), "status": "infected",
                "threats": [], "children": [{"path": "message//2:e.com", "type": "text",
                                             "size": 68, "status": "infected",
                                             "threats": [{"name": "Eicar-Signature"}]}]}}})


@pytest.fixture
def stores(web_env, tmp_path) -> Stores:
    files = tmp_path / "files"
    files.mkdir()
    return Stores(web_env.state_dir, files)


def page(client, url: str = "/stores/") -> str:
    return page_text(client, url)



def listed(text: str) -> list[str]:
    return re.findall(r'<tr id="entry-([a-z]+-[0-9TZ]+-[0-9a-f]+)"', text)


def post(client, url: str, data: dict | None = None):
    return form_post(client, url, data, token_from="/stores/")


def audit_lines(web_env) -> list[dict]:
    path = web_env.state_dir / "web" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_anonymous_goes_to_the_login(anon):
    response = anon.get("/stores/", base_url=BASE_URL)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_the_list_shows_the_three_stores_newest_first(viewer, stores):
    _p, q = stores.quarantined()
    _p, b = stores.quarantined("doc.pdf", store=stores.backup_files)
    m = stores.kept_message()
    text = page(viewer)
    assert listed(text) == [f"mail-{m}", f"file-{b}", f"quarantine-{q}"]
    assert "Win.Trojan.X" in text and "Facture été" in text
    assert "&lt;rene@example.org&gt;" in text
    assert str(stores.files / "doc.pdf") in text and "(staff)" in text
    assert 'method="post"' not in text.split("<main>", 1)[1]  # no forms for anyone on the list
    assert listed(page(viewer, "/stores/?kind=mail")) == [f"mail-{m}"]
    assert listed(page(viewer, "/stores/?kind=quarantine&text=INVOICE")) == [f"quarantine-{q}"]
    assert listed(page(viewer, "/stores/?threat=eicar")) == [f"mail-{m}"]
    assert listed(page(viewer, "/stores/?status=damaged")) == []
    assert "Nothing matches these filters." in page(viewer, "/stores/?text=nothing-like-it")


def test_bad_filters_are_flashed_not_failed(viewer, stores):
    stores.kept_message()
    text = page(viewer, "/stores/?kind=../etc&status=%3Cb%3E&since=yesterday")
    errors = flashes(text, "error")
    assert any("unknown kind" in e for e in errors) and any("unknown status" in e for e in errors)
    assert any("invalid date 'yesterday'" in e for e in errors)
    assert len(listed(text)) == 1
    response = viewer.get("/stores/?before=../../x", base_url=BASE_URL)
    assert response.status_code == 302
    assert "invalid page cursor" in flashes(page(viewer), "error")[0]
    today = __import__("time").strftime("%Y-%m-%d")
    assert len(listed(page(viewer, f"/stores/?since={today}&until={today}"))) == 1
    assert listed(page(viewer, "/stores/?until=2000-01-01")) == []


def test_pages_of_fifty_older_and_newer(viewer, stores):
    for n in range(120):
        stores.quarantine.put(b"x", {"original_path": f"/f/{n}", "status": "infected"})
    first = page(viewer)
    assert len(listed(first)) == 50 and "50 of 120" in first
    older = html.unescape(re.search(r'<a href="([^"]+)" id="older"', first).group(1))
    assert 'id="newer"' not in first
    second = page(viewer, older)
    assert len(listed(second)) == 50 and not set(listed(second)) & set(listed(first))
    third = page(viewer, html.unescape(re.search(r'<a href="([^"]+)" id="older"',
                                                 second).group(1)))
    assert len(listed(third)) == 20 and 'id="older"' not in third
    back = page(viewer, html.unescape(re.search(r'<a href="([^"]+)" id="newer"',
                                                third).group(1)))
    assert listed(back) == listed(second)
    top = page(viewer, html.unescape(re.search(r'<a href="([^"]+)" id="newer"',
                                               second).group(1)))
    assert listed(top) == listed(first)


def test_an_entry_shows_findings_and_headers(viewer, stores):
    path, q = stores.quarantined()
    text = page(viewer, f"/stores/quarantine/{q}")
    assert f'<code id="original-path">{path}</code>' in text
    assert f"{path}//a.exe" in text and "Win.Trojan.X" in text
    assert "0640" in text and 'id="download"' not in text  # a viewer gets no actions
    m = stores.kept_message()
    text = page(viewer, f"/stores/mail/{m}")
    headers = dict(re.findall(r"<tr><th>([^<]+)</th><td>(.*?)</td></tr>",
                              text.split('id="headers"', 1)[1]))
    assert headers["From"] == "René &lt;rene@example.org&gt;"
    assert headers["Subject"] == "Facture été"
    assert headers["X-Evil"] == "&lt;script&gt;alert(1)&lt;/script&gt;"  # escaped, never markup
    assert "not a header" not in text  # only the head is read
    assert "message//2:e.com" in text and "staff" in text


def test_a_damaged_entry_is_shown_and_can_be_deleted(admin, stores, web_env):
    _p, q = stores.quarantined()
    (stores.quarantine.root / q / "info.json").write_text("{")
    assert "damaged" in page(admin)
    text = page(admin, f"/stores/quarantine/{q}")
    assert "is damaged" in flashes(text, "error")[0] and 'id="restore"' not in text
    assert post(admin, f"/stores/quarantine/{q}/delete").status_code == 302
    assert not (stores.quarantine.root / q).exists()


def test_malformed_ids_and_kinds_are_404(viewer, admin):
    for url in ("/stores/quarantine/not-an-id", "/stores/spool/20261125T134501Z-0b3f2a9c41de",
                "/stores/quarantine/20261125T134501Z-0b3f2a9c41de",
                "/stores/quarantine/..%2F..%2Fetc%2Fpasswd", "/stores/mail/..",
                "/stores/quarantine/20261125T134501Z-0b3f2a9c41de%2F..%2F..%2Fx"):
        assert viewer.get(url, base_url=BASE_URL).status_code == 404, url
        assert admin.get(url + "/download", base_url=BASE_URL).status_code == 404, url
    for action in ("restore", "release", "delete"):
        assert post(admin, f"/stores/mail/..%2F..%2Fx/{action}").status_code == 404
        assert post(admin, f"/stores/quarantine/x/{action}").status_code == 404
    assert post(admin, "/stores/mail/20261125T134501Z-0b3f2a9c41de/restore").status_code == 404
    assert post(admin, "/stores/file/20261125T134501Z-0b3f2a9c41de/release").status_code == 404


def test_a_link_in_a_store_is_no_entry(admin, stores, tmp_path):
    _p, q = stores.quarantined()
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "content").write_bytes(b"not for the console")
    (secret / "info.json").write_text("{}")
    fake = "20261125T134501Z-0b3f2a9c41de"
    (stores.quarantine.root / fake).symlink_to(secret)
    assert admin.get(f"/stores/quarantine/{fake}", base_url=BASE_URL).status_code == 404
    assert admin.get(f"/stores/quarantine/{fake}/download",
                     base_url=BASE_URL).status_code == 404
    assert post(admin, f"/stores/quarantine/{fake}/delete").status_code == 302
    assert secret.exists() and (stores.quarantine.root / fake).is_symlink()
    content = stores.quarantine.root / q / "content"
    content.unlink()
    content.symlink_to(secret / "content")
    assert admin.get(f"/stores/quarantine/{q}/download", base_url=BASE_URL).status_code == 404


def test_download_is_an_attachment_for_admins_only(admin, viewer, stores, web_env):
    _p, q = stores.quarantined(data=b"<html><script>x</script></html>")
    response = admin.get(f"/stores/quarantine/{q}/download", base_url=BASE_URL)
    assert response.status_code == 200
    assert response.data == b"<html><script>x</script></html>"
    assert response.mimetype == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert f"{q}.bin" in response.headers["Content-Disposition"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    m = stores.kept_message()
    response = admin.get(f"/stores/mail/{m}/download", base_url=BASE_URL)
    assert response.data == MESSAGE and f"{m}.eml" in response.headers["Content-Disposition"]
    assert audit_lines(web_env)[-1]["action"] == "stores.download"
    assert viewer.get(f"/stores/mail/{m}/download", base_url=BASE_URL).status_code == 403


def test_viewer_refused_and_csrf_required_on_every_post(viewer, admin, stores, web_env):
    _p, q = stores.quarantined()
    m = stores.kept_message()
    for url in (f"/stores/quarantine/{q}/restore", f"/stores/quarantine/{q}/delete",
                f"/stores/mail/{m}/release", f"/stores/mail/{m}/delete"):
        assert post(viewer, url, {"to": "bob@example.net"}).status_code == 403, url
        assert audit_lines(web_env)[-1]["outcome"] == "refused"
        assert admin.post(url, data={"to": "bob@example.net"},
                          base_url=BASE_URL).status_code == 400, url
    assert stores.quarantine.exists(q) and stores.mail.exists(m)


def test_restore_puts_the_file_back_and_removes_the_entry(admin, stores, web_env):
    path, q = stores.quarantined(data=b"the original bytes")
    response = post(admin, f"/stores/quarantine/{q}/restore")
    assert response.status_code == 302 and response.headers["Location"].endswith("/stores/")
    assert path.read_bytes() == b"the original bytes" and oct(path.stat().st_mode)[-3:] == "640"
    assert not stores.quarantine.exists(q)
    assert f"restored {q} to {path}" in flashes(page(admin), "ok")[0]
    assert listed(page(admin)) == []
    record = audit_lines(web_env)[-1]
    assert (record["action"], record["target"], record["outcome"]) == (
        "stores.restore", f"quarantine/{q}", "ok")
    assert record["detail"]["path"] == str(path)


def test_restore_refuses_an_existing_target_unless_overwrite(admin, stores, web_env):
    path, q = stores.quarantined(data=b"original")
    path.write_bytes(b"cured copy")
    response = post(admin, f"/stores/quarantine/{q}/restore")
    assert response.status_code == 302
    assert "exists: tick “overwrite”" in flashes(page(admin, f"/stores/quarantine/{q}"),
                                                 "error")[0]
    assert path.read_bytes() == b"cured copy" and stores.quarantine.exists(q)
    assert audit_lines(web_env)[-1]["outcome"] == "refused"
    post(admin, f"/stores/quarantine/{q}/restore", {"overwrite": "on", "keep": "on"})
    assert path.read_bytes() == b"original" and stores.quarantine.exists(q)


def test_restore_of_a_sweep_backup(admin, stores):
    path, b = stores.quarantined("cured.doc", data=b"before the cure",
                                 store=stores.backup_files)
    post(admin, f"/stores/file/{b}/restore")
    assert path.read_bytes() == b"before the cure" and not stores.backup_files.exists(b)


def test_delete_removes_the_entry_from_disk_and_list(admin, stores, web_env):
    _p, q = stores.quarantined()
    m = stores.kept_message()
    assert len(listed(page(admin))) == 2
    assert post(admin, f"/stores/mail/{m}/delete").status_code == 302
    assert not stores.mail.exists(m) and listed(page(admin)) == [f"quarantine-{q}"]
    assert audit_lines(web_env)[-1]["action"] == "stores.delete"
    assert post(admin, f"/stores/mail/{m}/delete").status_code == 302  # gone meanwhile
    assert "no backup entry" in flashes(page(admin), "error")[0]


# -- release and deliver --------------------------------------------------------------------------

class Sink:
    def __init__(self):
        self.received = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))
        return "250 OK"


@pytest.fixture
def smtp(web_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    web_env.write_config(f'\n[spool]\nreinject = "smtp:127.0.0.1:{port}"\n')
    sink.port = port
    yield sink
    controller.stop()


@pytest.fixture
def mta_app(smtp, admin):
    """An admin of a console started after the reinjection target was configured (pytest
    sets up fixtures of one scope in the order a fixture asks for them)."""
    return admin


def test_release_delivers_the_original_to_the_ticked_recipients(mta_app, smtp, stores,
                                                                web_env):
    m = stores.kept_message()
    text = page(mta_app, f"/stores/mail/{m}")
    assert 'name="to" value="bob@example.net" checked' in text
    response = post(mta_app, f"/stores/mail/{m}/release", {"to": ["carol@example.com"]})
    assert response.status_code == 302
    assert smtp.received == [("rene@example.org", ["carol@example.com"], MESSAGE)]
    assert "delivered to carol@example.com" in flashes(page(mta_app, f"/stores/mail/{m}"),
                                                       "ok")[0]
    record = audit_lines(web_env)[-1]
    assert (record["action"], record["outcome"]) == ("stores.release", "ok")
    assert record["detail"]["recipients"] == ["carol@example.com"]
    assert stores.mail.exists(m)


def test_release_refusals(mta_app, smtp, stores, web_env):
    m = stores.kept_message()
    post(mta_app, f"/stores/mail/{m}/release", {})
    assert "tick at least one recipient" in flashes(page(mta_app), "error")[0]
    post(mta_app, f"/stores/mail/{m}/release", {"to": ["mallory@example.net"]})
    assert "is not a recipient" in flashes(page(mta_app), "error")[0]
    assert audit_lines(web_env)[-1]["outcome"] == "failed"
    bare = stores.mail.save(MESSAGE, {"status": "infected"})
    assert 'id="release"' not in page(mta_app, f"/stores/mail/{bare}")
    post(mta_app, f"/stores/mail/{bare}/release", {"to": ["bob@example.net"]})
    assert "has no envelope" in flashes(page(mta_app), "error")[0]
    assert smtp.received == []


def test_a_store_the_console_cannot_read_is_said_on_the_page(viewer, stores, web_env):
    m = stores.kept_message()
    paths.backup_files_dir(web_env.state_dir).write_text("not a directory")
    text = page(viewer)
    assert f"cannot list {paths.backup_files_dir(web_env.state_dir)}" in \
        flashes(text, "error")[0]
    assert listed(text) == [f"mail-{m}"]
