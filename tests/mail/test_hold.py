"""The "hold" action: nothing delivered to the group, the original always backed up, and the
plan saying so (result "hold", the reason) when every addressed group holds."""

from __future__ import annotations

import email
import email.policy

import pytest

from lmsav import paths
from lmsav.config import ConfigError, load_settings
from lmsav.mail.envelope import Envelope
from lmsav.mail.groups import load_groups
from lmsav.mail.service import MailService
from tests.conftest import EICAR
from tests.mail.test_service import message

GROUPS = {
    "hold.toml": 'priority = 20\nrecipients = ["*@hold.example"]\ninfected_action = "hold"\n'
                 'backup = []\n',
    "parts.toml": 'priority = 20\nrecipients = ["*@parts.example"]\nscan_policy = "combined"\n'
                  'infected_action = "hold"\nfilter_names = ["*.txt"]\n'
                  'filtered_action = "drop"\n',
    "lax.toml": 'priority = 10\nrecipients = ["*@lax.example"]\ninfected_action = "skip"\n',
}


@pytest.fixture
def service(tmp_path):
    config = tmp_path / "lmsav.toml"
    (tmp_path / "groups.d").mkdir()
    for name, text in GROUPS.items():
        (tmp_path / "groups.d" / name).write_text(text)
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    return MailService.from_settings(load_settings(config), config,
                                     database_dir=paths.bundled_database_dir(),
                                     backup=True, stats=False)


def test_hold_is_an_action_of_every_status_key_but_never_unknown(tmp_path):
    (tmp_path / "a.toml").write_text('uncurable_action = "hold"\nerror_action = "hold"\n')
    assert load_groups(tmp_path).get("a").uncurable_action == "hold"
    (tmp_path / "a.toml").write_text('infected_action = "holdit"\n')
    with pytest.raises(ConfigError, match='"hold"'):
        load_groups(tmp_path)


def test_a_held_message_is_delivered_to_nobody_and_kept_in_the_backup(service):
    raw = message(EICAR)
    plan = service.decide(raw, Envelope("alice@example.org", ("bob@hold.example",)))
    assert plan.result == "hold" and not plan.rejected
    assert plan.reply == "held by the anti-virus policy: infected (Eicar-Test-Signature)"
    [group] = plan.held
    assert (group.group, group.action, group.message, group.delivered) == (
        "hold", "hold", None, False)
    assert not [d for d in plan.deliveries if d.key.endswith(":message")]
    assert "reject" not in [d.key for d in plan.deliveries]  # no status notice: not refused
    # Kept although the group's backup list is empty: the original is what gets released.
    assert group.backup_id
    assert service.processor.backup_store.extract(group.backup_id) == raw


def test_a_clean_message_of_a_holding_group_is_delivered(service):
    plan = service.decide(message(None), Envelope("alice@example.org", ("bob@hold.example",)))
    assert (plan.result, plan.held) == ("accept", [])
    assert [d.key for d in plan.deliveries] == ["hold:message"]


def test_one_group_holding_and_another_delivering_is_accepted_with_the_hold_listed(service):
    env = Envelope("alice@example.org", ("bob@hold.example", "carol@lax.example"))
    plan = service.decide(message(EICAR), env)
    assert (plan.result, plan.reply) == ("accept", "")
    assert [g.group for g in plan.held] == ["hold"]
    messages = [d for d in plan.deliveries if d.key.endswith(":message")]
    assert [(d.key, d.recipients) for d in messages] == [("lax:message",
                                                          ("carol@lax.example",))]


def test_under_combined_a_held_part_holds_the_whole_message_over_a_drop(service):
    msg = message(EICAR)
    # A second attachment the filter drops: hold is stricter than drop, the message is kept.
    parsed = email.message_from_bytes(msg, policy=email.policy.default)
    parsed.add_attachment("notes", filename="notes.txt")
    plan = service.decide(parsed.as_bytes(), Envelope("alice@example.org",
                                                      ("bob@parts.example",)))
    [group] = plan.outcome.groups
    assert {o.action for o in group.objects} == {"hold", "drop"}
    assert (plan.result, group.action, group.message) == ("hold", "hold", None)
