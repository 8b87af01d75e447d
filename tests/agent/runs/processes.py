"""Process helpers shared by the run tests."""

from __future__ import annotations

import os
import time


def group_gone(pgid: int, timeout: float = 10) -> bool:
    """Wait until no process of group `pgid` is left; False when one still runs at `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
