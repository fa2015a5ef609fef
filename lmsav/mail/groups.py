"""Mail groups: ``groups.d/*.toml`` → per-recipient policies, matched by sender and recipient.

One group per file, named by the file's stem. ``default.toml`` (shipped inside the package,
overridable key by key by an administrator's ``groups.d/default.toml``) holds the default group,
which applies when no other group matches; any key a group does not set falls back to it.

:class:`GroupPolicy` below is the one table of group settings: each field carries its default,
its kind (what is allowed, how it is read and written back) and a one-line help, as in
:mod:`lmsav.config`. Loading, validation, ``groups show`` and the man page checks walk that table.

Patterns (``match_pattern``): a glob, matched case-insensitively against the whole text with
:mod:`fnmatch`, or ``re:`` followed by a Python regular expression, which must match the whole
text (``re.fullmatch``, case-insensitive) — write ``re:.*mydoom.*`` to match anywhere. Address
patterns (``senders``, ``recipients``) add one rule: a pattern without ``@`` is matched against the
address's domain only, and a leading ``*.`` then matches the domain itself as well as its
subdomains (``*.example.com`` matches ``a@example.com`` and ``a@mx.example.com``), while
``*@example.com`` matches that domain only and ``*@*.example.com`` its subdomains only.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import (
    BOOLEAN,
    NATURAL,
    OPTIONAL_PATH,
    SECONDS,
    SIZE,
    ConfigError,
    Kind,
    _choice,
    _read_toml,
    _show,
    _toml_value,
    setting,
)
from ..scanner.limits import Limits

# "hold": the message kept intact and delivered to none of the group's recipients, for the
# administrator to release or delete (the MTA's hold queue, the spool's hold/, or the backup).
ACTIONS = ("skip", "warn", "drop", "reject", "cure", "delete", "hold")
STATUSES = ("infected", "suspicious", "protected", "corrupted", "error", "filtered")
DEFAULT_GROUP = "default"
BUILT_IN = "built-in default"

_SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "groups.d"


def shipped_groups_dir() -> Path:
    """The groups shipped inside the package: only ``default.toml``."""
    return _SHIPPED_DIR


def groups_dir(config_file: Path) -> Path:
    """The administrator's group directory: ``groups.d/`` next to the main configuration file."""
    return Path(config_file).parent / "groups.d"


# -- patterns ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def _regex(expression: str) -> re.Pattern[str]:
    return re.compile(expression, re.IGNORECASE)


def match_pattern(pattern: str, text: str) -> bool:
    """Whether ``text`` matches a glob, or a ``re:`` regular expression; both whole-text, any case.

    Globs follow :mod:`fnmatch` (``*``, ``?``, ``[...]``); a ``re:`` expression is compiled once
    (cached) and must match all of ``text`` (``re.fullmatch``), so ``re:.*worm.*`` finds a word
    anywhere. Case is ignored in both.
    """
    if pattern.startswith("re:"):
        return _regex(pattern[3:]).fullmatch(text) is not None
    return fnmatch.fnmatchcase(text.lower(), pattern.lower())


def _match_domain(pattern: str, domain: str) -> bool:
    """A domain pattern: ``*.example.com`` matches example.com itself and its subdomains."""
    if match_pattern(pattern, domain):
        return True
    return pattern.startswith("*.") and not pattern.startswith("re:") and (
        domain.lower() == pattern[2:].lower())


def _normalize(address: str) -> str:
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    return address.lower()


def _domain(address: str) -> str:
    return address.rpartition("@")[2] if "@" in address else ""


def match_address(pattern: str, address: str) -> bool:
    """Whether an envelope address matches an address pattern (see the module's docstring).

    ``re:`` and patterns with ``@`` are matched against the whole address, other patterns against
    its domain. The null sender (``""`` or ``<>``) matches ``*`` and patterns that match "".
    """
    address = _normalize(address)
    if pattern.startswith("re:") or "@" in pattern:
        return match_pattern(pattern, address)
    return _match_domain(pattern, _domain(address))


# -- kinds of group values -----------------------------------------------------------------------

class _Invalid(ValueError):
    """A value not allowed, with a detail worth showing (a regular expression's error)."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(value)
    if not all(isinstance(item, str) and item for item in value):
        raise ValueError(value)
    return tuple(value)


def _check_regex(pattern: str) -> None:
    if pattern.startswith("re:"):
        try:
            _regex(pattern[3:])
        except re.error as err:
            raise _Invalid(f"{_show(pattern)} is not a valid regular expression: {err}") from None


def _patterns(value: Any) -> tuple[str, ...]:
    patterns = _strings(value)
    for pattern in patterns:
        _check_regex(pattern)
    return patterns


def _domain_patterns(value: Any) -> tuple[str, ...]:
    patterns = _patterns(value)
    for pattern in patterns:
        if not pattern.startswith("re:") and "@" in pattern:
            raise _Invalid(f"{_show(pattern)} is an address, not a domain")
    return patterns


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value


def _statuses(value: Any) -> tuple[str, ...]:
    items = _strings(value)
    for item in items:
        if item not in STATUSES:
            raise ValueError(item)
    return items


_ADDRESS_RE = re.compile(r"[^\s<>@\"]+(@[^\s<>@\"]+)?")


def _address(value: Any) -> str:
    if not isinstance(value, str) or not _ADDRESS_RE.fullmatch(value):
        raise ValueError(value)
    return value


def _addresses(value: Any) -> tuple[str, ...]:
    return tuple(_address(item) for item in _strings(value))


_REPLY_RE = re.compile(r"[45]\d\d( [45]\.\d{1,3}\.\d{1,3})? \S[^\r\n]*")


def _reply(value: Any) -> str:
    if not isinstance(value, str) or not _REPLY_RE.fullmatch(value):
        raise ValueError(value)
    return value


def _prefixes(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError(value)
    for status, prefix in value.items():
        if status not in STATUSES or not isinstance(prefix, str) or "\n" in prefix:
            raise ValueError(value)
    return dict(value)


def _optional(kind: Kind) -> Kind:
    """A per-group limit: ``""`` (TOML has no null) means the global value from ``[limits]``."""
    return Kind(f'{kind.allowed}; or "" for the global [limits] value',
                lambda value: None if value == "" else kind.parse(value),
                lambda value: "" if value is None else kind.dump(value))


_STATUS_NAMES = ", ".join(f'"{s}"' for s in STATUSES)

INTEGER = Kind("an integer", _integer)
ADDRESS_PATTERNS = Kind(
    'a list of address patterns like ["user@example.com", "*@example.com", "*.example.com", '
    '"re:..."]', _patterns, list)
DOMAIN_PATTERNS = Kind(
    'a list of domain patterns like ["example.com", "*.example.org", "re:..."]',
    _domain_patterns, list)
PATTERNS = Kind('a list of glob or "re:" patterns like ["*.exe", "re:.*worm.*"]', _patterns, list)
STATUS_LIST = Kind(f"a list of statuses from {_STATUS_NAMES}", _statuses, list)
ACTION = _choice(*ACTIONS)
UNCURABLE_ACTION = _choice(*(action for action in ACTIONS if action != "cure"))
SCAN_POLICY = _choice("message", "combined")
UNPROTECTED = _choice("skip", "scan")
ADDRESS = Kind('a mail address like "lmsav@example.com"', _address)
ADDRESSES = Kind('a list of mail addresses like ["postmaster@example.com"]', _addresses, list)
REPLY = Kind('an SMTP reply on one line like "550 5.7.1 text" (a 4xx or 5xx code, then text)',
             _reply)
SUBJECT_PREFIX = Kind(f'a table of status = "prefix" like {{ infected = "[VIRUS] " }}, statuses '
                      f"{_STATUS_NAMES}", _prefixes, dict)

# Names of threats whose senders are forged: mass-mailing worms and phishing. Their "sender" is an
# innocent bystander, so a notice would only be more unwanted mail (backscatter).
FORGING_THREATS = (
    "*Eicar*", "Worm.*", "*.Worm.*", "*Email-Worm*", "*I-Worm*", "*Mydoom*", "*Netsky*",
    "*Bagle*", "*Beagle*", "*Sober*", "*Klez*", "*Sobig*", "*Mimail*", "*Lovgate*", "*Zafi*",
    "*Bugbear*", "*Yaha*", "*Swen*", "*Dumaru*", "*Mytob*", "*Warezov*", "*Stration*", "*Phish*",
    "Sanesecurity.*",
)


# -- the table of group settings -----------------------------------------------------------------

def _unhashed(default_factory: Any, kind: Kind, help: str) -> Any:
    # A table value (dict) cannot be hashed; the policy stays hashable without it.
    return field(default_factory=default_factory, hash=False,
                 metadata={"kind": kind, "help": help, "option": None})


@dataclass(frozen=True)
class GroupPolicy:
    """One group's effective settings: who it applies to and what happens to their mail."""

    name: str
    priority: int = setting(
        0, INTEGER, "Groups are tried highest priority first (ties by name); the first whose "
                    "senders and recipients both match applies.")
    senders: tuple[str, ...] = setting(
        ("*",), ADDRESS_PATTERNS, "The envelope sender matches one of these patterns.")
    recipients: tuple[str, ...] = setting(
        ("*",), ADDRESS_PATTERNS, "The envelope recipient matches one of these patterns.")
    scan_policy: str = setting(
        "message", SCAN_POLICY,
        '"message": scan the message as one object, the worst status decides; "combined": '
        "then part by part, and actions apply to the parts.")
    max_scan_depth: int | None = setting(
        None, _optional(NATURAL), "Containers nested deeper than this are not opened.")
    max_file_size: int | None = setting(
        None, _optional(SIZE), "Parts and members larger than this are not scanned.")
    max_scan_size: int | None = setting(
        None, _optional(SIZE), "Stop after this many bytes extracted and scanned from a message.")
    max_scan_time: float | None = setting(
        None, _optional(SECONDS), "Time allowed for one message, in seconds.")
    infected_action: str = setting("reject", ACTION, "What is done with infected objects.")
    suspicious_action: str = setting("reject", ACTION, "What is done with suspicious objects.")
    protected_action: str = setting(
        "skip", ACTION, "What is done with encrypted or password-protected objects.")
    corrupted_action: str = setting("skip", ACTION, "What is done with corrupted objects.")
    # Fail closed: an unscanned message (a limit hit, a read error) could hide anything.
    error_action: str = setting(
        "reject", ACTION, "What is done with objects that could not be scanned.")
    filtered_action: str = setting(
        "warn", ACTION, "What is done with objects the content filter caught.")
    uncurable_action: str = setting(
        "reject", UNCURABLE_ACTION,
        'What is done instead of "cure" when an object cannot be cured.')
    virus_name_list: tuple[str, ...] = setting(
        (), PATTERNS, "Threat names handled by virus_name_action instead of the status's action.")
    virus_name_action: str = setting(
        "drop", ACTION, "What is done with objects whose threat matches virus_name_list.")
    reject_reply: str = setting(
        "550 5.7.1 Message rejected by the anti-virus policy ($threats)", REPLY,
        "The SMTP reply of a rejection; $threats stands for the threat names or, when no "
        'threat was found, for what was (such as "filtered: setup.exe (name *.exe)").')
    add_headers: bool = setting(
        True, BOOLEAN, "Add X-AV-Checked, X-AV-Status and X-AV-Threats to delivered messages.")
    subject_prefix: Mapping[str, str] = _unhashed(
        dict, SUBJECT_PREFIX, "Text put before the Subject: of delivered messages, per status.")
    filter_names: tuple[str, ...] = setting(
        (), PATTERNS, "Attachments (and archive members) whose name matches are filtered.")
    filter_names_exclude: tuple[str, ...] = setting(
        (), PATTERNS, "Attachment names never filtered by name.")
    filter_types: tuple[str, ...] = setting(
        (), PATTERNS,
        "Attachments whose real MIME type (sniffed by libmagic) matches are filtered.")
    filter_type_mismatch: bool = setting(
        False, BOOLEAN, "Filter attachments whose declared type or extension disagrees with the "
                        "real type.")
    filter_max_size: int = setting(
        0, SIZE, "Attachments larger than this are filtered; 0 turns the size filter off.")
    notify_sender: tuple[str, ...] = setting(
        (), STATUS_LIST, "Statuses for which the sender gets a notice.")
    notify_recipients: tuple[str, ...] = setting(
        ("infected",), STATUS_LIST, "Statuses for which the recipients get a notice.")
    notify_admin: tuple[str, ...] = setting(
        ("infected", "suspicious"), STATUS_LIST,
        "Statuses for which admin_addresses get a notice.")
    admin_addresses: tuple[str, ...] = setting(
        (), ADDRESSES, "Where administrator notices go; none are sent while empty.")
    notice_from: str = setting(
        "lmsav@localhost", ADDRESS, "Envelope sender and From: of notices.")
    no_sender_notice: tuple[str, ...] = setting(
        FORGING_THREATS, PATTERNS,
        "Threat names known to forge their sender: the sender gets no notice for them.")
    templates_dir: Path | None = setting(  # noqa: RUF009 - setting() returns a field
        None, OPTIONAL_PATH, 'Directory of notice templates; "" means the shipped templates.')
    backup: tuple[str, ...] = setting(
        ("infected", "suspicious"), STATUS_LIST,
        "Statuses whose original messages are kept in backup/ before a modifying action.")
    # Where each key came from (a file, or "built-in default"); not part of the policy itself.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False,
                                       repr=False)

    def action(self, status: str) -> str:
        """The action for a status name such as ``"infected"``."""
        return getattr(self, f"{status}_action")

    def limits(self, base: Limits) -> Limits:
        """The engine limits for this group: ``base`` with the group's own limits applied."""
        own = {key: getattr(self, key) for key in LIMIT_KEYS if getattr(self, key) is not None}
        if "max_scan_time" in own:
            own["max_scan_time"] = float(own["max_scan_time"])
        return dataclasses.replace(base, **own)


@dataclass(frozen=True)
class Spec:
    """One key of a group file, as documentation and validation see it."""

    key: str
    kind: Kind
    help: str
    dc_field: dataclasses.Field

    def default(self) -> Any:
        if self.dc_field.default_factory is not dataclasses.MISSING:
            return self.dc_field.default_factory()
        return self.dc_field.default


SPECS: dict[str, Spec] = {
    f.name: Spec(f.name, f.metadata["kind"], f.metadata["help"], f)
    for f in dataclasses.fields(GroupPolicy) if "kind" in f.metadata
}
LIMIT_KEYS = ("max_scan_depth", "max_file_size", "max_scan_size", "max_scan_time")
# Keys that say whom a group applies to; the default group applies when no other does.
MATCH_KEYS = ("priority", "senders", "recipients")
# Keys of default.toml only: they concern all mail, not one group.
TOP_LEVEL: dict[str, tuple[Kind, Any, str]] = {
    "protected_domains": (
        DOMAIN_PATTERNS, (),
        ("Mail neither from nor to one of these domains is not protected; empty means all mail "
         "is.")),
    "unprotected": (
        UNPROTECTED, "skip",
        '"skip": mail that is not protected passes unscanned; "scan": it is scanned anyway.'),
}


# -- the groups ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Groups:
    """Every group: the default and the others, highest priority first (ties by name)."""

    default: GroupPolicy
    groups: list[GroupPolicy]
    protected_domains: tuple[str, ...] = ()
    unprotected: str = "skip"
    # Where protected_domains and unprotected came from.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def resolve(self, sender: str, recipient: str) -> GroupPolicy:
        """The group of one recipient: the first whose sender and recipient patterns match."""
        for group in self.groups:
            if (any(match_address(p, sender) for p in group.senders)
                    and any(match_address(p, recipient) for p in group.recipients)):
                return group
        return self.default

    def split(self, sender: str, recipients: Iterable[str]) -> list[tuple[GroupPolicy, list[str]]]:
        """Recipients grouped by their group, groups in order of their first recipient."""
        by_name: dict[str, tuple[GroupPolicy, list[str]]] = {}
        for recipient in recipients:
            group = self.resolve(sender, recipient)
            by_name.setdefault(group.name, (group, []))[1].append(recipient)
        return list(by_name.values())

    def is_protected(self, sender: str, recipients: Iterable[str]) -> bool:
        """Whether a message is scanned at all: from or to a protected domain (all when none)."""
        if not self.protected_domains:
            return True
        domains = [_domain(_normalize(address)) for address in (sender, *recipients)]
        return any(_match_domain(pattern, domain)
                   for domain in domains if domain for pattern in self.protected_domains)

    def get(self, name: str) -> GroupPolicy | None:
        """A group by name, the default included."""
        if name == DEFAULT_GROUP:
            return self.default
        return next((group for group in self.groups if group.name == name), None)

    def names(self) -> list[str]:
        return [group.name for group in self.groups] + [DEFAULT_GROUP]


# -- loading -------------------------------------------------------------------------------------

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def load_groups(directory: Path | None) -> Groups:
    """The shipped default group, then ``<directory>/*.toml`` when the directory exists.

    ``<directory>/default.toml`` overrides the shipped default key by key; every other file is one
    group named by its stem, whose unset keys fall back to the (merged) default group.
    """
    shipped = shipped_groups_dir() / f"{DEFAULT_GROUP}.toml"
    values, top, sources = _read_group_file(shipped, DEFAULT_GROUP)
    files: list[Path] = []
    if directory is not None:
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"{directory}: not a directory")
        if directory.is_dir():
            files = sorted(path for path in directory.glob("*.toml")
                           if path.is_file() and not path.name.startswith("."))
    default_file = shipped
    for path in files:
        if path.stem == DEFAULT_GROUP:
            user_values, user_top, user_sources = _read_group_file(path, DEFAULT_GROUP)
            values.update(user_values)
            top.update(user_top)
            sources.update(user_sources)
            default_file = path

    default_sources = {key: sources.get(key, BUILT_IN) for key in SPECS if key not in MATCH_KEYS}
    default_sources["name"] = str(default_file)
    default = GroupPolicy(name=DEFAULT_GROUP, sources=default_sources, **values)

    groups = []
    inherited = {key: getattr(default, key) for key in SPECS if key not in MATCH_KEYS}
    for path in files:
        if path.stem == DEFAULT_GROUP:
            continue
        own, _top, own_sources = _read_group_file(path, path.stem)
        group_sources = {key: default_sources.get(key, BUILT_IN) for key in SPECS}
        group_sources.update(own_sources)
        group_sources["name"] = str(path)
        groups.append(GroupPolicy(name=path.stem, sources=group_sources,
                                  **{**inherited, **own}))
    groups.sort(key=lambda group: (-group.priority, group.name))
    top_values = {key: top.get(key, default_value)
                  for key, (_kind, default_value, _help) in TOP_LEVEL.items()}
    top_sources = {key: sources.get(key, BUILT_IN) for key in TOP_LEVEL}
    return Groups(default, groups, sources=top_sources, **top_values)


def _read_group_file(path: Path, name: str) -> tuple[dict[str, Any], dict[str, Any],
                                                      dict[str, str]]:
    """Validate one group file: its group settings, its top-level settings, their sources."""
    where = str(path)
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(f"{where}: group name {_show(name)}: expected a file name of letters, "
                          f"digits, '_', '-' and '.', ending in .toml")
    is_default = name == DEFAULT_GROUP
    values: dict[str, Any] = {}
    top: dict[str, Any] = {}
    for key, raw in _read_toml(path).items():
        label = f"{where}: {key} = {_show(raw)}"
        if key == "name":
            if raw != name:
                raise ConfigError(f"{label}: expected {_show(name)}, the file's name without "
                                  f".toml (or no name)")
        elif key in TOP_LEVEL:
            if not is_default:
                raise ConfigError(f"{label}: expected only in {DEFAULT_GROUP}.toml; it concerns "
                                  f"all mail, not one group")
            top[key] = _parse(TOP_LEVEL[key][0], raw, label)
        elif key in SPECS:
            if is_default and key in MATCH_KEYS:
                raise ConfigError(f"{label}: expected no {key} in {DEFAULT_GROUP}.toml; the "
                                  f"default group applies when no other group matches")
            values[key] = _parse(SPECS[key].kind, raw, label)
        else:
            raise ConfigError(f"{where}: {_unknown_key(key, raw, is_default)}")
    return values, top, dict.fromkeys([*values, *top], where)


def _parse(kind: Kind, raw: Any, label: str) -> Any:
    try:
        return kind.parse(raw)
    except _Invalid as err:
        raise ConfigError(f"{label}: expected {kind.allowed}; {err.detail}") from None
    except (TypeError, ValueError):
        raise ConfigError(f"{label}: expected {kind.allowed}") from None


def _unknown_key(key: str, raw: Any, is_default: bool) -> str:
    known = [k for k in SPECS if not (is_default and k in MATCH_KEYS)]
    known += list(TOP_LEVEL) if is_default else ["name"]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]}?" if close else f"keys are {', '.join(known)}"
    return f"unknown key {key} = {_show(raw)}; {hint}"


# -- for the command line ------------------------------------------------------------------------

def toml_text(value: Any) -> str:
    """A value as written in a group file (an empty table as ``{}``)."""
    return "{}" if value == {} else _toml_value(value)


def describe(policy: GroupPolicy, sources: bool = False) -> str:
    """The effective settings of a group as a TOML file that loads back to the same group.

    Written to ``groups.d/<name>.toml`` it yields the same policy. With ``sources`` every line
    ends with a comment naming the file the value came from.
    """

    def line(key: str, value: Any) -> str:
        text = f"{key} = {toml_text(value)}"
        if sources:
            text += f"  # from {policy.sources.get(key, BUILT_IN)}"
        return text

    out = [line("name", policy.name)]
    for key, spec in SPECS.items():
        if policy.name == DEFAULT_GROUP and key in MATCH_KEYS:
            continue
        out.append(line(key, spec.kind.dump(getattr(policy, key))))
    return "\n".join(out) + "\n"


def summary_rows(groups: Groups) -> list[dict]:
    """One row per group for ``groups list``, in the order they are tried; the default last.

    ``default`` is True only for the default group, which applies when no other group matches
    (its ``priority`` is the table's 0 but plays no part).
    """
    return [{
        "name": group.name,
        "priority": group.priority,
        "senders": list(group.senders),
        "recipients": list(group.recipients),
        "file": group.sources.get("name", BUILT_IN),
        "default": group is groups.default,
    } for group in [*groups.groups, groups.default]]
