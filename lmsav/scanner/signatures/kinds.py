"""One adapter per signature kind: parse a file, compile a kind's signatures, build its matcher.

The database loader knows nothing about any format: it hands each file to the adapter its
extension names (formats.KINDS) and stores whatever sections the adapter compiles. Adapters
import their format's module only when a database has files of that kind.
"""

from __future__ import annotations

import importlib

from .errors import SignatureError


class Adapter:
    """The interface: ``parse`` per file, ``compile`` once per kind, ``matcher`` per process."""

    name = ""

    def parse(self, text: str, source: str, ext: str) -> tuple[list, list[str]]:
        """(signatures, skipped lines as "source:line: name: reason")."""
        raise NotImplementedError

    def compile(self, sigs: list) -> dict[str, bytes]:
        raise NotImplementedError

    def count(self, sigs: list) -> int:
        """How many signatures ``parse`` returned."""
        return len(sigs)

    def matcher(self, section):
        """An object with ``count`` and ``match(subject) -> [(name, source)]``, or None."""
        raise NotImplementedError


class ModuleAdapter(Adapter):
    """A kind whose module offers a parser, a compiler and a matcher class under these names;
    ``parse`` may map extensions to parsers. An empty matcher (count 0) is left out."""

    def __init__(self, name: str, module: str, parse: str | dict[str, str], compile: str,
                 matcher: str, with_ext: bool = False, columnar: bool = False):
        self.name = name
        self.module = module
        self.parsers = parse
        self.compiler = compile
        self.matcher_class = matcher
        self.with_ext = with_ext  # the parser also takes the extension
        self.columnar = columnar  # parse returns column blocks; len() of each is its count

    def _module(self):
        return importlib.import_module(f".{self.module}", __package__)

    def parse(self, text, source, ext):
        name = self.parsers if isinstance(self.parsers, str) else self.parsers[ext]
        parser = getattr(self._module(), name)
        return parser(text, source, ext) if self.with_ext else parser(text, source)

    def compile(self, sigs):
        return getattr(self._module(), self.compiler)(sigs)

    def matcher(self, section):
        found = getattr(self._module(), self.matcher_class)(section)
        return found if found.count else None

    def count(self, sigs):
        return sum(len(sig) for sig in sigs) if self.columnar else len(sigs)


class HashAdapter(Adapter):
    """.hdb/.hsb: parsed straight into numpy columns, never an object per line (millions)."""

    name = "hash"
    prefix = "hash"
    raw = True  # parse takes the file's bytes

    def parse(self, text, source, ext):
        from . import hashes

        wildcard = ext in (".hsb", ".hsu", ".sfp")
        columns, skipped = hashes.parse_hash_columns(text, source, allow_wildcard=wildcard)
        return [columns], skipped

    def count(self, sigs):
        return sum(len(part) for part in sigs)

    def compile(self, sigs):
        from . import hashes

        return hashes.compile_hash_columns(sigs, self.prefix)

    def matcher(self, section):
        from . import hashes

        table = hashes.HashMatcher(section, self.prefix)
        return FileHashes(table) if table.count else None


class FileHashes:
    """Whole-file hashes: the file is hashed only if some signature has its size."""

    def __init__(self, table):
        self.table = table
        self.count = table.count

    def match(self, subject):
        # ClamAV hashes normalised HTML but never the folded view of a text file.
        if not self.table.wants(subject.size) or subject.ftype == "text-norm":
            return []
        return self.table.match(subject.data, subject.size)


class AllowAdapter(HashAdapter):
    """.fp/.sfp: file hashes that clear whatever else matched the same file."""

    name = "allow"
    prefix = "allow"


class BodyAdapter(Adapter):
    name = "body"

    def parse(self, text, source, ext):
        from . import body

        parsed = body.parse_ndb(text, source)
        usable = [s for s in parsed if not s.unsupported]
        skipped = [f"{s.source}:{s.line}: {s.name}: {s.unsupported}" for s in parsed
                   if s.unsupported]
        return usable, skipped

    def compile(self, sigs):
        from . import body

        return {"body": body.compile_body(sigs)}

    def matcher(self, section):
        from . import body

        return body.BodyMatcher.from_blob(section("body"))


class YaraAdapter(Adapter):
    """Rule files are compiled together (one namespace each); the count comes from yara-x.

    ``compile_set`` also reports the files and rules left out; the database calls it with the
    directory ``include`` directives are resolved in."""

    name = "yara"

    def parse(self, text, source, ext):
        return [(source, text)], []

    def compile(self, sigs):
        return self.compile_set(sigs)[0]

    def compile_set(self, sigs, directory=None):
        from . import yara

        compiled = yara.compile_set(sigs, directory)
        sections = {"yara": compiled.blob}
        if compiled.variables:
            sections["yara-vars"] = ",".join(compiled.variables).encode()
        return sections, compiled

    def matcher(self, section):
        from . import yara

        blob = section("yara")
        if not len(blob):
            return None
        variables = tuple(bytes(section("yara-vars")).decode().split(","))
        return YaraRules(yara.YaraMatcher(bytes(blob), variables))


class YaraRules:
    """Sets the external variables of each object, but only for a rule set that names them."""

    def __init__(self, rules):
        self.rules = rules
        self.count = rules.count

    def match(self, subject):
        rules = self.rules
        if not rules.variables:
            return rules.match(subject.data)
        from .yara import object_facts

        member = subject.member
        facts = object_facts(subject.name, member.name if member is not None else "",
                             subject.ftype, subject.origin)
        return rules.match(subject.data, facts)


class IgnoreAdapter(Adapter):
    """.ign2 lines are signature names; ClamAV's older .ign puts "file:line:" before the name."""

    name = "ignore"

    def parse(self, text, source, ext):
        names = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                parts = line.split(":")
                names.append(parts[-1] if len(parts) >= 3 else parts[0])
        return names, []

    def compile(self, sigs):
        return {"ignore": "\n".join(sorted(set(sigs))).encode()}

    def matcher(self, section):
        return IgnoreList(bytes(section("ignore")).decode())


class IgnoreList:
    def __init__(self, text: str):
        self.names = frozenset(text.split("\n")) - {""}
        self.count = len(self.names)

    def match(self, subject):
        return []


ADAPTERS: dict[str, Adapter] = {a.name: a for a in (
    HashAdapter(),
    AllowAdapter(),
    ModuleAdapter("section", "sections", "parse_columns", "compile_sections", "SectionHashMatcher",
                  with_ext=True, columnar=True),                # .mdb .msb .imp
    BodyAdapter(),
    ModuleAdapter("logical", "logical", "parse_ldb", "compile_ldb", "LogicalMatcher"),
    YaraAdapter(),
    IgnoreAdapter(),
    ModuleAdapter("container", "containermeta", "parse_cdb", "compile_cdb",
                  "ContainerMetaMatcher"),                      # .cdb
    ModuleAdapter("filetype", "clamav_types", "parse_ftm", "compile_ftm", "FtmMatcher"),  # .ftm
    ModuleAdapter("phishing", "phishing",
                  {".pdb": "parse_pdb", ".gdb": "parse_gdb", ".wdb": "parse_wdb"},
                  "compile_phishing", "PhishingChecker"),
)}

# Kinds whose matchers describe or clear objects rather than name threats, and the phishing
# check, which reports only when no signature matched (as ClamAV's heuristics do).
NOT_DETECTING = frozenset({"allow", "ignore", "filetype", "phishing"})


def adapter(kind: str) -> Adapter | None:
    """The adapter of a kind, or None while lmsav cannot read that kind."""
    return ADAPTERS.get(kind)


__all__ = ["ADAPTERS", "Adapter", "SignatureError", "adapter"]
