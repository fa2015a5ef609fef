"""The `lmsav` executable. `lmsav enqueue` runs for every message an MTA hands over, so it is
dispatched before the command-line framework and the engine are imported: its start-up cost is
that of Python plus the spool module, nothing more."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["enqueue"]:
        from .spool.enqueue import main as enqueue_main

        sys.exit(enqueue_main(sys.argv[2:]))
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
