"""What `make run` starts: the agent, then the desktop app when a display exists, else `status`."""

import os
import subprocess
import sys
from pathlib import Path

WATCHKEEPER = str(Path(sys.executable).parent / "watchkeeper")


def agent_running() -> bool:
    """True when `watchkeeper agent status` finds a live agent (it exits 0 then)."""
    status = subprocess.run([WATCHKEEPER, "agent", "status"], capture_output=True, text=True)
    return status.returncode == 0


def main() -> int:
    if not agent_running():
        started = subprocess.call([WATCHKEEPER, "agent", "start"])
        if started != 0:
            return started
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return subprocess.call([WATCHKEEPER, "app"])
    print("No display found: the agent runs in the background; here is the ledger's status.")
    status = subprocess.call([WATCHKEEPER, "status"])
    # status exits 1 when a model is stale: that is information, not a failure of `make run`.
    return 0 if status in (0, 1) else status


if __name__ == "__main__":
    sys.exit(main())
