"""Where the console's Updates and Schedules pages act: the configuration and state of
`lmsav cron` as this console sees them, and its background runs (one at a time per key)."""

from __future__ import annotations

from .. import paths
from ..cron import console
from .context import web


def place() -> console.Place:
    context = web()
    return console.Place(context.config_file or paths.config_file_from(None),
                         context.state_dir)


def runs() -> console.Runs:
    return console.runs_for(web().web_dir / "runs")
