"""Reading `--json` output as lmsav(1) "MACHINE OUTPUT" defines it: JSON Lines, one compact
object per line, nothing else on stdout."""

from __future__ import annotations

import json

from lmsav.jsonout import dumps


def records(output: str) -> list[dict]:
    """Every line of a list or stream command's output, each one JSON object (none: no output)."""
    lines = output.splitlines()
    assert output == "".join(line + "\n" for line in lines), "every line ends with a newline"
    found = []
    for line in lines:
        assert line and line == line.strip(), f"an empty or padded line: {line!r}"
        value = json.loads(line)
        assert isinstance(value, dict), f"not an object: {line}"
        assert line == dumps(value), f"not compact: {line}"
        found.append(value)
    return found


def one_object(output: str) -> dict:
    """The output of a single-object command (show, status, check, info): exactly one line."""
    found = records(output)
    assert len(found) == 1, f"expected one line, got {len(found)}: {output!r}"
    return found[0]
