"""The statistics store's totals for the counters of the MIB and the virus-found trap."""

from __future__ import annotations

import logging

log = logging.getLogger("lmsav.snmp")

KEYS = ("messages", "infected", "suspicious", "protected", "corrupted", "errors", "filtered",
        "bytes", "files_scanned")


class TotalsReader:
    """Reads ``lmsav.stats.store.open_store(settings).totals()``; a store that cannot be read
    gives None (the counters are left out) and one log line until it can be read again."""

    def __init__(self, settings):
        self.settings = settings
        self._failing = False

    def __call__(self) -> dict[str, int] | None:
        try:
            from ..stats.store import open_store, sqlite_path

            if not self.settings.stats.url and \
                    not sqlite_path(self.settings.paths.state_dir).exists():
                # Nothing recorded yet; opening would create the file, as whoever runs this.
                return dict.fromkeys(KEYS, 0)
            store = open_store(self.settings)
            try:
                totals = store.totals()
            finally:
                store.close()
        except Exception as err:  # noqa: BLE001 - a broken store must not stop the answers
            if not self._failing:
                log.warning("statistics unavailable, counters left out: %s",
                            str(err).splitlines()[0] if str(err) else type(err).__name__)
                self._failing = True
            return None
        self._failing = False
        return {key: int(totals.get(key) or 0) for key in KEYS}


__all__ = ["KEYS", "TotalsReader"]
