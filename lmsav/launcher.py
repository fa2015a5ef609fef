"""The `lmsav` executable. `lmsav enqueue` and `lmsav exim-acl` run for every message an MTA
hands over, so they are dispatched before the command-line framework and the engine are
imported: their start-up cost is that of Python plus one small module, nothing more."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["enqueue"]:
        from .spool.enqueue import main as enqueue_main

        sys.exit(enqueue_main(sys.argv[2:]))
    if sys.argv[1:2] == ["exim-acl"]:  # Exim's DATA ACL, once per message (lmsav.mail.acl)
        from .mail.acl import main as acl_main

        sys.exit(acl_main(sys.argv[2:]))
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
