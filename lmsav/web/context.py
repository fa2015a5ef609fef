"""What every page of one console reads: the settings, where the configuration and state live.

One :class:`WebContext` per application, kept in ``app.extensions["lmsav"]``; pages reach it
through :func:`web`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from flask import current_app

from .. import config as config_mod


@dataclass
class WebContext:
    settings: config_mod.Settings
    config_file: Path | None
    profile: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def state_dir(self) -> Path:
        return Path(self.settings.paths.state_dir)

    @property
    def web_dir(self) -> Path:
        """The console's own state: accounts, the session key, the audit trail, indexes."""
        return self.state_dir / "web"

    def reload_settings(self) -> config_mod.Settings:
        """Read the configuration again (after the console changed it); a file that no longer
        loads raises ConfigError and the settings in use stay."""
        settings = config_mod.load_settings(self.config_file, self.profile)
        with self._lock:
            self.settings = settings
        return settings


def web() -> WebContext:
    return current_app.extensions["lmsav"]
