"""Phishing lists (.pdb/.gdb/.wdb) and the link checks ClamAV runs on mail text parts."""

from __future__ import annotations

import hashlib

import pytest

from lmsav.scanner.signatures import phishing, urls
from lmsav.scanner.signatures.errors import SignatureError
from lmsav.scanner.signatures.subject import (
    MAIL_LINKS,
    MAIL_LINKS_ONLY,
    MemberMeta,
    Subject,
)

PDB = "H:paypal.com\nR:.+\\.evilbank\\.net([/?].*)?:.+\\.mybank\\.com\n"
WDB = "M:mail.paypal-partner.com:paypal.com\nX:.+\\.trusted\\.org([/?].*)?:.+\\.mybank\\.com\n"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def checker(pdb: str = PDB, wdb: str = WDB, gdb: str = "") -> phishing.PhishingChecker:
    sigs = (phishing.parse_pdb(pdb, "t.pdb")[0] + phishing.parse_wdb(wdb, "t.wdb")[0]
            + phishing.parse_gdb(gdb, "t.gdb")[0])
    sections = phishing.compile_phishing(sigs)
    return phishing.PhishingChecker(lambda name: memoryview(sections.get(name, b"")))


def mail_part(data: bytes, ftype: str = "html", use: str = MAIL_LINKS) -> Subject:
    """A part of a message as the mail handler describes it; ``use`` says whether ClamAV
    reads its links."""
    return Subject(data, len(data), ftype, "CL_TYPE_HTML", ("CL_TYPE_MAIL",), in_mail=True,
                   member=MemberMeta(name="mixedtextportion", size=len(data), mail_use=use))


def mail_html(body: str, **kw) -> Subject:
    return mail_part(f"<html><body>{body}</body></html>".encode(), **kw)


def names(chk, body: str, **kw) -> list[str]:
    return [name for name, _ in chk.match(mail_html(body, **kw))]


# -- parsing -----------------------------------------------------------------------------------

def test_pdb_lines_become_domain_entries_with_a_closing_slash():
    sigs, skipped = phishing.parse_pdb(PDB, "t.pdb")
    assert [(s.kind, s.pattern) for s in sigs] == [
        ("H", "paypal.com/"), ("R", ".+\\.evilbank\\.net([/?].*)?:.+\\.mybank\\.com/")]
    assert skipped == []


def test_a_trailing_any_path_part_of_a_regex_is_dropped():
    sigs, _ = phishing.parse_pdb("R:.+\\.a\\.com:.+\\.b\\.com([/?].*)?\n", "t.pdb")
    assert sigs[0].pattern == ".+\\.a\\.com:.+\\.b\\.com/"


def test_gdb_hash_lines_keep_their_flag():
    text = f"S:F:{sha('a/')}\nS1:F:{sha('b/')}\nS2:F:{sha('c/')}\nS:W:{sha('d/')}\n"
    sigs, skipped = phishing.parse_gdb(text + "S:P:abcd1234\n", "t.gdb")
    assert [s.flag for s in sigs] == [":", "1", "2", "W"]
    assert skipped == ["t.gdb: 1 S:P: host-prefix hashes: ClamAV loads them but never "
                       "matches on them"]


def test_lines_outside_the_engine_level_are_skipped_with_a_reason():
    sigs, skipped = phishing.parse_pdb("H:a.com:9999-\nH:b.com:1-2\nH:c.com:1-\n", "t.pdb")
    assert [s.pattern for s in sigs] == ["c.com/"]
    assert len(skipped) == 2 and "needs engine level 9999" in skipped[0]


def test_allowed_hashes_in_a_wdb_are_listed_as_without_effect():
    sigs, skipped = phishing.parse_wdb(f"S:W:{sha('x/')}\n", "t.wdb")
    assert sigs == [] and "no effect" in skipped[0]


@pytest.mark.parametrize("parse, line, message", [
    (phishing.parse_pdb, "Hpaypal.com", "no ':'"),
    (phishing.parse_pdb, "M:a.com:b.com", "unknown line type"),
    (phishing.parse_wdb, "H:a.com", "unknown line type"),
    (phishing.parse_gdb, "S:F:1234", "64 hex digits"),
    (phishing.parse_gdb, "S:Q:00", "S:F:, S:W: or S:P:"),
])
def test_malformed_lines_name_file_and_line(parse, line, message):
    with pytest.raises(SignatureError) as err:
        parse(f"# comment\n{line}\n", "bad.pdb")
    assert err.value.line == 2 and message in err.value.message


def test_posix_regexes_are_translated():
    assert phishing.posix_to_python("a\\.b[[:digit:]\\]+") == "a\\.b[0-9\\\\]+"
    sigs, skipped = phishing.parse_pdb("R:a[:b\n", "t.pdb")
    assert sigs == [] and "regex lmsav cannot use" in skipped[0]


# -- checking links ----------------------------------------------------------------------------

def test_shown_protected_domain_leading_elsewhere_is_spoofed():
    chk = checker()
    assert chk.match(mail_html('<a href="http://evil.example.net/login">www.paypal.com</a>')) == [
        (phishing.SPOOFED, "t.pdb")]


def test_links_to_the_shown_domain_or_unlisted_domains_are_clean():
    chk = checker()
    assert names(chk, '<a href="http://www.paypal.com/x">paypal.com</a>') == []
    assert names(chk, '<a href="http://evil.example.net/">www.other.com</a>') == []
    assert names(chk, '<a href="http://evil.example.net/">Click here</a>') == []


def test_spaced_out_display_text_is_still_recognised():
    chk = checker()
    assert names(chk, '<a href="http://evil.net/">w w w . p a y p a l . c o m</a>') == [
        phishing.SPOOFED]


def test_regex_entries_match_the_real_and_shown_pair():
    chk = checker()
    assert names(chk, '<a href="http://x.evilbank.net/">https://www.mybank.com</a>') == [
        phishing.SPOOFED]


def test_allow_list_entries_clear_a_pair():
    chk = checker()
    assert names(chk, '<a href="http://mail.paypal-partner.com/">paypal.com</a>') == []
    assert names(chk, '<a href="http://x.trusted.org/">www.mybank.com</a>') == []
    # M: compares hosts exactly: a subdomain shown is not the allowed pair.
    assert names(chk, '<a href="http://mail.paypal-partner.com/">www.paypal.com</a>') == [
        phishing.SPOOFED]


def test_https_shown_for_a_plain_http_target_is_ssl_spoof():
    chk = checker()
    assert names(chk, '<a href="http://www.paypal.com.evil.net/">https://www.paypal.com</a>') == [
        phishing.SSL_SPOOF]


def test_escaped_nul_in_the_target_is_cloaking():
    chk = checker()
    assert names(chk, '<a href="http://www.paypal.com%00@evil.net/">www.paypal.com</a>') == [
        phishing.CLOAKED_NULL]


def test_titles_images_and_forms_are_links_too():
    chk = checker()
    assert names(chk, '<a href="http://evil.net/" title="www.paypal.com">x</a>') == [
        phishing.SPOOFED]
    assert names(chk, '<a href="http://evil.net/"><img src="http://www.paypal.com/a.gif"></a>'
                 ) == [phishing.SPOOFED]
    assert names(chk, '<form action="http://evil.net/"><a href="http://www.paypal.com/">'
                      "www.paypal.com</a></form>") == [phishing.SPOOFED]


def test_hashed_urls_are_reported_by_their_flag():
    gdb = (f"S:F:{sha('malware.example.com/bad/path.html')}\nS2:F:{sha('phish.example.org/')}\n"
           f"S1:F:{sha('example.com/a/')}\nS:W:{sha('ok.example.org/')}\n")
    chk = checker(pdb="", wdb="", gdb=gdb)
    assert chk.count == 3
    assert chk.match(mail_html('<a href="http://malware.example.com/bad/path.html">x</a>')) == [
        (phishing.HASH_DEFAULT, "t.gdb")]
    assert names(chk, '<a href="https://phish.example.org">x</a>') == [phishing.HASH_NAMES["2"]]
    assert names(chk, '<a href="http://www.example.com/a/b/c?q=1">x</a>') == [
        phishing.HASH_NAMES["1"]]
    assert names(chk, '<a href="http://ok.example.org/">x</a>') == []


def test_url_hash_candidates_follow_host_suffixes_and_path_prefixes():
    assert urls.url_hash_candidates(b"http://a.b.example.com/x/y.html?q=1") == [
        b"example.com/x/", b"b.example.com/x/", b"a.b.example.com/x/",
        b"example.com/", b"b.example.com/", b"a.b.example.com/",
        b"example.com/x/y.html", b"b.example.com/x/y.html", b"a.b.example.com/x/y.html",
        b"example.com/x/y.html?q=1", b"b.example.com/x/y.html?q=1",
        b"a.b.example.com/x/y.html?q=1",
    ]
    assert urls.url_hash_candidates(b"www.example.com/") is None


def test_plain_text_parts_are_checked_for_written_urls():
    gdb = f"S:F:{sha('malware.example.com/bad/path.html')}\n"
    chk = checker(pdb="", wdb="", gdb=gdb)
    text = b"Please see http://malware.example.com/bad/path.html today"
    assert chk.match(mail_part(text, "text")) == [(phishing.HASH_DEFAULT, "t.gdb")]
    # As in ClamAV, "https:" URLs written as text are not picked up.
    text = b"Please see https://malware.example.com/bad/path.html today"
    assert chk.match(mail_part(text, "text")) == []


def test_only_the_parts_clamav_reads_for_links_are_checked():
    chk = checker()
    body = '<a href="http://evil.example.net/login">www.paypal.com</a>'
    assert names(chk, body) == [phishing.SPOOFED]
    assert names(chk, body, use=MAIL_LINKS_ONLY) == [phishing.SPOOFED]
    # Whatever the content looks like: ClamAV reads the part, not a file type.
    assert names(chk, body, ftype="pdf") == [phishing.SPOOFED]
    assert names(chk, body, use="") == []  # an attachment
    page = f"<html><body>{body}</body></html>".encode()
    assert chk.match(Subject(page, len(page), "html")) == []  # not a mail part
    part = mail_html(body)
    part.ancestry = ("CL_TYPE_MAIL", "CL_TYPE_ZIP")  # a page inside an attached archive
    assert chk.match(part) == []


def test_no_domain_list_means_no_checks():
    chk = checker(pdb="")
    assert chk.count == 0
    assert names(chk, '<a href="http://evil.example.net/login">www.paypal.com</a>') == []


def test_domains_are_cut_below_known_second_level_domains():
    assert urls.get_domain(b".www.example.co.uk") == b"example.co.uk"
    assert urls.get_domain(b".www.example.uk") == b"example.uk"
    assert urls.get_domain(b".login.paypal.com") == b"paypal.com"
