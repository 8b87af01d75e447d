"""Scheduled work with APScheduler: periodic rescans, the nightly coding-time refit, run polls."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from agent.errors import WatchkeeperError

log = logging.getLogger(__name__)

_TIME_OF_DAY = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class ScheduledAgent(Protocol):
    """What the scheduler drives (the agent service)."""

    worker: Any

    def full_rescan(self) -> None: ...

    def refit_coding_time(self) -> dict[str, Any]: ...

    def poll_runs(self) -> None: ...


@dataclass(frozen=True)
class ScheduleSettings:
    """The [schedule] section of config.toml."""

    rescan_minutes: float = 15.0
    coding_time_refit: str = "03:30"
    run_poll_seconds: float = 10.0

    @classmethod
    def from_section(cls, section: dict[str, Any], where: str = "[schedule]") -> ScheduleSettings:
        rescan = section.get("rescan_minutes", 15)
        poll = section.get("run_poll_seconds", 10)
        refit = str(section.get("coding_time_refit", "03:30"))
        for key, value in (("rescan_minutes", rescan), ("run_poll_seconds", poll)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise WatchkeeperError(f"{where}: {key} must be a positive number, not {value!r}.")
        if not _TIME_OF_DAY.match(refit):
            raise WatchkeeperError(
                f'{where}: coding_time_refit must be a time of day such as "03:30", not {refit!r}.'
            )
        return cls(float(rescan), refit, float(poll))


class AgentScheduler:
    """A BackgroundScheduler: rescans go to the agent's worker; refits and run polls run here."""

    def __init__(self, agent: ScheduledAgent, settings: ScheduleSettings) -> None:
        self.agent = agent
        self.settings = settings
        self._scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}
        )

    def start(self) -> None:
        hour, minute = (int(part) for part in self.settings.coding_time_refit.split(":"))
        self._scheduler.add_job(
            self._queue_rescan,
            IntervalTrigger(minutes=self.settings.rescan_minutes),
            id="rescan",
            name="full rescan",
        )
        self._scheduler.add_job(
            self._queue_refit,
            CronTrigger(hour=hour, minute=minute),
            id="coding_time_refit",
            name="coding-time refit",
        )
        self._scheduler.add_job(
            self._queue_run_poll,
            IntervalTrigger(seconds=self.settings.run_poll_seconds),
            id="run_poll",
            name="run polling",
        )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def describe(self) -> list[dict[str, Any]]:
        """Each job and when it runs next (ISO time)."""
        return [
            {
                "id": job.id,
                "name": job.name,
                "next_run": job.next_run_time.isoformat() if job.next_run_time else None,
            }
            for job in self._scheduler.get_jobs()
        ]

    def _queue_rescan(self) -> None:
        self.agent.worker.request("rescan", self.agent.full_rescan)

    def _queue_refit(self) -> None:
        # Runs on the scheduler's own thread so that a long fit never delays data alerts.
        try:
            self.agent.refit_coding_time()
        except Exception:
            log.exception("the nightly coding-time refit failed")

    def _queue_run_poll(self) -> None:
        try:
            self.agent.poll_runs()
        except Exception:
            log.exception("polling active runs failed")
