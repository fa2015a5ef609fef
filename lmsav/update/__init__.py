"""lmsav update: sources, verification, cdiff, staging, switch, rollback (see updater.py)."""
