"""Each EXAMPLES line of lmsav-stats(1), run as written over mail recorded by the service."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from click.testing import CliRunner

from lmsav.stats.commands import stats_group

MAN_PAGE = Path(__file__).resolve().parents[2] / "man" / "lmsav-stats.1"


def examples() -> list[str]:
    text = MAN_PAGE.read_text()
    block = text.split(".SH EXAMPLES", 1)[1].split(".nf\n", 1)[1].split(".fi", 1)[0]
    return [line.replace("\\-", "-").replace("\\(aq", "'") for line in block.splitlines()]


def lmsav(args: list[str], config):
    """``lmsav ARGS`` through the whole command line once it carries ``stats``, else through
    the command group itself."""
    from lmsav.cli import LazyGroup, main

    env = {"LMSAV_CONFIG": str(config)}
    if "stats" in LazyGroup.LAZY:
        return CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    return CliRunner().invoke(stats_group, args[1:], env=env, catch_exceptions=False)


def test_the_man_page_examples_run_as_written(mail_flow):
    config, _ = mail_flow
    lines = examples()
    assert len(lines) == 8
    outputs = {}
    for line in lines:
        words = shlex.split(line)
        assert words[:2] == ["lmsav", "stats"], line
        result = lmsav(words[1:], config)
        assert result.exit_code == 0, (line, result.output)
        outputs[line] = result.output
    assert "Messages       7" in outputs["lmsav stats"]
    assert json.loads(outputs["lmsav stats --since 24h --json"])["totals"]["infected"] == 2
    assert len(outputs["lmsav stats messages --status infected"].splitlines()) == 3
    assert len(outputs["lmsav stats messages --threat 'Eicar*' --json"].splitlines()) == 2
    assert "TIME (UTC)" in outputs["lmsav stats --since 7d --by day"]
    assert outputs["lmsav stats messages --rcpt '*@example.org' --since 24h"].startswith(
        "DATE (UTC)")


def test_the_synopsis_names_every_option():
    text = MAN_PAGE.read_text().replace("\\-", "-")
    synopsis = text.split(".SH SYNOPSIS", 1)[1].split(".SH ", 1)[0]
    for command in (stats_group, stats_group.commands["messages"]):
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help":
                    assert opt in synopsis, opt
