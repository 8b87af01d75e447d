"""Which agent events become tray notifications, and their wording, per the user's choices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.config import UserConfig
from agent.runs.states import RunState

FINISHED_STATES = (RunState.SUCCEEDED,)
FAILED_STATES = (RunState.FAILED, RunState.LOST, RunState.INTERRUPTED)


@dataclass(frozen=True)
class NotificationChoices:
    """The [notifications] section of config.toml."""

    stale: bool = True
    runs: bool = True
    drift: bool = True
    daily_summary: bool = False
    daily_summary_hour: int = 18

    @classmethod
    def from_config(cls, config: UserConfig) -> NotificationChoices:
        section = config.section("notifications")
        hour = section.get("daily_summary_hour", 18)
        return cls(
            stale=bool(section.get("stale", True)),
            runs=bool(section.get("runs", True)),
            drift=bool(section.get("drift", True)),
            daily_summary=bool(section.get("daily_summary", False)),
            daily_summary_hour=int(hour) if isinstance(hour, int) and 0 <= hour < 24 else 18,
        )

    def save(self, config: UserConfig) -> None:
        for key in ("stale", "runs", "drift", "daily_summary", "daily_summary_hour"):
            config.set("notifications", key, getattr(self, key))
        config.save()


def main_metric(metrics: Any) -> str:
    """'accuracy=0.912' for the first metric of a metrics dict ('' when there is none)."""
    if not isinstance(metrics, dict) or not metrics:
        return ""
    key, value = next(iter(metrics.items()))
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{key}={shown}"


def notification_for_event(
    kind: str, data: Any, choices: NotificationChoices
) -> tuple[str, str, str] | None:
    """(title, message, kind) for an agent event worth a notification, else None."""
    if not isinstance(data, dict):
        return None
    if kind == "alert":
        return _alert_notification(data, choices)
    if kind == "run_state" and choices.runs:
        return _run_notification(data)
    if kind == "pulled" and choices.stale:
        return _pulled_notification(data)
    return None


def _pulled_notification(data: dict[str, Any]) -> tuple | None:
    """A pull brought a teammate's version newer than a model's current one.

    >>> title, message, kind = _pulled_notification({"newer": [{"model": "churn",
    ...     "version": 3, "id": "9e8b30e3aa", "author": "Ada <ada@example.org>",
    ...     "previous": {"version": 2}, "current": 3}]})
    >>> title, kind
    ('churn: a newer version by Ada', 'pulled')
    >>> message
    'v3 (9e8b30e3) ended after your current v2; v3 is now current'
    """
    versions = [entry for entry in data.get("newer") or [] if isinstance(entry, dict)]
    if not versions:
        return None
    first = versions[0]
    author = str(first.get("author") or "a teammate").split(" <")[0]
    previous = first.get("previous") or {}
    current = first.get("current")
    message = f"v{first.get('version')} ({str(first.get('id') or '')[:8]}) "
    if previous.get("version"):
        message += f"ended after your current v{previous['version']}"
    else:
        message += "is the model's first succeeded version here"
    if current is not None:
        message += f"; v{current} is now current"
    if len(versions) > 1:
        others = ", ".join(str(entry.get("model")) for entry in versions[1:])
        message += f" (newer versions of {others} too)"
    return f"{first.get('model')}: a newer version by {author}", message, "pulled"


def _alert_notification(data: dict[str, Any], choices: NotificationChoices) -> tuple | None:
    if data.get("updated") or data.get("state") in ("resolved", "acknowledged"):
        return None  # only a new alert pops up; its updates and its end change the views
    alert_kind = str(data.get("kind", ""))
    model = str(data.get("model") or data.get("model_name") or "")
    message = str(data.get("message") or "")
    reasons = [str(reason) for reason in data.get("reasons") or []]
    if alert_kind == "stale" and choices.stale:
        title = f"{model} is stale" if model else "A model is stale"
        return title, reasons[0] if reasons else message, "stale"
    if alert_kind == "drift" and (choices.drift or choices.stale):
        # A drift alert is a model gone stale because its tabular data changed.
        title = f"{model} is stale: data drift" if model else "Data drift"
        return title, reasons[0] if reasons else message, "drift"
    if alert_kind == "run_failed" and choices.runs:
        return f"Run failed: {model}".strip(": "), message, "run_failed"
    if alert_kind == "watch":
        return "Watching", message, "watch"
    return None


def _run_notification(data: dict[str, Any]) -> tuple | None:
    state = str(data.get("state", ""))
    model = str(data.get("model") or data.get("model_name") or "")
    run_id = str(data.get("run") or data.get("run_id") or "")
    label = f"{model} ({run_id})" if model and run_id else model or run_id
    metric = main_metric(data.get("metrics"))
    if state in FINISHED_STATES:
        version = data.get("version")
        suffix = f" → version {version}" if version else ""
        return f"Run finished: {label}", (metric or "no metrics") + suffix, "run_finished"
    if state in FAILED_STATES:
        exit_code = data.get("exit_code")
        detail = f"exit code {exit_code}" if exit_code is not None else state
        return f"Run {state}: {label}", detail + (f", {metric}" if metric else ""), "run_failed"
    return None
