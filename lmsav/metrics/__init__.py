"""Prometheus metrics of the long-running components (``[metrics]``): the ``lmsav_*``
families (``families``), the loopback /metrics endpoint that serves them (``endpoint``), and
the statistics events of the one-shot commands (``recording``)."""
