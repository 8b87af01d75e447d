"""Coding-time estimates from activity events: binning, an hour-of-week HMM and two baselines.

Everything here is pure computation on numpy arrays. Times arrive as *local* seconds: epoch
seconds plus the UTC offset of the user's time zone at that moment, so that day and hour
boundaries fall where the user's clock puts them. Event kinds are small integers (0 = commit,
1 = save).

The model has three hidden states: away (no events), at the desk but not coding (meetings,
reading, review: rare events), and coding (the state with the highest event rate). Emissions
are Poisson per event kind; the transition matrix depends on the hour of the week (168
classes). Parameters are fitted per person by maximum a posteriori EM: gamma priors on the
rates, Dirichlet priors on the transitions whose means encode typical dwell times, and every
hour-of-week matrix shrunk towards the person's own overall matrix, so hours with little data
fall back on it instead of producing nonsense.

`bins` counts events per bin of local time, `baselines` holds git-hours and the timeout,
`model` the priors and the MAP EM fit on `hmm_core.PoissonHMM`, `estimate` turns a fit
into the report (minutes per day, sessions, heatmap, review windows, the team view), and
`automation` tells a bot's identity (reported with no coding time) by its name and email.
"""

from agent.activity.coding_time.automation import is_automated_identity
from agent.activity.coding_time.baselines import (
    GIT_HOURS_FIRST_COMMIT_MINUTES,
    GIT_HOURS_MAX_GAP_MINUTES,
    GIT_HOURS_SESSION_START_MINUTES,
    TIMEOUT_MINUTES,
    author_time_sessions_minutes_per_day,
    git_hours_minutes_per_day,
    git_hours_total_minutes,
    timeout_minutes_per_day,
)
from agent.activity.coding_time.bins import (
    COMMIT,
    HOURS_PER_WEEK,
    KIND_NAMES,
    SAVE,
    SECONDS_PER_DAY,
    BinnedActivity,
    bin_events,
    hour_of_week,
)
from agent.activity.coding_time.estimate import (
    CodingTimeEstimate,
    MemberEstimate,
    ReviewWindow,
    TeamEstimate,
    TeamMember,
    estimate_coding_time,
    estimate_team,
)
from agent.activity.coding_time.model import (
    AWAY,
    CODING,
    DESK,
    STATE_NAMES,
    CodingTimePriors,
    HMMParameters,
    ModelFit,
)

__all__ = [
    "AWAY",
    "CODING",
    "COMMIT",
    "DESK",
    "GIT_HOURS_FIRST_COMMIT_MINUTES",
    "GIT_HOURS_MAX_GAP_MINUTES",
    "GIT_HOURS_SESSION_START_MINUTES",
    "HOURS_PER_WEEK",
    "KIND_NAMES",
    "SAVE",
    "SECONDS_PER_DAY",
    "STATE_NAMES",
    "TIMEOUT_MINUTES",
    "BinnedActivity",
    "CodingTimeEstimate",
    "CodingTimePriors",
    "HMMParameters",
    "MemberEstimate",
    "ModelFit",
    "ReviewWindow",
    "TeamEstimate",
    "TeamMember",
    "author_time_sessions_minutes_per_day",
    "bin_events",
    "estimate_coding_time",
    "estimate_team",
    "git_hours_minutes_per_day",
    "git_hours_total_minutes",
    "hour_of_week",
    "is_automated_identity",
    "timeout_minutes_per_day",
]
