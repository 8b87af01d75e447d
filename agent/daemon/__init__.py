"""The background agent: process lifecycle, control socket, watchers, scheduler and alerts."""
