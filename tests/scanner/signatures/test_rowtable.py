"""Packed row tables: every row comes back as written, decoded one at a time."""

from __future__ import annotations

import json

from lmsav.scanner.signatures.rowtable import RowTable, pack_rows


def test_rows_round_trip_in_place():
    rows = [["Sig.A", 0, 1, None], {"n": "Sig.B", "ss": [["h", "*", []]]}, [], "ü ∂ \n quoted"]
    blob, index = pack_rows(rows)
    table = RowTable(memoryview(blob), index)
    assert len(table) == len(rows)
    assert [table[i] for i in reversed(range(len(rows)))] == list(reversed(rows))


def test_a_row_is_decoded_once(monkeypatch):
    blob, index = pack_rows([[1], [2]])
    table = RowTable(memoryview(blob), index)
    calls = []
    real = json.loads
    monkeypatch.setattr(json, "loads", lambda raw: calls.append(raw) or real(raw))
    assert table[1] == [2] and table[1] == [2]
    assert calls == [b"[2]"]


def test_empty_table():
    blob, index = pack_rows([])
    assert len(RowTable(memoryview(blob), index)) == 0
