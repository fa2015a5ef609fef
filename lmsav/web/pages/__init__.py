"""The console's pages: one blueprint per module, and the order of the navigation bar."""

from __future__ import annotations

import importlib

# (module, endpoint of its navigation entry, label)
PAGES = (
    ("dashboard", "dashboard.index", "Dashboard"),
    ("mail", "mail.index", "Mail"),
    ("stores", "stores.index", "Quarantine & backup"),
    ("spool", "spool.index", "Spool"),
    ("groups", "groups.index", "Groups"),
    ("updates", "updates.index", "Updates"),
    ("schedules", "schedules.index", "Schedules"),
    ("settings", "settings.index", "Configuration"),
    ("logs", "logs.index", "Logs"),
)
NAVIGATION = tuple((endpoint, label) for _module, endpoint, label in PAGES)


def blueprints() -> list:
    found = []
    for module, _endpoint, _label in PAGES:
        name = f"{__name__}.{module}"
        try:
            found.append(importlib.import_module(name).bp)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
    return found
