"""Filesystem sweeps: ``lmsav scan`` on paths, scheduled sweeps and watch mode.

- ``walk.py`` — the one directory walker (``regular_files``), also used by the daemon.
- ``run.py`` — the sweep: walk, scan in ``lmsav.workers``' forked workers, reports in walk
  order, the tally (``sweep``, ``SweepOptions``, ``FileReport``, ``Tally``).
- ``cache.py`` — the scan cache of incremental sweeps.
- ``actions.py`` — what a detected file gets: report, quarantine, cure (the engine's
  ``lmsav.scanner.cure``), delete.
- ``realtime.py`` — ``scan --watch``: files scanned as they are finished (inotify).
- ``report.py`` — printed lines, JSON lines, the summary, the ``--report`` file.
- ``options.py`` — the options of ``lmsav scan``, shared with ``lmsav cron``;
  ``command.py`` — one local ``lmsav scan`` from its options to its exit code.
"""
