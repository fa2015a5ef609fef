"""Statistics: for now only their place (``paths.stats_dir``, one JSON line per message written
by ``lmsav.mail.outcome.append_stats``); the reports over them are not written yet."""
