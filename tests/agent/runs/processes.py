"""Process helpers shared by the run tests."""

from __future__ import annotations

import os

from tests.support import wait_for


def group_gone(pgid: int, timeout: float = 10) -> bool:
    """Wait until no process of group `pgid` is left; fail the test when one still runs."""

    def gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    return wait_for(gone, timeout, f"every process of group {pgid} to end")
