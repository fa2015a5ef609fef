"""Mail policy: one message and its envelope in, what happens to it per recipient group out.

Knows nothing about any MTA. The message is scanned by the engine (once per distinct set of
limits), recipients are split by group, and each group's actions, headers, content filter,
notices and backup are applied to its own copy, so a lax group never weakens a strict one.
"""

from __future__ import annotations

import email.header
import socket
import string
import time
from email.utils import formatdate

from .. import __version__
from ..scanner.engine import Engine
from ..scanner.limits import Limits
from ..scanner.objects import PATH_SEP, ObjectResult, Status, Verdict
from ..scanner.containers import rebuild
from .filter import UNPLACED, find_filtered, leaf_index
from .groups import match_pattern
from .outcome import GroupOutcome, MessageOutcome, ObjectAction
from .raw import header_end
from .notify import NoticeInfo, Templates, build_notices

# Actions that decide for the whole message, and how strict each is when parts disagree.
MESSAGE_ACTIONS = ("reject", "drop")
_STRICTNESS = {"skip": 0, "warn": 1, "cure": 2, "delete": 3, "drop": 4, "reject": 5}
HEADERS = ("X-AV-Checked", "X-AV-Status", "X-AV-Threats")
FILTERED = "filtered"


class MailProcessor:
    """Applies groups' policies to messages. One per process; reuses engines per limit set."""

    def __init__(self, database, groups, base_limits: Limits, backup_store=None, stats_dir=None,
                 hostname: str | None = None, tmp_root: str | None = None):
        self.db = database
        self.groups = groups
        self.base_limits = base_limits
        self.backup_store = backup_store
        self.stats_dir = stats_dir
        self.hostname = hostname or socket.getfqdn()
        self.tmp_root = tmp_root
        self._engines: dict[Limits, Engine] = {}
        self._templates: dict = {}

    # -- entry point -----------------------------------------------------------------------------
    def process(self, raw: bytes, sender: str, recipients: list[str],
                group: str | None = None) -> MessageOutcome:
        """Apply the policy; ``group`` forces one group for every recipient (a per-connection
        setting of the MTA) instead of resolving each recipient."""
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
        verdicts: dict[Limits, Verdict] = {}
        leaves = _leaves(raw)
        ctx = _Shared(raw, sender, subject, message_id, started, None)
        for policy, rcpts in split:
            if not scanned:
                outcomes.append(GroupOutcome(policy.name, rcpts, "unscanned", "skip",
                                             _strip_forged(raw)))
                continue
            limits = self._limits_for(policy)
            if limits not in verdicts:
                verdicts[limits] = self._engine(limits).scan_bytes(raw, "message")
            verdict = verdicts[limits]
            outcomes.append(self._apply(policy, rcpts, verdict, leaves, ctx))
        first = next(iter(verdicts.values()), None)
        threats = sorted({t.name for v in verdicts.values() for _, t in v.threats})
        worst = max((g.status for g in outcomes), key=_status_rank, default="clean")
        outcome = MessageOutcome(
            message_id=message_id, sender=sender, recipients=list(recipients), subject=subject,
            size=len(raw), status=worst, threats=threats, groups=outcomes,
            verdict=first.to_json() if first is not None else None,
            scan_seconds=time.monotonic() - t0, database_version=self.db.version,
            started=started)
        if self.stats_dir is not None:
            from .outcome import append_stats

            append_stats(self.stats_dir, outcome.stats_record())
        return outcome

    def _limits_for(self, policy) -> Limits:
        return policy.limits(self.base_limits)

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
    def _apply(self, policy, rcpts, verdict: Verdict, leaves, ctx: "_Shared") -> GroupOutcome:
        root = verdict.root
        per_leaf = _leaf_results(root)
        filtered = {}
        if _filters_on(policy) and leaves:
            for f in find_filtered(policy, leaves, verdict):
                filtered.setdefault(f.leaf, f)
        objects: list[ObjectAction] = []
        message_status = _label(root.worst())
        if message_status == "clean" and filtered:
            message_status = FILTERED
        # Part by part only when every finding sits in a numbered part: what the raw reading
        # of a doubtful message found (raw<k>:…, more-parts) has no part to cure or delete.
        if (policy.scan_policy == "combined" and per_leaf and not _unplaced_findings(root)
                and UNPLACED not in filtered):
            action, changes = self._combined(policy, root, per_leaf, filtered, leaves, objects)
        else:
            action, changes = self._whole(policy, message_status, verdict, filtered, objects)
        out, reply = self._produce(policy, action, changes, ctx.raw, verdict, objects)
        if out is not None:
            out = _stamp(out, policy, message_status, verdict, self.db.version)
        group = GroupOutcome(policy.name, list(rcpts), message_status, action, out, reply, objects)
        if action != "skip" and message_status in policy.backup and self.backup_store is not None:
            group.backup_id = ctx.backup_id or self._backup(ctx, policy, message_status, verdict,
                                                            rcpts, action)
            ctx.backup_id = group.backup_id
        if message_status != "clean":
            group.notices = build_notices(policy, NoticeInfo(
                sender=ctx.sender, recipients=tuple(rcpts), subject=ctx.subject,
                message_id=ctx.message_id, status=message_status, action=action,
                threats=tuple((p, t.name) for p, t in verdict.threats),
                objects=tuple((r.path, r.status.label, r.reason) for r in root.walk()
                              if r.status != Status.CLEAN)
                + tuple((f.object, FILTERED, f.reason) for f in filtered.values()),
                group=policy.name, date=formatdate(ctx.started, localtime=True),
                database_version=self.db.version, hostname=self.hostname,
                reject_reply=reply), self._templates_for(policy),
                original_headers=ctx.raw[:header_end(ctx.raw)])
        return group

    def _whole(self, policy, status: str, verdict: Verdict, filtered, objects):
        """scan_policy = "message": the worst status decides for the message as one object."""
        if status == "clean":
            return "skip", {}
        action = _action_for(policy, status, [t.name for _, t in verdict.threats])
        objects.append(ObjectAction(verdict.root.path, status, action,
                                    [t.name for _, t in verdict.threats],
                                    _first_reason(verdict.root, filtered)))
        changes = {}
        if action == "cure":
            changes = {"cure": [r for r in verdict.walk() if r.status == Status.INFECTED]}
        return action, changes

    def _combined(self, policy, root: ObjectResult, per_leaf, filtered, leaves, objects):
        """scan_policy = "combined": actions apply part by part; reject/drop take the message."""
        decisive = "skip"
        changes: dict = {"parts": {}, "cure": []}
        bad_leaves = {i: r for i, r in per_leaf.items() if r.worst() != Status.CLEAN}
        own = root.status  # found on the message as a whole (raw match, MIME damage, limit)
        if not bad_leaves and not filtered:
            if own == Status.CLEAN:
                return "skip", changes
            status = own.label
            action = _action_for(policy, status, [t.name for t in root.threats])
            objects.append(ObjectAction(root.path, status, action, [t.name for t in root.threats],
                                        root.reason))
            return action, {"cure": [root]} if action == "cure" else {}
        too_deep = any(r.reason.startswith("limit: depth") for r in root.walk())
        if too_deep and not filtered and own <= Status.ERROR and all(
                r.worst() <= Status.ERROR for r in bad_leaves.values()):
            # Too deep to know: the whole message gets the error action.
            action = policy.error_action
            objects.append(ObjectAction(root.path, "error", action, [], "limit: depth"))
            return action, {}
        for index in sorted(set(bad_leaves) | set(filtered)):
            res = bad_leaves.get(index)
            if res is not None:
                status = res.worst().label
                names = [t.name for r in res.walk() for t in r.threats]
                reason = next((r.reason for r in res.walk() if r.reason), "")
                path = res.path
            else:
                status, names, reason, path = FILTERED, [], filtered[index].reason, \
                    filtered[index].object
            action = _action_for(policy, status, names)
            objects.append(ObjectAction(path, status, action, names, reason))
            if action in MESSAGE_ACTIONS:
                if _STRICTNESS[action] > _STRICTNESS[decisive]:
                    decisive = action
            elif action != "skip":
                changes["parts"][index] = action
                if action == "cure":
                    changes["cure"] += [r for r in res.walk() if r.status == Status.INFECTED] \
                        if res is not None else []
                if _STRICTNESS[action] > _STRICTNESS[decisive]:
                    decisive = action
        return decisive, changes

    def _produce(self, policy, action, changes, raw, verdict, objects):
        """The message these recipients get (or None) and the rejection text."""
        threats = ", ".join(sorted({t.name for _, t in verdict.threats})) or "policy"
        if action == "reject":
            reply = string.Template(policy.reject_reply).safe_substitute(threats=threats)
            return None, reply
        if action in ("drop",):
            return None, ""
        if action == "skip":
            return _strip_forged(raw), ""
        parts = changes.get("parts") if isinstance(changes, dict) else None
        if parts is None:  # scan_policy "message": the action concerns the whole message
            if action == "delete":
                return None, ""
            if action == "warn":
                return _warning_message(raw, verdict), ""
            if action == "cure":
                cured = self._cure(raw, changes.get("cure", []), verdict)
                if cured is None:
                    return self._uncurable(policy, raw, verdict, objects)
                return cured, ""
        try:
            edits: dict[int, bytes | None] = {}
            text_parts: dict[int, str] = {}
            for index, act in parts.items():
                if act == "delete":
                    edits[index] = None
                elif act == "warn":
                    text_parts[index] = _warning_text(verdict, index)
            out = raw
            cure_targets = changes.get("cure", [])
            if cure_targets:
                cured = self._cure(raw, cure_targets, verdict)
                if cured is None:
                    return self._uncurable(policy, raw, verdict, objects)
                out = cured
            for index, text in text_parts.items():
                out = rebuild.replace_with_text(out, index, text)
            if edits:
                out = rebuild.rebuild_mail(out, edits)
            return _strip_forged(out), ""
        except rebuild.RebuildError:
            return self._uncurable(policy, raw, verdict, objects)

    def _uncurable(self, policy, raw, verdict, objects):
        action = policy.uncurable_action
        objects.append(ObjectAction(verdict.root.path, "infected", action, [], "uncurable"))
        if action in ("cure", "skip"):
            # Never deliver an infected message because cure failed: reject instead.
            action = "reject" if action == "cure" else "skip"
        return self._produce(policy, action, {}, raw, verdict, objects) if action != "skip" \
            else (_strip_forged(raw), "")

    def _cure(self, raw: bytes, targets: list[ObjectResult], verdict: Verdict) -> bytes | None:
        """Remove infected parts and infected members of attached archives; None if impossible.

        The cured message is scanned again: a cure that leaves anything infected is no cure."""
        root = verdict.root.path
        by_leaf: dict[int, set[str]] = {}
        delete_leaves: set[int] = set()
        for res in targets:
            if not res.path.startswith(root + PATH_SEP):
                return None  # the message itself matched: nothing to cut out
            rel = res.path[len(root) + len(PATH_SEP):].split(PATH_SEP)
            index = leaf_index(rel[0])
            if index is None:
                return None
            if len(rel) == 1 or "." in rel[0].split(":", 1)[0]:
                delete_leaves.add(index)  # the part itself (or a uuencoded file in it)
            elif len(rel) == 2:
                by_leaf.setdefault(index, set()).add(rel[1])
            else:
                return None  # inside a nested container: cannot rebuild that deep
        try:
            leaves = {leaf.index: leaf for leaf in rebuild.mail_leaves(raw)}
            edits: dict[int, bytes | None] = {i: None for i in delete_leaves}
            for index, members in by_leaf.items():
                if index in delete_leaves or index not in leaves:
                    continue
                edits[index] = rebuild.rebuild_archive(leaves[index].decoded(), members)
            out = rebuild.rebuild_mail(raw, edits)
        except rebuild.RebuildError:
            return None
        check = self._engine(self.base_limits).scan_bytes(out, "message")
        return out if check.status < Status.SUSPICIOUS else None

    def _backup(self, ctx, policy, status, verdict, rcpts, action) -> str:
        return self.backup_store.save(ctx.raw, {
            "sender": ctx.sender, "recipients": list(rcpts), "group": policy.name,
            "status": status, "subject": ctx.subject, "message_id": ctx.message_id,
            "threats": sorted({t.name for _, t in verdict.threats}), "actions": [action],
            "verdict": verdict.to_json(), "time": ctx.started,
            "database_version": self.db.version,
        })


class _Shared:
    """Per-message facts every group's processing reads (and the one backup id they share)."""

    def __init__(self, raw, sender, subject, message_id, started, backup_id):
        self.raw, self.sender, self.subject = raw, sender, subject
        self.message_id, self.started, self.backup_id = message_id, started, backup_id


# -- helpers ---------------------------------------------------------------------------------

_RANK = {"clean": 0, "unscanned": 0, "error": 1, "corrupted": 2, FILTERED: 3, "protected": 4,
         "suspicious": 5, "infected": 6}


def _status_rank(label: str) -> int:
    return _RANK.get(label, 0)


def _label(status: Status) -> str:
    return status.label


def _filters_on(policy) -> bool:
    return bool(policy.filter_names or policy.filter_types or policy.filter_type_mismatch
                or policy.filter_max_size)


def _action_for(policy, status: str, threat_names: list[str]) -> str:
    if status == "infected" and policy.virus_name_list and any(
            match_pattern(p, n) for p in policy.virus_name_list for n in threat_names):
        return policy.virus_name_action
    return getattr(policy, f"{status}_action", policy.error_action)


def _first_reason(root: ObjectResult, filtered) -> str:
    reason = next((r.reason for r in root.walk() if r.reason), "")
    if not reason and filtered:
        reason = next(iter(filtered.values())).reason
    return reason


def _unplaced_findings(root: ObjectResult) -> bool:
    """Whether a child of the message that is not a numbered part found something."""
    for child in root.children:
        name = child.path.rsplit(PATH_SEP, 1)[-1] if PATH_SEP in child.path else child.path
        if leaf_index(name) is None and child.worst() != Status.CLEAN:
            return True
    return False


def _leaf_results(root: ObjectResult) -> dict[int, ObjectResult]:
    """The verdict's direct children by leaf index; uuencoded files ("3.1:x") join leaf 3."""
    out: dict[int, ObjectResult] = {}
    for child in root.children:
        name = child.path.rsplit(PATH_SEP, 1)[-1] if PATH_SEP in child.path else child.path
        index = leaf_index(name)
        if index is None:
            continue
        if index in out:
            holder = out[index]
            if holder.worst() < child.worst():
                out[index] = child
        else:
            out[index] = child
    return out


def _leaves(raw: bytes):
    try:
        return rebuild.mail_leaves(raw)
    except Exception:  # malformed beyond splitting: the message is handled as one object
        return []


def _safe_headers(raw: bytes) -> dict[str, str]:
    try:
        return {k.lower(): v for k, v in rebuild.headers_of(raw)}
    except Exception:
        return {}


def _decoded(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:
        return value


def _strip_forged(raw: bytes) -> bytes:
    for name in HEADERS:
        raw = rebuild.replace_header(raw, name, None)
    return raw


def _stamp(raw: bytes, policy, status: str, verdict: Verdict, db_version: str) -> bytes:
    """Our headers (replacing any from outside, which could be forged) and the subject prefix."""
    raw = _strip_forged(raw)
    if policy.add_headers:
        threats = ", ".join(sorted({t.name for _, t in verdict.threats}))
        raw = rebuild.replace_header(raw, "X-AV-Checked",
                                     f"lmsav {__version__}; database {db_version}")
        raw = rebuild.replace_header(raw, "X-AV-Status", status)
        if threats:
            raw = rebuild.replace_header(raw, "X-AV-Threats", threats)
    prefix = policy.subject_prefix.get(status) if policy.subject_prefix else None
    if prefix:
        heads = dict((k.lower(), v) for k, v in rebuild.headers_of(raw))
        subject = _decoded(heads.get("subject", ""))
        if not subject.startswith(prefix):
            raw = rebuild.replace_header(raw, "Subject", prefix + subject)
    return raw


def _warning_text(verdict: Verdict, index: int | None = None) -> str:
    lines = ["This part of the message was removed by lmsav, the mail anti-virus.", ""]
    for res in verdict.walk():
        if res.status == Status.CLEAN:
            continue
        if index is not None:
            rel = res.path.split(PATH_SEP, 2)
            if len(rel) < 2 or leaf_index(rel[1]) != index:
                continue
        names = ", ".join(t.name for t in res.threats)
        lines.append(f"  {res.path}: {res.status.label}"
                     + (f" ({names})" if names else f" ({res.reason})" if res.reason else ""))
    return "\n".join(lines) + "\n"


def _warning_message(raw: bytes, verdict: Verdict) -> bytes:
    """The message with its whole body replaced by a warning (headers kept, MIME reset)."""
    text = ("This message was replaced by lmsav, the mail anti-virus: it was found "
            f"{verdict.status.label}.\n\n" + _warning_text(verdict).split("\n", 2)[2])
    out = raw
    for name in ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition"):
        out = rebuild.replace_header(out, name, None)
    head_end = header_end(out)
    body = text.encode()
    head = out[:head_end].rstrip(b"\r\n") + b"\n"
    head += b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n"
    return head + b"\n" + body
