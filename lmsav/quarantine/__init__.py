"""Files taken out of place by ``lmsav scan``: the quarantine, and originals kept before a cure or
a delete (the same store under another root)."""

from .store import FileStore, Restored, StoredFile, StoreError, file_facts, replace_file

__all__ = ["FileStore", "Restored", "StoredFile", "StoreError", "file_facts", "replace_file"]
