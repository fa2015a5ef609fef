"""The nqueue/ spool: `lmsav enqueue`, the watcher that reinjects what the mail service plans."""
