"""HTML and text normalisation: the forms ClamAV matches target-3 and target-7 signatures in."""

from __future__ import annotations

import base64

from lmsav.scanner.signatures import htmlnorm, normalise
from lmsav.scanner.signatures.htmlnorm import _SCRENC_ORDER, _SCRENC_TABLES


def forms(html: bytes) -> htmlnorm.Normalised:
    return htmlnorm.normalise(html)


def encode_script(text: bytes) -> bytes:
    """Encode like MS Script Encoder ("JScript.Encode") so the decoder can be checked."""
    escapes = {ord("<"): b"@!", ord("\r"): b"@#", ord("@"): b"@$", ord("\n"): b"@&",
               ord(">"): b"@*"}
    out = bytearray()
    for i, ch in enumerate(text):
        if ch in escapes:
            out += escapes[ch]
            continue
        table = _SCRENC_TABLES[_SCRENC_ORDER[i % 64]]
        out.append(table.index(ch, 9) if ch != 9 else table.index(9, 0x20))
    length = base64.b64encode(len(out).to_bytes(4, "little"))
    checksum = base64.b64encode(bytes(4))
    return b"#@~^" + length + bytes(out) + checksum + b"^#~@"


# -- nocomment ---------------------------------------------------------------------------------

def test_tags_and_text_are_lower_cased_and_attributes_quoted():
    got = forms(b"<HTML><Body BGCOLOR='#FFF' Disabled>Hello <B>World</B></Body></HTML>")
    assert got.nocomment == b'<html><body bgcolor="#fff" disabled>hello <b>world</b></body></html>'


def test_comments_are_removed_up_to_the_first_closing_bracket():
    got = forms(b"<p>a<!-- hidden -- still > b</p>")
    assert got.nocomment == b"<p>ab</p>"  # white space after a comment is skipped


def test_white_space_runs_become_one_space_and_vanish_after_tags():
    got = forms(b"<p>  one \t\n  two\r\n</p>  <i> x</i>")
    assert got.nocomment == b"<p>one two </p><i>x</i>"


def test_leading_white_space_of_the_document_is_dropped():
    assert forms(b"   \n<p>x</p>").nocomment == b"<p>x</p>"


def test_named_entities_decode_to_latin1_bytes_or_hex_references():
    got = forms(b"<p>&amp; &eacute; &hearts; &bogus; &#65; &#x263A; &lt;</p>")
    assert got.nocomment == b"<p>& \xe9 &#x2665; &bogus; a &#x263a; <</p>"


def test_entity_names_are_case_sensitive():
    assert forms(b"<p>&Eacute;&EACUTE;</p>").nocomment == b"<p>\xc9&eacute;</p>"


def test_ideographic_full_stop_is_written_as_a_dot():
    assert forms("<p>a\u3002b</p>".encode()).nocomment == b"<p>a.b</p>"


def test_script_text_keeps_case_rules_but_quotes_become_double():
    got = forms(b"<script>var A = 'X';</script>")
    assert got.nocomment == b'<script>vara="x";</script>'


def test_nul_bytes_are_ignored():
    assert forms(b"<\0p>a\0b</p>").nocomment == b"<p>ab</p>"


def test_long_documents_are_read_in_chunks_cut_after_a_space():
    words = b"<p>" + b"word " * 4000 + b"</p>"
    got = forms(words)
    assert got.nocomment == b"<p>" + b"word " * 3999 + b"word </p>"
    assert len(htmlnorm.chunks(words)) == 3
    assert all(chunk.endswith(b" ") for chunk in htmlnorm.chunks(words)[:-1])


# -- notags ------------------------------------------------------------------------------------

def test_notags_keeps_text_and_link_targets():
    got = forms(b'<p>Hi <a href="http://x.example/">there</a> <img src=pic.gif>!</p>')
    assert got.notags == b" hi http://x.example/ there pic.gif ! "


def test_notags_replaces_entities_and_control_bytes_by_one_space():
    assert forms(b"<p>a&amp;b\x01\x02c</p>").notags == b" a b c "


def test_notags_leaves_out_scripts():
    assert forms(b"<p>x</p><script>evil()</script><p>y</p>").notags == b" x y "


# -- encoded scripts and data: URIs --------------------------------------------------------------

def test_jscript_encode_blocks_are_decoded_into_the_nocomment_form():
    html = (b'<html><script language="JScript.Encode">' + encode_script(b'alert("Owned")')
            + b"</script></html>")
    got = forms(html).nocomment
    assert b'<script language="javascript">alert("owned")</script>' in got


def test_asp_style_encoded_blocks_are_decoded_too():
    html = b'<%@ language="jscript.encode" %>\n' + encode_script(b"Secret Text") + b"\n<p>t</p>"
    assert b"secret text" in forms(html).nocomment


def test_data_uris_are_saved_as_small_mime_messages():
    got = forms(b'<img src="data:image/png;base64,AAAA"><a href=\'data:text/plain,a%41b\'>x</a>')
    assert got.data_files == [
        b"From html-normalise\nContent-type: image/png;base64\n"
        b"Content-transfer-encoding: base64\n\nAAAA",
        b"From html-normalise\nContent-type: text/plain\n\naAb",
    ]


# -- links (for the phishing checks) -----------------------------------------------------------

def test_links_carry_the_text_shown_for_them():
    html = (b'<a href="http://real.example/x">Shown <b>Text</b></a>'
            b'<a href="http://r2.example" title="T"><img src="i.gif"></a>'
            b'<form action="http://post.example"><a href="http://f.example">f</a></form>')
    links = [(x.tag, x.value, x.contents)
             for x in htmlnorm.normalise(html, outputs=False, links=True).links]
    assert links == [
        (b"href", b"http://real.example/x", b"Shown Text"),
        (b"href_title", b"T", b"http://r2.example"),
        (b"href", b"http://r2.example", b""),
        (b"src", b"i.gif", b"http://r2.example"),
        (b"form", b"http://f.example", b"http://post.example"),
        (b"href", b"http://f.example", b"f"),
    ]


# -- views and text ----------------------------------------------------------------------------

def test_html_views_are_nocomment_then_notags_for_targets_0_and_3():
    views = normalise.html_forms(b"<p>Hi</p>").views
    assert [(v.name, v.data, v.targets) for v in views] == [
        ("nocomment", b"<p>hi</p>", frozenset({0, 3})),
        ("notags", b" hi ", frozenset({0, 3})),
    ]
    assert normalise.html_views(b"<p>Hi</p>") == [b"<p>hi</p>", b" hi "]


def test_large_html_has_no_notags_view_and_huge_html_no_view(monkeypatch):
    monkeypatch.setattr(normalise, "MAX_HTML_NOTAGS", 10)
    assert [v.name for v in normalise.html_forms(b"<p>" + b"x" * 20).views] == ["nocomment"]
    monkeypatch.setattr(normalise, "MAX_HTML_NORMALISE", 10)
    assert normalise.html_views(b"<p>" + b"x" * 20) == []


def test_text_view_folds_case_and_white_space_and_drops_other_bytes():
    data = b"Hello   WORLD\tFoo\x01Bar \xc3\xa9t\xc3\xa9\r\n\r\nEnd \x00 x\n"
    assert normalise.text_view(data) == b"hello world foobar t end x "


def test_text_views_see_targets_0_and_7_up_to_the_size_limit(monkeypatch):
    assert normalise.text_scan_views(b"A  B") == [
        normalise.View("text", b"a b", frozenset({0, 7}))]
    monkeypatch.setattr(normalise, "MAX_SCRIPT_NORMALISE", 3)
    assert normalise.text_scan_views(b"A  B") == []
    assert normalise.text_view(b"A  B") == b""


# -- scripts -----------------------------------------------------------------------------------

def script_view(html: bytes) -> bytes | None:
    views = [v for v in normalise.html_forms(html).views if v.name == "javascript"]
    return views[0].data if views else None


def test_declared_names_are_renamed_per_scope_and_members_kept():
    html = (b"<html><script>var Total = 1; function Add(x) { var y = x + Total; "
            b"return y; } document.Write(Add(2));</script></html>")
    # As in ClamAV, a function's own name belongs to its inner scope: outside it stays as is.
    assert script_view(html) == (b"<script>var n000=1;function n001(n002){var n003=n002+n000;"
                                 b"return n003;}document.write(add(2));</script>")


def test_strings_are_joined_and_unescaped():
    html = b"<html><script>x = 'Ev' + \"IL\"; y = unescape('%41%u0042\\x43');</script></html>"
    assert script_view(html) == b'<script>x="evil";y="abc";</script>'


def test_eval_strings_are_normalised_in_place():
    html = b'<html><script>eval("var Q = 42; alert(Q)");</script></html>'
    assert script_view(html) == b"<script>var n000=42;alert(n000)</script>"


def test_comments_and_white_space_disappear_between_tokens():
    html = b"<html><script>/* x */ var  a = b /* y */ ;\n// z\n</script></html>"
    assert script_view(html) == b"<script>var n000=b;z</script>"
    # A line comment ends at the first space: newlines reach the script as spaces.


def test_scripts_are_one_view_matched_for_targets_3_and_7():
    views = normalise.html_forms(b"<html><script>A=1</script><script>B</script></html>").views
    scripts = [(v.data, v.targets) for v in views if v.name == "javascript"]
    assert scripts == [(b"<script>a=1</script>\n<script>b</script>", frozenset({0, 3})),
                       (b"<script>a=1</script>\n<script>b</script>", frozenset({0, 7}))]
    assert normalise.html_views(b"<p>x</p>") == [b"<p>x</p>", b" x "]
