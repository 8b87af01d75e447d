"""What `make run` starts: the best entry point the installed project offers on this machine."""

import os
import subprocess
import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
WATCHKEEPER = str(VENV_BIN / "watchkeeper")


def main() -> int:
    help_text = subprocess.run([WATCHKEEPER, "--help"], capture_output=True, text=True).stdout
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if " app " in help_text and has_display:
        return subprocess.call([WATCHKEEPER, "app"])
    if " agent " in help_text and " status " in help_text:
        subprocess.call([WATCHKEEPER, "agent", "start"])
        return subprocess.call([WATCHKEEPER, "status"])
    if " coding-time " in help_text:
        return subprocess.call([WATCHKEEPER, "coding-time", "--repo", "."])
    return subprocess.call([WATCHKEEPER, "--help"])


if __name__ == "__main__":
    sys.exit(main())
