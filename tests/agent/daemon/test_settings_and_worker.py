"""Config-driven timings, the scheduler's jobs, and the debounced worker."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import UserConfig
from agent.daemon.scheduler import AgentScheduler, ScheduleSettings
from agent.daemon.settings import AgentSettings
from agent.daemon.work import DebouncedWorker
from agent.errors import WatchkeeperError


def test_settings_come_from_the_config(watchkeeper_home: Path) -> None:
    config = UserConfig.load()
    config.set("schedule", "rescan_minutes", 5)
    config.set("schedule", "coding_time_refit", "22:15")
    config.set("schedule", "save_coalesce_seconds", 10)
    config.set("watch", "poll", ["/mnt/share"])
    config.save()
    settings = AgentSettings.from_config(UserConfig.load())
    assert settings.schedule == ScheduleSettings(5.0, "22:15", 10.0)
    assert settings.save_coalesce_seconds == 10.0
    assert settings.poll_paths == ("/mnt/share",)
    assert (settings.keep_data, settings.keep_data_limit) == ("never", 1 << 30)


def test_watch_keep_data_and_its_limit_come_from_the_config(watchkeeper_home: Path) -> None:
    config = UserConfig.load()
    config.set("watch", "keep_data", "small")
    config.set("watch", "keep_data_limit", "64M")
    config.save()
    settings = AgentSettings.from_config(UserConfig.load())
    assert (settings.keep_data, settings.keep_data_limit) == ("small", 64 << 20)
    config.set("watch", "keep_data_limit", "lots")
    config.save()
    with pytest.raises(WatchkeeperError) as raised:
        AgentSettings.from_config(UserConfig.load())
    assert f"{watchkeeper_home / 'config.toml'}:3: [watch] keep_data_limit is 'lots'" in str(
        raised.value
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("rescan_minutes", "soon", "rescan_minutes must be a positive number"),
        ("run_poll_seconds", 0, "run_poll_seconds must be a positive number"),
        ("coding_time_refit", "25:00", 'coding_time_refit must be a time of day such as "03:30"'),
        ("retrain_quiet_seconds", -1, "retrain_quiet_seconds must be a non-negative number"),
    ],
)
def test_bad_schedule_values_name_the_file_and_key(
    watchkeeper_home: Path, key: str, value: Any, message: str
) -> None:
    config = UserConfig.load()
    config.set("schedule", key, value)
    config.save()
    with pytest.raises(WatchkeeperError) as raised:
        AgentSettings.from_config(UserConfig.load())
    assert str(watchkeeper_home / "config.toml") in str(raised.value)
    assert "[schedule]" in str(raised.value)
    assert message in str(raised.value)


class _Agent:
    def __init__(self) -> None:
        self.worker = DebouncedWorker()
        self.polled = threading.Event()

    def full_rescan(self) -> None:
        pass

    def refit_coding_time(self) -> dict[str, Any]:
        return {}

    def poll_runs(self) -> None:
        self.polled.set()


def test_scheduler_registers_the_three_jobs_at_the_configured_times() -> None:
    agent = _Agent()
    scheduler = AgentScheduler(agent, ScheduleSettings(15.0, "04:45", 0.2))
    scheduler.start()
    try:
        jobs = {job["id"]: job for job in scheduler.describe()}
        assert set(jobs) == {"rescan", "coding_time_refit", "run_poll"}
        assert "T04:45:00" in jobs["coding_time_refit"]["next_run"]
        assert agent.polled.wait(5)
    finally:
        scheduler.stop()


def test_worker_debounces_per_key_and_reruns_a_key_requested_while_running() -> None:
    worker = DebouncedWorker()
    worker.start()
    runs: list[str] = []
    release = threading.Event()

    def slow() -> None:
        runs.append("slow")
        release.wait(5)

    try:
        for _ in range(50):
            worker.request("burst", lambda: runs.append("burst"), delay=0.1)
        assert worker.wait_idle(5)
        assert runs == ["burst"]
        worker.request("slow", slow)
        time.sleep(0.2)
        worker.request("slow", slow)  # asked again while the first run is going
        release.set()
        assert worker.wait_idle(5)
        assert runs == ["burst", "slow", "slow"]
        started = time.monotonic()
        for _ in range(30):  # keeps arriving: max_delay caps the wait
            worker.request("capped", lambda: runs.append("capped"), delay=0.2, max_delay=0.5)
            time.sleep(0.05)
            if "capped" in runs:
                break
        assert "capped" in runs
        assert time.monotonic() - started < 1.0
    finally:
        worker.stop()


def test_a_failing_job_does_not_stop_the_worker() -> None:
    worker = DebouncedWorker()
    worker.start()
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("boom")

    try:
        worker.request("bad", boom)
        worker.request("good", done.set, delay=0.05)
        assert done.wait(5)
    finally:
        worker.stop()
