"""Watchkeeper's background side: config, ledger, git history, data, watchers, executors and CLI."""

__version__ = "0.1.0"
