"""What `make run` starts: the agent, then the desktop app when a display exists, else `status`.

On a machine where no registered repo declares models yet, it offers `watchkeeper demo`. With a
display and a terminal, the app opens on the demo. Otherwise the whole loop runs here: the demo
is trained, its data file changes, the agent raises a stale alert, and `status` and `alerts`
show it.
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.cli.demo_cmd import default_demo_root
from agent.client import AgentClient
from agent.errors import WatchkeeperError
from agent.ledger import open_ledger
from agent.ledger.queries import is_builtin_repo, list_repos
from agent.paths import WatchkeeperPaths
from agent.project.demo import DemoProject, append_customers
from agent.project.spec import SPEC_FILE

WATCHKEEPER = str(Path(sys.executable).parent / "watchkeeper")
ALERT_DEADLINE_SECONDS = 60.0
ALERT_POLL_SECONDS = 0.25


def agent_running() -> bool:
    """True when `watchkeeper agent status` finds a live agent (it exits 0 then)."""
    status = subprocess.run([WATCHKEEPER, "agent", "status"], capture_output=True, text=True)
    return status.returncode == 0


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def projects_registered(paths: WatchkeeperPaths) -> bool:
    """True when a repo in the ledger has a watchkeeper.toml."""
    if not paths.ledger.exists():
        return False
    db = open_ledger(paths.ledger)
    try:
        return any(
            not is_builtin_repo(row["path"]) and (Path(row["path"]) / SPEC_FILE).is_file()
            for row in list_repos(db)
        )
    finally:
        db.close()


def wants_demo() -> bool:
    """Ask on a terminal; without one, the demo runs (there is nobody to ask)."""
    if not sys.stdin.isatty():
        return True
    answer = input(
        "No repo declares models yet. Create an example project and train it, to see what "
        "Watchkeeper does? [Y/n] "
    )
    return answer.strip().lower() in ("", "y", "yes")


def show_the_loop(paths: WatchkeeperPaths) -> None:
    """Change the demo's data, wait for the agent's alert, then show `status` and `alerts`."""
    data_file = DemoProject(default_demo_root(paths)).data_file
    seen = {alert["id"] for alert in open_alerts(paths)}
    added = append_customers(data_file)
    print(f"\n# appended {added} customers to {data_file}; waiting for the agent's alert")
    alert = wait_for_alert(paths, seen, time.monotonic() + ALERT_DEADLINE_SECONDS)
    if alert is None:
        print(f"no alert within {ALERT_DEADLINE_SECONDS:.0f} s; `status` checks by itself:")
    else:
        print(f"the agent raised an alert: {alert['message']}")
    for command in (["status"], ["alerts"]):
        print(f"\n$ watchkeeper {' '.join(command)}", flush=True)
        subprocess.call([WATCHKEEPER, *command])


def wait_for_alert(
    paths: WatchkeeperPaths, seen: set[int], deadline: float
) -> dict[str, Any] | None:
    """The first alert not in `seen`, asked of the agent until the deadline, else None."""
    while time.monotonic() < deadline:
        fresh = [alert for alert in open_alerts(paths) if alert["id"] not in seen]
        if fresh:
            return fresh[0]
        time.sleep(ALERT_POLL_SECONDS)
    return None


def open_alerts(paths: WatchkeeperPaths) -> list[dict[str, Any]]:
    with AgentClient.connect(paths.socket, timeout=10) as client:
        rows: list[dict[str, Any]] = client.call("alerts")
    return rows


def main() -> int:
    try:
        paths = WatchkeeperPaths.from_environment()
        registered = projects_registered(paths)
    except WatchkeeperError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not registered and wants_demo():
        demo = subprocess.call([WATCHKEEPER, "demo"])
        if demo != 0:
            return demo
        if not (has_display() and sys.stdin.isatty()):
            try:
                show_the_loop(paths)
            except WatchkeeperError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            if not has_display():
                return 0
        return subprocess.call([WATCHKEEPER, "app"])
    if not agent_running():
        started = subprocess.call([WATCHKEEPER, "agent", "start"])
        if started != 0:
            return started
    if has_display():
        return subprocess.call([WATCHKEEPER, "app"])
    print("No display found: the agent runs in the background; here is the ledger's status.")
    status = subprocess.call([WATCHKEEPER, "status"])
    # status exits 1 when a model is stale: that is information, not a failure of `make run`.
    return 0 if status in (0, 1) else status


if __name__ == "__main__":
    sys.exit(main())
