"""Automated identities: recognised by name/email, reported with no coding time."""

from __future__ import annotations

import numpy as np
import pytest

from agent.activity.coding_time import (
    TeamMember,
    estimate_coding_time,
    estimate_team,
    is_automated_identity,
)
from tests.agent.activity.coding_time.history import working_weeks


@pytest.mark.parametrize(
    ("name", "email"),
    [
        ("dependabot[bot]", "49699333+dependabot[bot]@users.noreply.github.com"),
        ("github-actions[bot]", "41898282+github-actions[bot]@users.noreply.github.com"),
        ("renovate[bot]", "29139614+renovate[bot]@users.noreply.github.com"),
        ("Renovate Bot", "bot@renovateapp.com"),
        ("release-bot", "release-bot@example.com"),
        ("CI", "ci_bot@example.org"),
        ("github-actions", "action@github.com"),
        ("pre-commit-ci", "66853113+pre-commit-ci@users.noreply.github.com"),
    ],
)
def test_bot_identities_are_recognised(name: str, email: str) -> None:
    assert is_automated_identity(name, email)


@pytest.mark.parametrize(
    ("name", "email"),
    [
        ("Alice", "12345+alice@users.noreply.github.com"),  # a person's noreply address
        ("Jane Abbott", "jane@robotics.example"),  # "bot" inside a word
        ("Talbot Smith", "talbot@example.com"),
        ("Bob", "bob@botanical.example"),  # the domain does not count
    ],
)
def test_people_are_not_taken_for_bots(name: str, email: str) -> None:
    assert not is_automated_identity(name, email)


def test_an_automated_identity_gets_no_coding_time_but_its_git_hours() -> None:
    times, kinds, _ = working_weeks(2, seed=4, with_saves=False)
    person = estimate_coding_time(times, kinds)
    bot = estimate_coding_time(times, kinds, automated=True)
    assert person.coding_minutes.sum() > 0
    assert bot.coding_minutes.tolist() == [0.0] * bot.n_days and bot.fit is None
    assert np.array_equal(bot.git_hours_minutes, person.git_hours_minutes)
    assert bot.git_hours_total_minutes == person.git_hours_total_minutes > 0
    team = estimate_team([TeamMember(times, kinds), TeamMember(times, kinds, automated=True)])
    assert [m.automated for m in team.members] == [False, True]
    assert team.members[0].coding_minutes > 0 and team.members[1].coding_minutes == 0.0
    assert team.members[1].git_hours_minutes == team.members[0].git_hours_minutes
