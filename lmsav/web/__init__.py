"""`lmsav web`: the administration console (status, mail, quarantine, spool, groups, updates,
schedules, configuration, logs), served by cheroot from Flask routes and Jinja2 templates."""
