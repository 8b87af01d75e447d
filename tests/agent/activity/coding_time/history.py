"""Seeded synthetic activity histories for the coding-time tests."""

from __future__ import annotations

import numpy as np

MONDAY = 19723  # 2024-01-01 as a day number
DAY = 86400
HOUR = 3600


def working_weeks(weeks: int, seed: int, with_saves: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """Weekdays with a 09:30-12:00 and a 13:30-16:00 coding block; returns events and the
    true mean coding minutes per day over all days."""
    rng = np.random.default_rng(seed)
    times: list[float] = []
    kinds: list[int] = []
    for day in range(weeks * 7):
        if day % 7 >= 5:
            continue
        for start, end in ((9.5, 12.0), (13.5, 16.0)):
            begin = (MONDAY + day) * DAY + start * HOUR
            finish = (MONDAY + day) * DAY + end * HOUR
            moment = begin + rng.exponential(1800)
            while moment < finish:
                times.append(moment)
                kinds.append(0)
                moment += rng.exponential(1800)
            if with_saves:
                moment = begin + rng.exponential(180)
                while moment < finish:
                    times.append(moment)
                    kinds.append(1)
                    moment += rng.exponential(180)
    order = np.argsort(times)
    truth = 5 * 300 / 7  # 300 minutes on five days out of seven
    return np.asarray(times)[order], np.asarray(kinds)[order], truth
