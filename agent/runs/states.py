"""The states of a run, spelled once: the ledger, the agent, the CLI and the app use these."""

from __future__ import annotations

import enum


class RunState(enum.StrEnum):
    """Where a run is; the last five are final."""

    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    LOST = "lost"

    @property
    def is_final(self) -> bool:
        return self not in (RunState.QUEUED, RunState.STARTING, RunState.RUNNING)


RUN_STATES: tuple[str, ...] = tuple(state.value for state in RunState)
ACTIVE_RUN_STATES: tuple[str, ...] = tuple(s.value for s in RunState if not s.is_final)
TERMINAL_RUN_STATES: tuple[str, ...] = tuple(s.value for s in RunState if s.is_final)
VERSION_STATUSES: tuple[str, ...] = (RunState.RUNNING.value, *TERMINAL_RUN_STATES)
"""A model version's status: the state of the run that records it, once it has started."""
