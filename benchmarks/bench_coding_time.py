"""Accuracy of coding-time estimates on simulated developers: the HMM against git-hours and a
15-minute timeout, commits only and commits + saves, as daily mean absolute error in minutes.

    .venv/bin/python benchmarks/bench_coding_time.py [--days 90] [--seeds 5] [--random 0]

Goals: HMM error at most 0.6x git-hours' with commits only, and at most 0.8x the timeout's
with commits + saves. `--random N` adds N developers with randomly drawn habits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from simulate_developer import (
    ALTERNATING_PROFILES,
    DAY,
    PROFILES,
    START_EPOCH,
    AlternatingProfile,
    DeveloperProfile,
    draw,
    random_profile,
)

from agent.activity.coding_time import estimate_coding_time

METHODS = ("hmm", "git_hours", "timeout")


def errors_for(
    profile: DeveloperProfile | AlternatingProfile, days: int, seed: int
) -> dict[str, dict[str, float]]:
    """Daily MAE of every method for one simulated developer, in both settings."""
    developer = draw(profile, days, seed)
    truth = developer.truth_minutes_per_day()
    local = developer.event_times + profile.utc_offset_minutes * 60
    first_day = START_EPOCH // DAY
    result: dict[str, dict[str, float]] = {}
    for setting, mask in (
        ("commits", developer.event_kinds == 0),
        ("commits+saves", np.ones(developer.event_kinds.shape, dtype=bool)),
    ):
        estimate = estimate_coding_time(
            local[mask],
            developer.event_kinds[mask],
            first_day=first_day,
            last_day=first_day + days - 1,
            with_sessions=False,
        )
        result[setting] = {
            "hmm": float(np.abs(estimate.coding_minutes - truth).mean()),
            "git_hours": float(np.abs(estimate.git_hours_minutes - truth).mean()),
            "timeout": float(np.abs(estimate.timeout_minutes - truth).mean()),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--random", type=int, default=0, help="extra random developers")
    parser.add_argument(
        "--generator",
        choices=("sessions", "alternating", "both"),
        default="both",
        help="which simulator's developers to draw",
    )
    arguments = parser.parse_args()
    profiles: dict[str, DeveloperProfile | AlternatingProfile] = {}
    if arguments.generator in ("sessions", "both"):
        profiles.update(PROFILES)
    if arguments.generator in ("alternating", "both"):
        profiles.update(ALTERNATING_PROFILES)
    for index in range(arguments.random):
        profile = random_profile(1000 + index)
        profiles[profile.name] = profile
    totals = {s: {m: [] for m in METHODS} for s in ("commits", "commits+saves")}
    began = time.perf_counter()
    print(f"daily mean absolute error in minutes, {arguments.days} days x {arguments.seeds} seeds")
    print(f"{'developer':16s} {'setting':14s} {'HMM':>7s} {'git-hours':>10s} {'timeout':>8s}")
    for name, profile in profiles.items():
        per_setting = {s: {m: [] for m in METHODS} for s in totals}
        for seed in range(arguments.seeds):
            for setting, errors in errors_for(profile, arguments.days, seed).items():
                for method, value in errors.items():
                    per_setting[setting][method].append(value)
                    totals[setting][method].append(value)
        for setting, by_method in per_setting.items():
            row = [float(np.mean(by_method[m])) for m in METHODS]
            print(f"{name:16s} {setting:14s} {row[0]:7.1f} {row[1]:10.1f} {row[2]:8.1f}")
    print()
    commits = {m: float(np.mean(v)) for m, v in totals["commits"].items()}
    both = {m: float(np.mean(v)) for m, v in totals["commits+saves"].items()}
    ratio_commits = commits["hmm"] / commits["git_hours"]
    ratio_both = both["hmm"] / both["timeout"]
    print(
        f"commits only:    HMM {commits['hmm']:.1f}  git-hours {commits['git_hours']:.1f}  "
        f"ratio {ratio_commits:.2f} (goal <= 0.60) {'OK' if ratio_commits <= 0.6 else 'MISSED'}"
    )
    print(
        f"commits + saves: HMM {both['hmm']:.1f}  timeout {both['timeout']:.1f}  "
        f"ratio {ratio_both:.2f} (goal <= 0.80) {'OK' if ratio_both <= 0.8 else 'MISSED'}"
    )
    print(f"({time.perf_counter() - began:.1f} s)")


if __name__ == "__main__":
    main()
