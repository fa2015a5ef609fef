"""The one rule for ``--json`` output, for every command (lmsav(1), "MACHINE OUTPUT").

Everything a command prints with ``--json`` is JSON Lines: one compact JSON object per line,
UTF-8, nothing else on stdout. A command that reports one thing (``show``, ``status``,
``check``, ``info``) prints exactly one line; a command that lists or streams things (``list``,
``scan``) prints one line per item and nothing at all when there are none. A reader therefore
needs one loop for every command: ``for line in out: json.loads(line)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click


def dumps(value: Any) -> str:
    """One JSON value on one line (non-JSON values such as paths and times become strings)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (file names or headers that were not UTF-8) cannot be written as
        # UTF-8; escaped as \udcXX they still reach the reader unchanged.
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str)
    return text


def emit_object(value: dict) -> None:
    """The single object a ``show``/``status``-like command reports."""
    click.echo(dumps(value))


def emit_records(values: Iterable[dict]) -> None:
    """One line per item of a list or stream; no output for no items."""
    for value in values:
        click.echo(dumps(value))
