"""One adapter per signature kind: parse a file's text, compile a kind's signatures, build its matcher.

The database loader knows nothing about any format: it hands each file to the adapter its
extension names (formats.KINDS) and stores whatever sections the adapter compiles. Adapters
import their format's module only when a database has files of that kind.
"""

from __future__ import annotations

from .errors import SignatureError


class Adapter:
    """The interface: ``parse`` per file, ``compile`` once per kind, ``matcher`` per process."""

    name = ""

    def parse(self, text: str, source: str, ext: str) -> tuple[list, list[str]]:
        """(signatures, skipped lines as "source:line: name: reason")."""
        raise NotImplementedError

    def compile(self, sigs: list) -> dict[str, bytes]:
        raise NotImplementedError

    def matcher(self, section):
        """An object with ``count`` and ``match(subject) -> [(name, source)]``, or None."""
        raise NotImplementedError


class HashAdapter(Adapter):
    name = "hash"
    prefix = "hash"

    def parse(self, text, source, ext):
        from . import hashes

        wildcard = ext in (".hsb", ".hsu", ".sfp")
        return hashes.parse_hash_file(text, source, allow_wildcard=wildcard), []

    def compile(self, sigs):
        from . import hashes

        return hashes.compile_hashes(sigs, self.prefix)

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


class SectionAdapter(Adapter):
    """.mdb/.msb (PE section hashes) and .imp (PE import-table hashes)."""

    name = "section"

    def parse(self, text, source, ext):
        from . import sections

        return sections.parse(text, source, ext)

    def compile(self, sigs):
        from . import sections

        return sections.compile_sections(sigs)

    def matcher(self, section):
        from . import sections

        found = sections.SectionHashMatcher(section)
        return found if found.count else None


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


class LogicalAdapter(Adapter):
    """.ldb: logical signatures (subsignatures, expressions, PCRE, byte compares)."""

    name = "logical"

    def parse(self, text, source, ext):
        from . import logical

        return logical.parse_ldb(text, source)

    def compile(self, sigs):
        from . import logical

        return logical.compile_ldb(sigs)

    def matcher(self, section):
        from . import logical

        found = logical.LogicalMatcher(section)
        return found if found.count else None


class YaraAdapter(Adapter):
    """Rule files are compiled together (one namespace each); the count comes from yara-x."""

    name = "yara"

    def parse(self, text, source, ext):
        return [(source, text)], []

    def compile(self, sigs):
        from . import yara

        return {"yara": yara.compile_rules(sigs)}

    def matcher(self, section):
        from . import yara

        blob = section("yara")
        return YaraRules(yara.YaraMatcher(bytes(blob))) if len(blob) else None


class YaraRules:
    def __init__(self, rules):
        self.rules = rules
        self.count = rules.count

    def match(self, subject):
        return self.rules.match(subject.data)


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


class ContainerAdapter(Adapter):
    """.cdb: rules on what a container records about a member (name, sizes, CRC …)."""

    name = "container"

    def parse(self, text, source, ext):
        from . import containermeta

        return containermeta.parse_cdb(text, source)

    def compile(self, sigs):
        from . import containermeta

        return containermeta.compile_cdb(sigs)

    def matcher(self, section):
        from . import containermeta

        return containermeta.ContainerMetaMatcher(section)


class FiletypeAdapter(Adapter):
    """.ftm: ClamAV's magic table; it names types, never threats (Database.filetypes)."""

    name = "filetype"

    def parse(self, text, source, ext):
        from . import filetypes

        return filetypes.parse_ftm(text, source)

    def compile(self, sigs):
        from . import filetypes

        return filetypes.compile_ftm(sigs)

    def matcher(self, section):
        from . import filetypes

        return filetypes.FtmMatcher(section)


class PhishingAdapter(Adapter):
    """.pdb/.gdb/.wdb: protected domains, URL hashes and allowed mappings, compiled together."""

    name = "phishing"

    def parse(self, text, source, ext):
        from . import phishing

        parse = {".pdb": phishing.parse_pdb, ".gdb": phishing.parse_gdb,
                 ".wdb": phishing.parse_wdb}[ext]
        return parse(text, source)

    def compile(self, sigs):
        from . import phishing

        return phishing.compile_phishing(sigs)

    def matcher(self, section):
        from . import phishing

        return phishing.PhishingChecker(section)


ADAPTERS: dict[str, Adapter] = {
    a.name: a for a in (HashAdapter(), AllowAdapter(), SectionAdapter(), BodyAdapter(),
                        LogicalAdapter(), YaraAdapter(),
                        IgnoreAdapter(), ContainerAdapter(), FiletypeAdapter(),
                        PhishingAdapter())
}

# Kinds whose matchers describe or clear objects rather than name threats, and the phishing
# check, which reports only when no signature matched (as ClamAV's heuristics do).
NOT_DETECTING = frozenset({"allow", "ignore", "filetype", "phishing"})


def adapter(kind: str) -> Adapter | None:
    """The adapter of a kind, or None while lmsav cannot read that kind."""
    return ADAPTERS.get(kind)


__all__ = ["ADAPTERS", "Adapter", "SignatureError", "adapter"]
