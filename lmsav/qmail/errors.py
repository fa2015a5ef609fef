"""How the qmail wrapper fails: the exceptions that become its exit codes (no imports: the
wrapper runs once per message)."""


class Defer(Exception):
    """A temporary failure: exit 71 with this reason on stderr."""


class Refuse(Exception):
    """A failure with its own exit code."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
