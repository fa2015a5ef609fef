"""Mail policy: one message and its envelope in, what happens to it per recipient group out.

Knows nothing about any MTA. The message is scanned by the engine (once per distinct set of
limits), recipients are split by group, and each group's actions, headers and content filter
are applied to its own copy, so a lax group never weakens a strict one. What concerns the
message as a whole comes once, after every group: one backup entry recording every group, and
one notice per person (``notify.notices_for_groups``).

"cure" is the engine's one cure (``scanner.cure``), removing what the group acts on: a status
is bad when the group's action for it is not "skip", as the sweep decides with its policy.
Under ``scan_policy = "message"`` the object cured is the message (its bad parts, bad members
inside them, and the attachments the content filter caught removed); under "combined" it is
each part (an archive rebuilt without its bad members). An object that is itself what was
found — a plain infected attachment, an attachment the content filter caught — is not curable
under "combined", and the group's ``uncurable_action`` applies to it.
"""

from __future__ import annotations

import email.header
import string
import time
from email.utils import formatdate

from .. import __version__
from ..hostname import host_name
from ..scanner.containers import mimeedit
from ..scanner.engine import Engine
from ..scanner.limits import Limits
from ..scanner.objects import PATH_SEP, ObjectResult, Status, Verdict
from .filter import UNPLACED, find_filtered, parts_of, unplaced
from .groups import match_pattern
from .notify import NoticeInfo, Templates, notices_for_groups
from .outcome import GroupOutcome, MessageOutcome, ObjectAction

# Actions that decide for the whole message, and how strict each is when parts disagree: a
# hold beats a drop (nothing is lost while the administrator looks), a reject beats both.
MESSAGE_ACTIONS = ("reject", "hold", "drop")
_STRICTNESS = {"skip": 0, "warn": 1, "cure": 2, "delete": 3, "drop": 4, "hold": 5, "reject": 6}
HEADERS = ("X-AV-Checked", "X-AV-Status", "X-AV-Threats")
FILTERED = "filtered"
UNCURABLE = "uncurable"
# Longest SMTP reply text sent (RFC 5321 allows 512 octets per reply line, code included).
MAX_REPLY = 400


class MailProcessor:
    """Applies groups' policies to messages. One per process; reuses engines per limit set."""

    def __init__(self, database, groups, base_limits: Limits, backup_store=None, stats=None,
                 hostname: str | None = None, tmp_root: str | None = None):
        """``stats``: the statistics store each outcome is recorded in (``lmsav.stats.store``);
        None records nothing (``lmsav mail check`` without --record)."""
        self.db = database
        self.groups = groups
        self.base_limits = base_limits
        self.backup_store = backup_store
        self.hostname = host_name(hostname or "")
        self.stats = stats
        self.tmp_root = tmp_root
        self._engines: dict[Limits, Engine] = {}
        self._templates: dict = {}

    # -- entry point -----------------------------------------------------------------------------
    def process(self, raw: bytes, sender: str, recipients: list[str],
                group: str | None = None, queue_id: str = "") -> MessageOutcome:
        """Apply the policy; ``group`` forces one group for every recipient (a per-connection
        setting of the MTA) instead of resolving each recipient; ``queue_id`` (the MTA's) goes
        into the statistics."""
        forced = None
        if group:
            forced = self.groups.get(group)
            if forced is None:
                raise KeyError(f"no recipient group named {group!r}")
        started = time.time()
        t0 = time.monotonic()
        heads = _safe_headers(raw)
        subject = _decoded(heads.get("subject", ""))
        message_id = heads.get("message-id", "").strip()
        if forced is not None:
            split = [(forced, list(recipients))]
        elif recipients:
            split = self.groups.split(sender, recipients)
        else:
            split = [(self.groups.resolve(sender, ""), [])]
        scanned = self.groups.is_protected(sender, recipients) or self.groups.unprotected != "skip"
        outcomes: list[GroupOutcome] = []
        noticed: list[tuple[object, NoticeInfo]] = []
        backed_up: list[GroupOutcome] = []
        verdicts: dict[Limits, Verdict] = {}
        leaves = _leaves(raw)
        for policy, rcpts in split:
            if not scanned:
                outcomes.append(GroupOutcome(policy.name, rcpts, "unscanned", "skip",
                                             _strip_forged(raw)))
                continue
            limits = policy.limits(self.base_limits)
            if limits not in verdicts:
                verdicts[limits] = self._engine(limits).scan_bytes(raw, "message")
            verdict = verdicts[limits]
            group, filtered = self._apply(policy, rcpts, verdict, leaves, raw)
            outcomes.append(group)
            # A held message is always kept: where the MTA has no hold queue (qmail) the
            # backup is the one copy the administrator can release.
            if group.action == "hold" or (group.action != "skip"
                                          and group.status in policy.backup):
                backed_up.append(group)
            if group.status != "clean":
                noticed.append((policy, self._notice_info(
                    policy, group, verdict, filtered, sender, subject, message_id, started)))
        first = next(iter(verdicts.values()), None)
        threats = sorted({t.name for v in verdicts.values() for _, t in v.threats})
        worst = max((g.status for g in outcomes), key=_status_rank, default="clean")
        outcome = MessageOutcome(
            message_id=message_id, sender=sender, recipients=list(recipients), subject=subject,
            size=len(raw), status=worst, threats=threats, groups=outcomes,
            verdict=first.to_json() if first is not None else None,
            scan_seconds=time.monotonic() - t0, database_version=self.db.version,
            started=started)
        if backed_up and self.backup_store is not None:
            backup_id = self._backup(raw, outcome)
            for g in backed_up:
                g.backup_id = backup_id
        if noticed:
            outcome.notices = notices_for_groups(
                noticed, self._templates_for, original_headers=raw[:mimeedit.header_end(raw)])
            for g in outcomes:
                g.notices = [n for n in outcome.notices if g.group in n.groups]
        if self.stats is not None:
            self.stats.record(outcome.stats_event(queue_id))  # never raises, never waits long
        return outcome

    def _templates_for(self, policy):
        """Templates are read once per process per templates directory, not per message."""
        key = policy.templates_dir
        if key not in self._templates:
            self._templates[key] = Templates.load(key)
        return self._templates[key]

    def _engine(self, limits: Limits) -> Engine:
        if limits not in self._engines:
            self._engines[limits] = Engine(self.db, limits, tmp_root=self.tmp_root)
        return self._engines[limits]

    # -- one group ---------------------------------------------------------------------------
    def _apply(self, policy, rcpts, verdict: Verdict, leaves, raw: bytes):
        """The group's outcome, and the filtered parts (for its notices)."""
        root = verdict.root
        parts = parts_of(verdict)
        filtered = {}
        if _filters_on(policy) and leaves:
            for f in find_filtered(policy, leaves, verdict):
                filtered.setdefault(f.leaf, f)
        objects: list[ObjectAction] = []
        status = root.worst().label
        if status == "clean" and filtered:
            status = FILTERED
        engine = self._engine(policy.limits(self.base_limits))
        # Part by part only when every finding sits in a part of the parsed structure: what the
        # raw reading of a doubtful message found (raw<k>:…, more-parts) has no part to cut out.
        placed = not any(c.worst() != Status.CLEAN for c in unplaced(verdict))
        if policy.scan_policy == "combined" and parts and placed and UNPLACED not in filtered:
            action, out, reply = _Combined(self, policy, engine, raw, verdict, leaves, parts,
                                           filtered, objects).run()
        else:
            action, out, reply = self._whole(policy, engine, status, raw, verdict, filtered,
                                             objects)
        if action == "reject":
            reply = _reject_reply(policy, verdict, filtered, leaves)
        if out is not None:
            out = _stamp(out, policy, status, verdict, self.db.version)
        return GroupOutcome(policy.name, list(rcpts), status, action, out, reply,
                            objects), filtered

    def _whole(self, policy, engine, status: str, raw: bytes, verdict: Verdict, filtered,
               objects):
        """scan_policy = "message": the worst status decides for the message as one object."""
        if status == "clean":
            return "skip", _strip_forged(raw), ""
        names = _unique(t.name for _, t in verdict.threats)
        action = _action_for(policy, status, names)
        objects.append(ObjectAction(verdict.root.path, status, action, names,
                                    _first_reason(verdict.root, filtered)))
        if action == "cure":
            try:
                return "cure", _strip_forged(self._cure_message(policy, engine, raw, verdict,
                                                                filtered)), ""
            except _uncurable_errors() as err:
                action = policy.uncurable_action
                objects.append(ObjectAction(verdict.root.path, status, action, names,
                                            f"{UNCURABLE}: {err}"))
        extra = [(f.object, FILTERED, f.reason) for f in filtered.values()]
        return action, *self._message_result(policy, action, raw, verdict, status, extra)

    def _cure_message(self, policy, engine, raw: bytes, verdict: Verdict, filtered) -> bytes:
        """The message without its bad parts (by the group's statuses) and without the parts
        its content filter caught: a filtered attachment is itself what is blocked."""
        from ..scanner.cure import Uncurable

        if filtered and policy.filtered_action != "skip":
            if UNPLACED in filtered:
                raise Uncurable("a filtered part cannot be placed in the message")
            raw = mimeedit.rebuild_mail(raw, {index: None for index in filtered})
            verdict = engine.scan_bytes(raw, verdict.root.path)
        return _cure(engine, raw, verdict.root, policy)

    def _message_result(self, policy, action: str, raw: bytes, verdict: Verdict,
                        status: str = "", extra=()):
        """(message, reply) of an action taken on the message as a whole."""
        # Nothing delivered; a held message stays with the front end (MTA hold queue, spool).
        if action in ("reject", "drop", "delete", "hold"):  # a rejection's reply: see _apply
            return None, ""
        if action == "warn":
            return _warning_message(raw, verdict, status or verdict.status.label, extra), ""
        return _strip_forged(raw), ""

    def _notice_info(self, policy, group: GroupOutcome, verdict: Verdict, filtered, sender,
                     subject, message_id, started) -> NoticeInfo:
        root = verdict.root
        return NoticeInfo(
            sender=sender, recipients=tuple(group.recipients), subject=subject,
            message_id=message_id, status=group.status, action=group.action,
            threats=tuple((p, t.name) for p, t in verdict.threats),
            objects=tuple((r.path, r.status.label, r.reason) for r in root.walk()
                          if r.status != Status.CLEAN)
            + tuple((f.object, FILTERED, f.reason) for f in filtered.values()),
            group=policy.name, date=formatdate(started, localtime=True),
            database_version=self.db.version, hostname=self.hostname,
            reject_reply=group.reject_reply, delivered=group.delivered)

    def _backup(self, raw: bytes, outcome: MessageOutcome) -> str:
        """One entry per message, recording what every group did."""
        return self.backup_store.save(raw, {
            "sender": outcome.sender, "recipients": list(outcome.recipients),
            "group": ", ".join(g.group for g in outcome.groups),
            "groups": [{"group": g.group, "recipients": list(g.recipients), "status": g.status,
                        "action": g.action} for g in outcome.groups],
            "status": outcome.status, "subject": outcome.subject,
            "message_id": outcome.message_id, "threats": list(outcome.threats),
            "actions": [g.action for g in outcome.groups], "verdict": outcome.verdict,
            "time": outcome.started, "database_version": self.db.version,
        })


class _Combined:
    """scan_policy = "combined": actions apply part by part; reject and drop take the message."""

    def __init__(self, processor, policy, engine, raw, verdict, leaves, parts, filtered, objects):
        self.processor, self.policy, self.engine = processor, policy, engine
        self.raw, self.verdict, self.filtered, self.objects = raw, verdict, filtered, objects
        self.leaves = {leaf.index: leaf for leaf in leaves}
        self.parts = parts

    def run(self):
        policy, root, objects = self.policy, self.verdict.root, self.objects
        bad = {i: c for i, c in self.parts.items()
               if any(r.worst() != Status.CLEAN for r in c)}
        own = root.status  # found on the message as a whole (raw match, MIME damage, limit)
        if not bad and not self.filtered:
            if own == Status.CLEAN:
                return "skip", _strip_forged(self.raw), ""
            names = _unique(t.name for t in root.threats)
            action = _action_for(policy, own.label, names)
            objects.append(ObjectAction(root.path, own.label, action, names, root.reason))
            if action == "cure":  # the message itself matched: nothing to cut out
                action = policy.uncurable_action
                objects.append(ObjectAction(root.path, own.label, action, names,
                                            f"{UNCURABLE}: the message itself matched"))
            return action, *self.processor._message_result(policy, action, self.raw,
                                                           self.verdict)
        too_deep = any(r.reason.startswith("limit: depth") for r in root.walk())
        if too_deep and not self.filtered and own <= Status.ERROR and all(
                r.worst() <= Status.ERROR for c in bad.values() for r in c):
            # Too deep to know: the whole message gets the error action.
            action = policy.error_action
            objects.append(ObjectAction(root.path, "error", action, [], "limit: depth"))
            return action, *self.processor._message_result(policy, action, self.raw,
                                                           self.verdict)
        decisive = "skip"
        edits: dict[int, bytes | None] = {}
        warnings: dict[int, str] = {}
        for index in sorted(set(bad) | set(self.filtered)):
            action = self._part(index, bad.get(index), edits, warnings)
            if _STRICTNESS[action] > _STRICTNESS[decisive]:
                decisive = action
        if decisive in MESSAGE_ACTIONS:
            return decisive, *self.processor._message_result(policy, decisive, self.raw,
                                                             self.verdict)
        try:
            out = self.raw
            for index, text in warnings.items():
                out = mimeedit.replace_with_text(out, index, text)
            if edits:
                out = mimeedit.rebuild_mail(out, edits)
        except mimeedit.RebuildError as err:
            # The parts cannot be cut out of this message: it is handled whole.
            action = policy.uncurable_action
            objects.append(ObjectAction(root.path, self.verdict.status.label, action, [],
                                        f"{UNCURABLE}: {err}"))
            return action, *self.processor._message_result(policy, action, self.raw,
                                                           self.verdict)
        return decisive, _strip_forged(out), ""

    def _part(self, index: int, children: list[ObjectResult] | None, edits, warnings) -> str:
        """Decide for one part; record the edit it needs; return its action."""
        policy = self.policy
        if children is not None:
            found = [r for c in children for r in c.walk() if r.status != Status.CLEAN]
            status = max(r.status for r in found).label
            names = _unique(t.name for r in found for t in r.threats)
            reason = next((r.reason for r in found if r.reason), "")
            path = children[0].path
        else:
            f = self.filtered[index]
            status, names, reason, path = FILTERED, [], f.reason, f.object
        action = _action_for(policy, status, names)
        if action == "cure":
            try:
                edits[index] = self._cure_part(index, children)
            except _uncurable_errors() as err:
                action, reason = policy.uncurable_action, f"{UNCURABLE}: {err}"
        self.objects.append(ObjectAction(path, status, action, names, reason))
        if action == "delete":
            edits[index] = None
        elif action == "warn":
            f = self.filtered.get(index)
            extra = [(f.object, FILTERED, f.reason)] if f is not None else []
            warnings[index] = _warning_text(self.verdict, children or [], extra)
        return action

    def _cure_part(self, index: int, children: list[ObjectResult] | None) -> bytes:
        """The part's new content without the members the group acts on (the part is the
        object): a part the content filter caught is itself what is blocked, never curable."""
        from ..scanner.cure import Uncurable

        if index in self.filtered and self.policy.filtered_action != "skip":
            f = self.filtered[index]
            raise Uncurable(f"the content filter blocks the part itself ({f.reason}); "
                            "cure cannot keep it")
        if not children or index not in self.leaves:
            raise Uncurable("the part cannot be placed in the message")
        leaf, *found_in_text = children
        if any(_acts_on(self.policy, r.status) for c in found_in_text for r in c.walk()):
            raise Uncurable("an encoded file inside the part's text is itself what was found")
        return _cure(self.engine, self.leaves[index].decoded(), leaf, self.policy)


# -- helpers ---------------------------------------------------------------------------------

_RANK = {"clean": 0, "unscanned": 0, "error": 1, "corrupted": 2, FILTERED: 3, "protected": 4,
         "suspicious": 5, "infected": 6}


def _status_rank(label: str) -> int:
    return _RANK.get(label, 0)


def _unique(names) -> list[str]:
    """Names in their first order, each once: a threat found by several signatures or in
    several places is shown once."""
    return list(dict.fromkeys(names))


def _uncurable_errors():
    from ..scanner.cure import Uncurable

    return (Uncurable, mimeedit.RebuildError)


def _cure(engine: Engine, data: bytes, result: ObjectResult, policy) -> bytes:
    """The engine's one cure, removing what the group acts on: a status is bad when the
    group's action for it is not "skip" (the rule the sweep follows with its policy)."""
    from ..scanner.cure import cure

    return cure(engine, data, result, bad=lambda status: _acts_on(policy, status))


def _acts_on(policy, status: Status) -> bool:
    return status != Status.CLEAN and policy.action(status.label) != "skip"


def _filters_on(policy) -> bool:
    return bool(policy.filter_names or policy.filter_types or policy.filter_type_mismatch
                or policy.filter_max_size)


def _action_for(policy, status: str, threat_names: list[str]) -> str:
    if status == "infected" and policy.virus_name_list and any(
            match_pattern(p, n) for p in policy.virus_name_list for n in threat_names):
        return policy.virus_name_action
    return getattr(policy, f"{status}_action", policy.error_action)


def _reject_reply(policy, verdict: Verdict, filtered, leaves) -> str:
    """The group's reply with ``$threats``: the threat names, or — when no threat was found —
    what was: each finding as "status: object (reason)", e.g. "filtered: setup.exe (name
    *.exe)" or "error: limit: depth 3". One line of printable ASCII."""
    names = _unique(t.name for _, t in verdict.threats)
    if not names:
        root = verdict.root
        named = {f"{root.path}{PATH_SEP}{leaf.name}": leaf.filename or leaf.name
                 for leaf in leaves}
        found = [(r.status.label, r.path, r.reason) for r in root.walk()
                 if r.status != Status.CLEAN]
        if policy.filtered_action != "skip":
            found += [(FILTERED, f.object, f.reason) for f in filtered.values()]
        for status, path, reason in found:
            what = "" if path == root.path else _shown_name(path, root.path, named)
            detail = f"{what} ({reason})" if what and reason else what or reason
            names.append(f"{status}: {detail}" if detail else status)
        names = _unique(names)
    threats = ", ".join(names) or "policy"
    reply = string.Template(policy.reject_reply).safe_substitute(threats=threats)
    reply = "".join(c if " " <= c <= "~" else "?" for c in " ".join(reply.split()))
    return reply if len(reply) <= MAX_REPLY else reply[:MAX_REPLY - 3] + "..."


def _shown_name(path: str, root: str, named: dict[str, str]) -> str:
    """An object's path as a reader knows it: from the attachment's file name on."""
    for prefix, name in named.items():
        if path == prefix or path.startswith(prefix + PATH_SEP):
            return name + path[len(prefix):]
    return path[len(root) + len(PATH_SEP):] if path.startswith(root + PATH_SEP) else path


def _first_reason(root: ObjectResult, filtered) -> str:
    reason = next((r.reason for r in root.walk() if r.reason), "")
    if not reason and filtered:
        reason = next(iter(filtered.values())).reason
    return reason


def _leaves(raw: bytes):
    try:
        return mimeedit.mail_leaves(raw)
    except Exception:  # noqa: BLE001 - malformed beyond splitting: handled as one object
        return []


def _safe_headers(raw: bytes) -> dict[str, str]:
    try:
        return {k.lower(): v for k, v in mimeedit.headers_of(raw)}
    except Exception:  # noqa: BLE001 - unreadable headers: no subject, no message id
        return {}


def _decoded(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # noqa: BLE001 - a broken encoded word stays as written
        return value


def _strip_forged(raw: bytes) -> bytes:
    for name in HEADERS:
        raw = mimeedit.replace_header(raw, name, None)
    return raw


def _stamp(raw: bytes, policy, status: str, verdict: Verdict, db_version: str) -> bytes:
    """Our headers (replacing any from outside, which could be forged) and the subject prefix."""
    raw = _strip_forged(raw)
    if policy.add_headers:
        threats = ", ".join(sorted({t.name for _, t in verdict.threats}))
        raw = mimeedit.replace_header(raw, "X-AV-Checked",
                                      f"lmsav {__version__}; database {db_version}")
        raw = mimeedit.replace_header(raw, "X-AV-Status", status)
        if threats:
            raw = mimeedit.replace_header(raw, "X-AV-Threats", threats)
    prefix = policy.subject_prefix.get(status) if policy.subject_prefix else None
    if prefix:
        heads = {k.lower(): v for k, v in mimeedit.headers_of(raw)}
        subject = _decoded(heads.get("subject", ""))
        if not subject.startswith(prefix):
            raw = mimeedit.replace_header(raw, "Subject", prefix + subject)
    return raw


def _warning_text(verdict: Verdict, children: list[ObjectResult] | None = None,
                  extra: list[tuple[str, str, str]] = ()) -> str:
    """What replaces a part (``children``: the part's results) or, with None, the message;
    ``extra`` adds (path, status, reason) lines, the content filter's findings."""
    lines = ["This part of the message was removed by lmsav, the mail anti-virus.", ""]
    results = verdict.walk() if children is None else (r for c in children for r in c.walk())
    for res in results:
        if res.status == Status.CLEAN:
            continue
        names = ", ".join(_unique(t.name for t in res.threats))
        lines.append(f"  {res.path}: {res.status.label}"
                     + (f" ({names})" if names else f" ({res.reason})" if res.reason else ""))
    lines += [f"  {path}: {status} ({reason})" for path, status, reason in extra]
    return "\n".join(lines) + "\n"


def _warning_message(raw: bytes, verdict: Verdict, status: str,
                     extra: list[tuple[str, str, str]] = ()) -> bytes:
    """The message with its whole body replaced by a warning (headers kept, MIME reset)."""
    text = ("This message was replaced by lmsav, the mail anti-virus: it was found "
            f"{status}.\n\n" + _warning_text(verdict, None, extra).split("\n", 2)[2])
    out = raw
    for name in ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition"):
        out = mimeedit.replace_header(out, name, None)
    head_end = mimeedit.header_end(out)
    body = text.encode()
    head = out[:head_end].rstrip(b"\r\n") + b"\n"
    head += b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n"
    return head + b"\n" + body
