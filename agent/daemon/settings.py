"""The agent's timings and watch options, read from the user config's [schedule] and [watch]."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

from agent.config import UserConfig
from agent.daemon.scheduler import ScheduleSettings
from agent.errors import WatchkeeperError
from agent.project.spec import DEFAULT_KEEP_DATA_LIMIT
from agent.project.spec import _Checker as SpecChecker

DEFAULT_SNAPSHOT_KEEP = "never"


@dataclass
class AgentSettings:
    """Timings and watch options, from the user config's [schedule] and [watch] sections."""

    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    save_coalesce_seconds: float = 30.0
    data_debounce_seconds: float = 0.3
    data_max_delay_seconds: float = 1.2
    git_debounce_seconds: float = 0.5
    staleness_debounce_seconds: float = 2.0
    retrain_quiet_seconds: float = 60.0
    coding_time_settle_seconds: float = 180.0
    poll_interval_seconds: float = 5.0
    health_interval_seconds: float = 2.0
    poll_paths: tuple[str, ...] = ()
    keep_data: str = DEFAULT_SNAPSHOT_KEEP  # keep snapshots' content: always, small or never
    keep_data_limit: int = DEFAULT_KEEP_DATA_LIMIT  # bytes per snapshot, for "small"

    @classmethod
    def from_config(cls, config: UserConfig) -> AgentSettings:
        schedule = config.section("schedule")
        watch = config.section("watch")
        where = f"{config.path} [schedule]"

        def number(section: dict[str, Any], key: str, default: float, label: str) -> float:
            value = section.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise WatchkeeperError(
                    f"{label}: {key} must be a non-negative number, not {value!r}."
                )
            return float(value)

        keep_data, keep_data_limit = snapshot_keep(config)
        return cls(
            schedule=ScheduleSettings.from_section(schedule, where),
            save_coalesce_seconds=number(schedule, "save_coalesce_seconds", 30.0, where),
            data_debounce_seconds=number(schedule, "data_debounce_seconds", 0.3, where),
            retrain_quiet_seconds=number(schedule, "retrain_quiet_seconds", 60.0, where),
            coding_time_settle_seconds=number(schedule, "coding_time_settle_seconds", 180.0, where),
            poll_interval_seconds=number(
                watch, "poll_interval_seconds", 5.0, f"{config.path} [watch]"
            ),
            poll_paths=tuple(str(Path(p).expanduser()) for p in watch.get("poll", [])),
            keep_data=keep_data,
            keep_data_limit=keep_data_limit,
        )


def snapshot_keep(config: UserConfig) -> tuple[str, int]:
    """`[watch] keep_data` and `keep_data_limit`: whether snapshots keep their content.

    Checked as the model spec's `keep_data` is (errors name the file and line); the default is
    "never": the agent snapshots a watched folder at every change, and keeping each state of
    every watched folder by default would fill the disk unasked.

    >>> from agent.config import UserConfig
    >>> snapshot_keep(UserConfig.load(Path("/tmp/does-not-exist/config.toml")))
    ('never', 1073741824)
    """
    watch = config.section("watch")
    checker = SpecChecker(config.path, tomlkit.dumps(config.document))
    keep = checker.keep_choice(
        ["watch"], "keep_data", watch.get("keep_data", DEFAULT_SNAPSHOT_KEEP)
    )
    limit = checker.size(
        ["watch"], "keep_data_limit", watch.get("keep_data_limit", DEFAULT_KEEP_DATA_LIMIT)
    )
    return keep, limit
