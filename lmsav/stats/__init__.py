"""Statistics: every component records events (``store.open_store(settings).record``) in one
store, SQLite under the state directory or a PostgreSQL database several nodes share, kept per
message and rolled up per minute, hour and day; ``lmsav stats`` reads them."""
