"""The one error signature parsers raise: it names the file and line so a bad database is fixable."""

from __future__ import annotations


class SignatureError(Exception):
    def __init__(self, file: str, line: int, message: str):
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message
