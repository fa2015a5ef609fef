"""Notices to the sender, the recipients and the administrator, built from templates.

Each kind of notice has one template file, ``sender.txt``, ``recipients.txt`` and ``admin.txt``:
a ``Subject:`` line, an empty line, then the body. Both the subject and the body may use the
macros ``${sender} ${recipients} ${subject} ${message_id} ${status} ${action} ${threats}
${objects} ${findings} ${outcomes} ${advice} ${group} ${date} ${database_version} ${hostname}
${reject_reply}`` (:class:`string.Template`, ``safe_substitute``: an unknown macro stays as
written).

- ``${status}`` and ``${action}`` are the localised words from ``strings.toml`` (``[status]``,
  ``[action]``); a word missing there is printed as its raw name.
- ``${threats}`` is one line ``"  path: name"`` per threat; ``${objects}`` one line
  ``"  path: STATUS reason"`` per object that is not clean, STATUS being the raw status name in
  capitals as in the CLI and the logs. An empty list prints ``[text] none`` of the strings file.
- ``${findings}`` is one line ``"  path: status (threat names, or why)"`` per object that is not
  clean, in words: an infected file with its threats, a filtered file with the filter's reason.
- ``${outcomes}`` is one line ``"  recipients: action"`` per group the notice is about: a
  message split over several groups gives each person one notice, not one per group.
- ``${action}`` reads after "was"; under the message policy a deleted message was not
  delivered, which ``[action] delete_message`` says. When the groups of one notice acted
  differently it is ``[text] mixed``.
- ``${advice}`` is the closing paragraph for the notice's kind and status: ``[advice]``, which
  speaks to the sender, for the sender's notice, ``[recipient_advice]`` for the recipients'. The
  shipped administrator's notice has none (an ``admin.txt`` that uses it gets ``[advice]``).
  Only an infected or suspicious message suggests an infected computer.
- ``${reject_reply}`` is the SMTP reply of the groups that rejected the message, empty when
  nothing was rejected. A template line whose macros are all empty is left out: no "Reply:"
  line without a rejection, no "Message-ID:" line for a message without one.
- ``${findings}`` and ``${objects}`` list each object once: when several groups of one notice
  found the same object for different reasons, its line gives every reason.
- ``${recipients}`` is the envelope recipients joined by ``", "``; an empty sender is ``<>``.

The shipped files live in ``lmsav/data/templates/``. A group's ``templates_dir`` overrides them
file by file: a template missing there comes from the shipped directory, and its strings files
replace the shipped words key by key. With a ``language`` (``de``, ``pt_BR``…),
``strings.<lang>.toml`` and, when present, ``<kind>.<lang>.txt`` are preferred.

Notices are returned as complete messages with their envelopes; sending them is the
integration's job. They are sent from the null envelope sender, as delivery status notifications
are (RFC 5321 §4.5.5), so that a notice that cannot be delivered never bounces back and no two
systems can notify each other in a loop; they carry ``Auto-Submitted: auto-generated``
(RFC 3834) for the same reason. Message bytes use LF line ends, the convention of local MTA
submission (``sendmail -t``, ``qmail-inject``, Maildir, spool files); an integration speaking SMTP
converts them to CRLF.
"""

from __future__ import annotations

import dataclasses
import re
import string
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, formatdate, make_msgid, parsedate_to_datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .groups import match_pattern

SHIPPED_TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "data" / "templates"

KINDS = ("sender", "recipients", "admin")
STRINGS_FILE = "strings.toml"
_STRING_TABLES = ("status", "action", "text", "advice", "recipient_advice")
_DEFAULT_TEXT = {"none": "(none)", "no_subject": "(no subject)", "mixed": "handled as follows"}

# Longest original header block attached to an admin notice; a message whose header never ends
# must not make the notice as large as itself.
MAX_ATTACHED_HEADERS = 64 * 1024

_MACRO = re.compile(r"\$(?:\{([_a-z][_a-z0-9]*)\}|([_a-z][_a-z0-9]*))", re.IGNORECASE)
_LANGUAGE_RE = re.compile(r"[A-Za-z]{2,8}(?:[_-][A-Za-z0-9]{1,8})*\Z")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\Z")


class TemplateError(Exception):
    """A template or strings file that cannot be used; the message starts with the file."""


@dataclass(frozen=True)
class NoticeInfo:
    """Everything a notice can tell about one processed message."""

    sender: str
    recipients: tuple[str, ...]
    subject: str
    message_id: str
    status: str  # "infected" | "suspicious" | "protected" | "corrupted" | "error" | "filtered"
    action: str  # action taken, e.g. "reject"
    threats: tuple[tuple[str, str], ...]  # (object path in container notation, threat name)
    objects: tuple[tuple[str, str, str], ...]  # (object path, status, reason), every non-clean one
    group: str
    date: str  # RFC 2822 date of processing
    database_version: str
    hostname: str
    reject_reply: str = ""
    delivered: bool = True  # whether these recipients get the message (changed or not)
    # (recipients, action, delivered) per group when one notice covers several groups
    outcomes: tuple[tuple[tuple[str, ...], str, bool], ...] = ()

    def group_outcomes(self) -> tuple[tuple[tuple[str, ...], str, bool], ...]:
        return self.outcomes or ((self.recipients, self.action, self.delivered),)


@dataclass(frozen=True)
class Notice:
    """One ready notice: who it goes to (envelope) and the complete message, LF line ends."""

    kind: str  # "sender" | "recipients" | "admin"
    envelope_from: str  # always "": the null sender, see the module docstring
    envelope_to: tuple[str, ...]
    message: bytes
    groups: tuple[str, ...] = ()  # the groups whose outcome the notice reports


@dataclass(frozen=True)
class _NoticeTemplate:
    subject: string.Template
    body: string.Template
    source: Path


@dataclass(frozen=True)
class Templates:
    """The three notice templates and the localised words, loaded once and used many times."""

    notices: Mapping[str, _NoticeTemplate]
    words: Mapping[str, Mapping[str, str]]  # table ("status", "action", "text") → key → word
    language: str | None = None
    sources: tuple[Path, ...] = field(default=())  # every file read, in reading order

    @classmethod
    def load(cls, override_dir: Path | None = None, language: str | None = None) -> Templates:
        """Read the shipped templates, replaced file by file by those in ``override_dir``."""
        if language is not None and not _LANGUAGE_RE.match(language):
            raise TemplateError(f"language {language!r}: expected a code such as 'de' or 'pt_BR'")
        dirs = [SHIPPED_TEMPLATES_DIR]
        if override_dir is not None:
            override_dir = Path(override_dir)
            if not override_dir.is_dir():
                raise TemplateError(f"{override_dir}: templates directory does not exist")
            dirs.append(override_dir)
        sources: list[Path] = []

        notices = {}
        for kind in KINDS:
            names = ([f"{kind}.{language}.txt"] if language else []) + [f"{kind}.txt"]
            # Most specific first: the override's own language, its plain file, then shipped.
            candidates = [d / n for d in reversed(dirs) for n in names]
            path = next((p for p in candidates if p.exists()), None)
            if path is None:
                raise TemplateError(f"{SHIPPED_TEMPLATES_DIR / f'{kind}.txt'}: template missing")
            notices[kind] = _parse_template(path)
            sources.append(path)

        words: dict[str, dict[str, str]] = {t: {} for t in _STRING_TABLES}
        words["text"].update(_DEFAULT_TEXT)
        # Least specific first, each file replacing the words before it key by key.
        layers = [d / STRINGS_FILE for d in dirs]
        if language:
            lang_layers = [d / f"strings.{language}.toml" for d in dirs]
            if not any(p.exists() for p in lang_layers):
                raise TemplateError(
                    f"{lang_layers[-1]}: no strings file for language {language!r}"
                )
            layers += lang_layers
        for path in layers:
            if path.exists():
                for table, entries in _parse_strings(path).items():
                    words[table].update(entries)
                sources.append(path)

        return cls(
            notices=MappingProxyType(notices),
            words=MappingProxyType({t: MappingProxyType(w) for t, w in words.items()}),
            language=language,
            sources=tuple(sources),
        )

    def word(self, table: str, key: str) -> str:
        """The localised word for a status or action; the key itself when there is none."""
        return self.words.get(table, {}).get(key, key)

    def action_word(self, action: str, delivered: bool) -> str:
        if action == "delete" and not delivered:
            return self.word("action", "delete_message")
        return self.word("action", action)

    def macros(self, info: NoticeInfo, kind: str = "sender") -> dict[str, str]:
        none = self.word("text", "none")
        threats = "\n".join(f"  {path}: {name}" for path, name in dict.fromkeys(info.threats))
        threats = threats or f"  {none}"
        objects = (
            "\n".join(
                f"  {path}: {status.upper()} {reason}".rstrip()
                for path, status, reason in info.objects
            )
            or f"  {none}"
        )
        outcomes = info.group_outcomes()
        actions = {self.action_word(a, d) for _, a, d in outcomes}
        action = actions.pop() if len(actions) == 1 else self.word("text", "mixed")
        advice_table = "recipient_advice" if kind == "recipients" else "advice"
        return {
            "sender": _address(info.sender) or "<>",
            "recipients": ", ".join(info.recipients),
            "subject": info.subject or self.word("text", "no_subject"),
            "message_id": info.message_id,
            "status": self.word("status", info.status),
            "action": action,
            "threats": threats,
            "objects": objects,
            "findings": self._findings(info) or f"  {none}",
            "outcomes": "\n".join(f"  {', '.join(r) or none}: {self.action_word(a, d)}"
                                  for r, a, d in outcomes),
            "advice": self.words.get(advice_table, {}).get(info.status, ""),
            "group": info.group,
            "date": info.date,
            "database_version": info.database_version,
            "hostname": info.hostname,
            "reject_reply": info.reject_reply,
        }

    def _findings(self, info: NoticeInfo) -> str:
        lines = []
        for path, status, reason in info.objects:
            names = ", ".join(dict.fromkeys(n for p, n in info.threats if p == path))
            detail = names or reason
            lines.append(f"  {path}: {self.word('status', status)}"
                         + (f" ({detail})" if detail else ""))
        return "\n".join(lines)

    def render(self, kind: str, info: NoticeInfo) -> tuple[str, str]:
        """(subject, body) of one kind of notice for ``info``; the subject is one line."""
        template = self.notices[kind]
        values = self.macros(info, kind)
        subject = _one_line(template.subject.safe_substitute(values))
        # A line whose macros are all empty ("Reply:" when nothing was rejected, "Message-ID:"
        # of a message without one) is left out rather than printed with nothing after it.
        body = string.Template("".join(
            line for line in template.body.template.splitlines(keepends=True)
            if not _all_empty(line, values))).safe_substitute(values)
        return subject, body if body.endswith("\n") else body + "\n"


def notices_for_groups(
    items: list[tuple[Any, NoticeInfo]],
    templates_for: Callable[[Any], Templates | None],
    *,
    original_headers: bytes | None = None,
) -> list[Notice]:
    """The notices about one message whose recipients fell into several groups, each person
    getting one notice of a kind: a sender whose message three groups handled gets one notice
    telling what each group did, an administrator of two groups one report. ``items`` are
    (group, what it did) in the groups' order; the first group that asks for a person's notice
    provides its template.

    A sender who gets a notice also reads in it what the groups that rejected the message did
    (with their reply), whether or not those groups send notices: one notice per person, so
    the delivery status notice of a rejection is not sent beside it (``deliveries``)."""
    notices = []
    for kind in KINDS:
        # address (case-insensitive) → the items that want this kind of notice sent to it
        wanted: dict[str, tuple[str, list[int]]] = {}
        for i, (policy, info) in enumerate(items):
            for address in _wanted(policy, info, kind):
                wanted.setdefault(address.lower(), (address, []))[1].append(i)
        audiences: dict[tuple[int, ...], list[str]] = {}
        for address, indexes in wanted.values():
            audiences.setdefault(tuple(indexes), []).append(address)
        for indexes, envelope_to in audiences.items():
            policy = items[indexes[0]][0]
            if kind == "sender":
                indexes = tuple(sorted({*indexes, *_refusals(items)}))
            info = _merged([items[i][1] for i in indexes])
            templates = templates_for(policy)
            if templates is None:
                templates = Templates.load(
                    getattr(policy, "templates_dir", None), getattr(policy, "language", None)
                )
            subject, body = templates.render(kind, info)
            headers = original_headers if kind == "admin" else None
            message = _compose(policy, info, tuple(envelope_to), subject, body, headers)
            notices.append(Notice(kind, "", tuple(envelope_to), message,
                                  tuple(items[i][1].group for i in indexes)))
    return notices


def _wanted(policy: Any, info: NoticeInfo, kind: str) -> tuple[str, ...]:
    """Who gets a notice of ``kind`` about ``info`` under ``policy``."""
    status = _name(info.status)
    if kind == "sender":
        sender = _address(info.sender)
        wants = status in _names(policy.notify_sender) and sender
        return (sender,) if wants and not _forges_sender(policy, info) else ()
    if kind == "recipients":
        if status not in _names(policy.notify_recipients):
            return ()
        return _unique(_address(r) for r in info.recipients)
    if status not in _names(policy.notify_admin):
        return ()
    return _unique(_address(a) for a in (policy.admin_addresses or ()))


def _refusals(items: list[tuple[Any, NoticeInfo]]) -> list[int]:
    """The items whose group rejected the message and would tell the sender so by a delivery
    status notice (not when the threat forges its sender)."""
    return [i for i, (policy, info) in enumerate(items)
            if info.action == "reject" and not _forges_sender(policy, info)]


_STATUS_ORDER = ("clean", "unscanned", "error", "corrupted", "filtered", "protected",
                 "suspicious", "infected")


def _merged(infos: list[NoticeInfo]) -> NoticeInfo:
    """One notice's facts about several groups' outcomes of the same message."""
    if len(infos) == 1:
        return infos[0]
    first = infos[0]
    worst = max((i.status for i in infos),
                key=lambda s: _STATUS_ORDER.index(s) if s in _STATUS_ORDER else 0)
    return dataclasses.replace(
        first,
        recipients=tuple(dict.fromkeys(r for i in infos for r in i.recipients)),
        status=worst,
        threats=tuple(dict.fromkeys(t for i in infos for t in i.threats)),
        objects=_merged_objects(o for i in infos for o in i.objects),
        group=", ".join(i.group for i in infos),
        reject_reply=next((i.reject_reply for i in infos if i.reject_reply), ""),
        delivered=any(i.delivered for i in infos),
        outcomes=tuple(o for i in infos for o in i.group_outcomes()),
    )


def _all_empty(line: str, values: Mapping[str, str]) -> bool:
    """Whether ``line`` uses macros and every one of them is known and empty."""
    names = [a or b for a, b in _MACRO.findall(line.replace("$$", ""))]
    return bool(names) and all(n in values and not values[n].strip() for n in names)


def _merged_objects(objects: Iterable[tuple[str, str, str]]) -> tuple[tuple[str, str, str], ...]:
    """Each object once, with every reason the groups found (two groups filtering the same
    attachment by name and by type list it once, with both reasons)."""
    reasons: dict[tuple[str, str], list[str]] = {}
    for path, status, reason in objects:
        found = reasons.setdefault((path, status), [])
        if reason and reason not in found:
            found.append(reason)
    return tuple((path, status, ", ".join(found)) for (path, status), found in reasons.items())


def _compose(
    policy: Any,
    info: NoticeInfo,
    envelope_to: tuple[str, ...],
    subject: str,
    body: str,
    original_headers: bytes | None,
) -> bytes:
    hostname = info.hostname if _HOSTNAME_RE.match(info.hostname or "") else "localhost"
    sender = _one_line(getattr(policy, "notice_from", "") or "") or f"MAILER-DAEMON@{hostname}"
    # A non-ASCII address cannot be written with RFC 2047 encoded words; such a notice can only
    # travel over SMTPUTF8 anyway, so its header is written as UTF-8 (RFC 6532).
    ascii_only = all(a.isascii() for a in envelope_to) and _addr_spec_ascii(sender)
    out_policy = _POLICY if ascii_only else _POLICY.clone(utf8=True)

    msg = EmailMessage(policy=out_policy)
    msg["From"] = sender
    msg["To"] = ", ".join(envelope_to)
    msg["Subject"] = subject
    msg["Date"] = _date(info.date)
    msg["Message-ID"] = make_msgid(idstring="lmsav", domain=hostname)
    msg["Auto-Submitted"] = "auto-generated"
    # Quoted-printable keeps a non-ASCII body 7-bit clean: qmail, for one, relays 8-bit text
    # unchanged to servers that never announced 8BITMIME. An SMTPUTF8 notice is 8-bit anyway.
    cte = "quoted-printable" if ascii_only and not body.isascii() else None
    msg.set_content(body, charset="utf-8", cte=cte)
    if original_headers:
        headers = _header_block(original_headers)
        cte = "quoted-printable" if ascii_only and not headers.isascii() else None
        msg.add_attachment(headers, subtype="rfc822-headers", disposition="inline", cte=cte)
        del msg.get_payload()[1]["MIME-Version"]
    return msg.as_bytes(policy=out_policy)


class _NoticePolicy(EmailPolicy):
    """The default policy, but a folded Subject keeps its first words on the Subject line.

    The email package moves a whole subject that starts with a special character (the common
    "[AV] …") onto a continuation line, and its own parser then reads the subject back with a
    leading space.
    """

    def fold(self, name: str, value: Any) -> str:
        return _keep_on_first_line(name, super().fold(name, value), self)

    def fold_binary(self, name: str, value: Any) -> bytes:
        charset = "utf-8" if self.utf8 else "ascii"
        folded = super().fold_binary(name, value).decode(charset, "surrogateescape")
        return _keep_on_first_line(name, folded, self).encode(charset, "surrogateescape")


def _keep_on_first_line(name: str, folded: str, policy: EmailPolicy) -> str:
    head = f"{name}:{policy.linesep} "
    if name.lower() != "subject" or not folded.startswith(head):
        return folded
    first, linesep, rest = folded[len(head):].partition(policy.linesep)
    line = f"{name}: {first}"
    limit = policy.max_line_length or len(line)
    if len(line) > limit:
        # Every space of an unstructured header is folding white space.
        cut = line.rfind(" ", len(name) + 2, limit + 1)
        if cut > 0:
            line = line[:cut] + policy.linesep + line[cut:]
    return line + linesep + rest


_POLICY = _NoticePolicy()


def _forges_sender(policy: Any, info: NoticeInfo) -> bool:
    """True when a threat is known to forge sender addresses, so the sender is likely innocent."""
    patterns = tuple(getattr(policy, "no_sender_notice", ()) or ())
    if not patterns:
        return False
    return any(match_pattern(p, name) for p in patterns for _, name in info.threats)


def _parse_template(path: Path) -> _NoticeTemplate:
    text = _read_text(path).lstrip("\ufeff").replace("\r\n", "\n")
    first, _, rest = text.partition("\n")
    if not first.lower().startswith("subject:"):
        raise TemplateError(f"{path}: the first line must be 'Subject: …'")
    if rest and not rest.startswith("\n"):
        raise TemplateError(f"{path}: the Subject line must be followed by an empty line")
    return _NoticeTemplate(
        subject=string.Template(first[len("subject:"):].strip()),
        body=string.Template(rest[1:]),
        source=path,
    )


def _parse_strings(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{path}: invalid TOML: {exc}") from None
    tables: dict[str, dict[str, str]] = {}
    for table, entries in data.items():
        if table not in _STRING_TABLES or not isinstance(entries, dict):
            raise TemplateError(
                f"{path}: unknown entry {table!r}; expected the tables {', '.join(_STRING_TABLES)}"
            )
        for key, value in entries.items():
            if not isinstance(value, str):
                raise TemplateError(f"{path}: [{table}] {key} must be a string")
        tables[table] = dict(entries)
    return tables


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(
            f"{path}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def _header_block(message: bytes) -> str:
    """The header block of a message (or of a header block), at most MAX_ATTACHED_HEADERS."""
    head = message[: MAX_ATTACHED_HEADERS + 4].replace(b"\r\n", b"\n")
    head = head.split(b"\n\n", 1)[0]
    if len(head) > MAX_ATTACHED_HEADERS:
        head = head[: head.rfind(b"\n", 0, MAX_ATTACHED_HEADERS) + 1 or MAX_ATTACHED_HEADERS]
    return head.decode("utf-8", errors="replace").rstrip("\n") + "\n"


def _date(value: str) -> str:
    """The processing date, normalised; now when it is missing or unreadable."""
    try:
        return format_datetime(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError):
        return formatdate(localtime=True)


def _one_line(text: str) -> str:
    # A header value must not contain line breaks: a subject could otherwise inject headers.
    return " ".join(text.split())


def _address(value: str) -> str:
    """An envelope address without surrounding space or angle brackets; "" for the null sender."""
    value = (value or "").strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    return value


def _addr_spec_ascii(value: str) -> bool:
    """Whether the addresses of a header value are ASCII (display names may be encoded)."""
    addr_specs = re.findall(r"<([^<>]*)>", value) or [value]
    return all(a.isascii() for a in addr_specs)


def _name(value: Any) -> str:
    return str(getattr(value, "value", value)).lower()


def _names(values: Iterable[Any] | None) -> frozenset[str]:
    return frozenset(_name(v) for v in (values or ()))


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    result = []
    for value in values:
        if value and value.lower() not in seen:
            seen.add(value.lower())
            result.append(value)
    return tuple(result)
