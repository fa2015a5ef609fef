"""The clamd-protocol daemon: event loop, scan service, process handling, and its client."""
