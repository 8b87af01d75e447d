"""Coding-time estimates of a person or a team: minutes per day, sessions, heatmap, reviews."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from agent.activity.coding_time.baselines import (
    git_hours_minutes_per_day,
    git_hours_total_minutes,
    timeout_minutes_per_day,
)
from agent.activity.coding_time.bins import (
    COMMIT,
    EPOCH_WEEKDAY,
    HOURS_PER_WEEK,
    KIND_NAMES,
    BinnedActivity,
    bin_events,
    day_numbers,
    subsample_sequences,
)
from agent.activity.coding_time.model import (
    CODING,
    STATE_NAMES,
    CodingTimePriors,
    HMMParameters,
    ModelFit,
    default_prior,
    fit_parameters,
    poisson_hmm,
    posteriors_of,
    prior_from_model,
    scale_dwell_prior,
)

REPEAT_COMMIT_SECONDS = 120.0
MIN_COMMIT_DAY_MINUTES = 5.0


@dataclass(frozen=True)
class ReviewWindow:
    """A stretch of hours on one weekday (Monday = 0) suited to asking for a code review."""

    weekday: int
    start_hour: int
    end_hour: int  # exclusive


@dataclass
class CodingTimeEstimate:
    """Everything the coding-time report shows, in local time."""

    first_day: int
    n_days: int
    bin_minutes: int
    coding_minutes: np.ndarray  # (n_days,) HMM
    git_hours_minutes: np.ndarray  # (n_days,)
    timeout_minutes: np.ndarray  # (n_days,)
    sessions: np.ndarray  # (S, 2) local seconds: start, end of each Viterbi coding segment
    heatmap: np.ndarray  # (7, 24) mean coding minutes per week in that hour, Monday first
    presence: np.ndarray  # (7, 24) mean minutes per week present (coding or at the desk)
    peak_hours: list[int]
    review_windows: list[ReviewWindow]
    event_counts: dict[str, int]
    fit: ModelFit | None
    coding_state: int = CODING
    bin_numbers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # kept bins
    bin_coding_minutes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per kept bin
    git_hours_total_minutes: float = 0.0  # git-hours' own total: whole hours, per author

    @property
    def dates(self) -> list[str]:
        """ISO dates (YYYY-MM-DD) of the reported days."""
        days = np.arange(self.first_day, self.first_day + self.n_days).astype("datetime64[D]")
        return [str(day) for day in days]

    def model_summary(self) -> dict[str, object]:
        """The fitted model in plain JSON-ready values."""
        if self.fit is None:
            return {
                "parameters": None,
                "log_likelihood": None,
                "n_iter": 0,
                "converged": False,
                "change_per_bin": None,
                "tolerance": None,
            }
        parameters = self.fit.parameters
        overall = parameters.overall_transmat
        bins_per_hour = 60.0 / self.bin_minutes
        dwell = self.bin_minutes / np.maximum(1.0 - np.diag(overall), 1e-12)
        n_kinds = parameters.lambdas.shape[1]
        return {
            "parameters": {
                "states": list(STATE_NAMES),
                "coding_state": STATE_NAMES[self.coding_state],
                "bin_minutes": self.bin_minutes,
                "startprob": parameters.startprob.round(6).tolist(),
                "transmat_mean": overall.round(6).tolist(),
                "mean_dwell_minutes": dwell.round(2).tolist(),
                "rates_per_hour": {
                    KIND_NAMES[kind]: (parameters.lambdas[:, kind] * bins_per_hour)
                    .round(5)
                    .tolist()
                    for kind in range(n_kinds)
                },
                "transition_classes": "hour of week (168)",
            },
            "log_likelihood": round(self.fit.log_likelihood, 4),
            "n_iter": self.fit.n_iter,
            "converged": self.fit.converged,
            "change_per_bin": float(f"{self.fit.change_per_bin:.3g}"),
            "tolerance": self.fit.tolerance,
        }


def coding_minutes_per_bin(coding: np.ndarray, activity: BinnedActivity) -> np.ndarray:
    """Expected coding minutes in each bin, from P(coding) with a correction at the edges.

    A session rarely starts or ends exactly on a bin boundary. Where P(coding) rises from one
    bin to the next (an entry, with probability the rise) the switch is taken as uniform
    between the bin's start and its first event, so half of that stretch is not coding; where
    it falls (an exit) the same holds between the last event and the bin's end. Bins without
    events lose half a bin per entry or exit. Without this, every session would gain about
    half a bin at each end.
    """
    seconds = float(activity.bin_seconds)
    previous = np.r_[coding[:1], coding[:-1]]
    following = np.r_[coding[1:], coding[-1:]]
    previous[activity.starts] = coding[activity.starts]
    following[activity.ends - 1] = coding[activity.ends - 1]
    entry = np.maximum(coding - previous, 0.0)
    leave = np.maximum(coding - following, 0.0)
    first = (
        activity.first_offset
        if activity.first_offset is not None
        else np.full(coding.shape, np.nan)
    )
    last = (
        activity.last_offset if activity.last_offset is not None else np.full(coding.shape, np.nan)
    )
    before_first = np.where(np.isnan(first), seconds, first)
    after_last = np.where(np.isnan(last), seconds, seconds - last)
    lost = entry * before_first / 2 + leave * after_last / 2
    minutes: np.ndarray = np.maximum(coding * seconds - lost, 0.0) / 60.0
    return minutes


def coding_state_of(lambdas: np.ndarray) -> int:
    """The state with the highest event rate (rates scaled per kind so kinds weigh alike)."""
    scaled = lambdas / np.maximum(lambdas.max(axis=0, keepdims=True), 1e-300)
    return int(np.argmax(scaled.sum(axis=1)))


def _weekday_counts(first_day: int, n_days: int) -> np.ndarray:
    weekdays = (np.arange(first_day, first_day + n_days) + EPOCH_WEEKDAY) % 7
    counts: np.ndarray = np.bincount(weekdays, minlength=7).astype(np.float64)
    return counts


def _week_grid(activity: BinnedActivity, weights: np.ndarray) -> np.ndarray:
    """(7, 24) minutes per week: bin weights summed per hour of the week, over weeks covered."""
    totals = np.bincount(activity.classes, weights=weights, minlength=HOURS_PER_WEEK)
    per_weekday = np.maximum(_weekday_counts(activity.first_day, activity.n_days), 1.0)
    grid: np.ndarray = totals.reshape(7, 24) * activity.bin_minutes / per_weekday[:, None]
    return grid


def peak_hours_of(heatmap: np.ndarray, count: int = 3) -> list[int]:
    """The hours of the day with the most coding minutes over the week (best first)."""
    by_hour = heatmap.sum(axis=0)
    order = np.argsort(-by_hour, kind="stable")
    return [int(hour) for hour in order[:count] if by_hour[hour] > 0]


def review_windows_of(heatmap: np.ndarray, presence: np.ndarray) -> list[ReviewWindow]:
    """Hours to ask this person for a review: usually at work, but not deep in code.

    An hour of the week is *at work* when the person is present (coding or at the desk) at
    least a quarter of the time and at least half as often as in their most present hour. Among
    at-work hours, those whose share of coding is in the top quarter are *deep-coding* hours.
    Review windows are the runs of consecutive at-work, non-deep-coding hours on each weekday.
    """
    presence_share = presence / 60.0
    if presence_share.max() <= 0:
        return []
    at_work = presence_share >= max(0.25, 0.5 * float(presence_share.max()))
    if not at_work.any():
        return []
    coding_share = np.where(presence > 0, heatmap / np.maximum(presence, 1e-12), 0.0)
    deep_threshold = float(np.quantile(coding_share[at_work], 0.75))
    deep = at_work & (coding_share >= deep_threshold) & (coding_share > 0)
    if deep.all() or (at_work & ~deep).sum() == 0:
        deep = np.zeros_like(at_work)
    review = at_work & ~deep
    windows: list[ReviewWindow] = []
    for weekday in range(7):
        hour = 0
        while hour < 24:
            if review[weekday, hour]:
                end = hour
                while end < 24 and review[weekday, end]:
                    end += 1
                windows.append(ReviewWindow(weekday, hour, end))
                hour = end
            else:
                hour += 1
    return windows


def viterbi_sessions(
    parameters: HMMParameters, activity: BinnedActivity, coding_state: int, n_jobs: int = 1
) -> np.ndarray:
    """(S, 2) local start and end seconds of the Viterbi path's coding segments."""
    if activity.counts.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.int64)
    model = poisson_hmm(parameters, n_jobs)
    _, path = model.decode(
        activity.counts, lengths=activity.lengths, classes=activity.classes, algorithm="viterbi"
    )
    coding = np.asarray(path) == coding_state
    boundary = np.zeros(coding.shape[0] + 1, dtype=bool)
    boundary[activity.starts] = True
    previous = np.r_[False, coding[:-1]] & ~boundary[:-1]
    following = np.r_[coding[1:], False] & ~boundary[1:]
    starts = np.flatnonzero(coding & ~previous)
    ends = np.flatnonzero(coding & ~following)
    seconds = activity.bin_seconds
    sessions: np.ndarray = np.stack(
        [activity.bins[starts] * seconds, (activity.bins[ends] + 1) * seconds], axis=1
    ).astype(np.int64)
    return sessions


def thin_repeats(times: np.ndarray, within_seconds: float = REPEAT_COMMIT_SECONDS) -> np.ndarray:
    """Mask of the events to keep: an event less than `within_seconds` after the last kept one
    adds nothing. A patch series applied with `git am`, a rebase that refreshed dates, a
    cherry-picked batch or a bot's burst then counts as one act of work, not as dozens of
    commits in one bin (which would teach the model that coding means a commit a minute).

    >>> thin_repeats(np.array([0.0, 30.0, 90.0, 150.0, 400.0])).tolist()
    [True, False, False, True, True]
    """
    times = np.asarray(times, dtype=np.float64)
    keep = np.ones(times.size, dtype=bool)
    if times.size < 2:
        return keep
    order = np.argsort(times, kind="stable")
    ordered = times[order]
    close = np.flatnonzero(np.diff(ordered) < within_seconds) + 1
    if close.size == 0:
        return keep
    sorted_keep = np.ones(times.size, dtype=bool)
    close_set = np.zeros(times.size, dtype=bool)
    close_set[close] = True
    last_kept = ordered[0]
    for index in range(1, times.size):  # only runs of close events need the sequential rule
        if close_set[index] and ordered[index] - last_kept < within_seconds:
            sorted_keep[index] = False
        else:
            last_kept = ordered[index]
    keep[order] = sorted_keep
    return keep


USUAL_WEEKDAY_SHARE = 0.5  # a weekday the person is active on at least this often
MIN_SHRINK_DAYS = 5  # fewer active days of a kind than this are left as they are


def shrink_active_days(
    minutes: np.ndarray, event_counts: np.ndarray, active_days: np.ndarray, first_day: int
) -> np.ndarray:
    """Each active day's minutes pulled towards the mean of the person's similar active days,
    by as much as the day's event count is noise (empirical Bayes).

    A day's events are a Poisson sample of its work: if a day holds T minutes of coding and
    the person commits at rate r, its count is Poisson(rT). Over the person's active days the
    counts have mean m and variance v = m + r^2 Var(T), so the share of a day's deviation
    that is real is w = 1 - m/v (the Poisson-gamma posterior's weight on the day). Each day
    becomes w x its minutes + (1 - w) x the group's mean minutes, so the group's total is
    unchanged. A person whose daily commit counts vary no more than chance (one commit per
    session, say) gets their mean on every such day; one whose counts swing widely keeps
    each day's own figure. Days are grouped by weekday habit: active days on the weekdays
    the person is active on at least half the time, and the rest (weekend or odd days); a
    group of fewer than five days is left as it is. Days without events are not touched.

    Counts that vary less than chance (1, 3, 2, 2, 2): every active day gets the mean.

    >>> minutes = np.array([100.0, 300.0, 200.0, 0.0, 0.0, 200.0, 200.0])
    >>> active = np.array([0, 1, 2, 5, 6])
    >>> shrink_active_days(minutes, np.array([1, 3, 2, 0, 0, 2, 2]), active, 0).tolist()
    [200.0, 200.0, 200.0, 0.0, 0.0, 200.0, 200.0]

    Counts that vary far more (1, 9, 5, 5, 5: mean 5, variance 8): w = 3/8.

    >>> shrink_active_days(minutes, np.array([1, 9, 5, 0, 0, 5, 5]), active, 0).tolist()
    [162.5, 237.5, 200.0, 0.0, 0.0, 200.0, 200.0]
    """
    n_days = minutes.size
    weekday = (np.arange(first_day, first_day + n_days) + EPOCH_WEEKDAY) % 7
    seen = np.bincount(weekday, minlength=7)
    active = np.bincount(weekday[active_days], minlength=7)
    usual = active >= USUAL_WEEKDAY_SHARE * np.maximum(seen, 1)
    on_usual = usual[weekday[active_days]]
    result = minutes.copy()
    for group in (active_days[on_usual], active_days[~on_usual]):
        if group.size < MIN_SHRINK_DAYS:
            continue
        counts = event_counts[group].astype(np.float64)
        mean, variance = float(counts.mean()), float(counts.var(ddof=1))
        weight = max(0.0, 1.0 - mean / variance) if variance > 0 else 0.0
        typical = float(minutes[group].mean())
        result[group] = weight * minutes[group] + (1.0 - weight) * typical
    return result


def _daily_minutes(
    parameters: HMMParameters, activity: BinnedActivity, coding_state: int, n_jobs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coding minutes per day, per-bin coding minutes, posteriors) of `activity`."""
    posteriors = posteriors_of(parameters, activity, n_jobs)
    per_bin = coding_minutes_per_bin(posteriors[:, coding_state], activity)
    per_day = np.bincount(activity.day_index, weights=per_bin, minlength=activity.n_days)[
        : activity.n_days
    ]
    return per_day, per_bin, posteriors


def estimate_coding_time(
    local_times: np.ndarray,
    kinds: np.ndarray,
    *,
    bin_minutes: int = 5,
    first_day: int | None = None,
    last_day: int | None = None,
    priors: CodingTimePriors | None = None,
    prior_model: HMMParameters | None = None,
    initial: HMMParameters | None = None,
    n_iter: int = 100,
    tol: float = 1e-5,
    n_jobs: int = 1,
    with_sessions: bool = True,
    max_fit_rows: int = 20_000,
    presence_only: np.ndarray | None = None,
    git_hours_times: tuple[np.ndarray, np.ndarray] | None = None,
    min_commit_day_minutes: float = MIN_COMMIT_DAY_MINUTES,
    shrink_days: bool = True,
    automated: bool = False,
) -> CodingTimeEstimate:
    """Fit the hour-of-week HMM to one person's events and report coding time and baselines.

    `local_times` are epoch seconds shifted by the user's UTC offset; `kinds` are 0 (commit)
    or 1 (save). `prior_model` centres the priors on a fitted model (a team model) instead of
    the generic habits in `priors`; `initial` warm-starts EM. A history longer than
    `max_fit_rows` kept bins is fitted on an even sample of its sequences.

    How a commit is read: a commit less than two minutes after the person's previous counted
    commit adds nothing (`thin_repeats`). `presence_only` marks events (merge commits) that
    say the person was at work but not how fast they commit: the parameters are fitted
    without them, and each day's estimate is the larger of the posteriors without and with
    them, so adding them never lowers a day. A day with a commit gets at least
    `min_commit_day_minutes`. `git_hours_times` are (UTC committer times, their local times)
    of the commits git-hours counts; by default the commit events' own local times.
    `automated` (a bot's identity, see `automation.is_automated_identity`) gives no coding
    time at all and no fit; git-hours and the timeout are computed as for anyone.

    Example::

        day = 19000 * 86400  # a Monday
        times = day + 3600 * np.array([9.0, 9.5, 10.0, 10.4, 11.0])
        estimate = estimate_coding_time(times, np.zeros(5, dtype=int))
        estimate.git_hours_minutes.tolist()  # [120.0]
    """
    priors = priors or CodingTimePriors()
    times = np.asarray(local_times, dtype=np.float64)
    kinds = np.asarray(kinds, dtype=np.int64)
    extra = (
        np.zeros(times.shape, dtype=bool)
        if presence_only is None
        else np.asarray(presence_only, dtype=bool)
    )
    if extra.shape != times.shape:
        raise ValueError("presence_only must have one flag per event")
    n_kinds = int(kinds.max()) + 1 if kinds.size else 1
    if prior_model is not None:
        n_kinds = max(n_kinds, prior_model.lambdas.shape[1])
    all_days = day_numbers(times)
    if first_day is None:
        first_day = int(all_days.min()) if times.size else (last_day or 0)
    if last_day is None:
        last_day = int(all_days.max()) if times.size else first_day
    if last_day < first_day:
        raise ValueError(f"last_day {last_day} is before first_day {first_day}")
    n_days = last_day - first_day + 1
    event_days = day_numbers(times)
    inside = (event_days >= first_day) & (event_days <= last_day)
    times, kinds, extra = times[inside], kinds[inside], extra[inside]
    is_commit = kinds == COMMIT
    if git_hours_times is None:
        git_hours = git_hours_minutes_per_day(times[is_commit], first_day, n_days)
        git_hours_total = git_hours_total_minutes(times[is_commit])
    else:
        utc, local = (np.asarray(a, dtype=np.float64) for a in git_hours_times)
        git_hours = git_hours_minutes_per_day(utc, first_day, n_days, local_times=local)
        in_range = (day_numbers(local) >= first_day) & (day_numbers(local) <= last_day)
        git_hours_total = git_hours_total_minutes(utc[in_range])
    timeout = timeout_minutes_per_day(times, first_day, n_days)
    counts = {KIND_NAMES[k]: int((kinds == k).sum()) for k in range(len(KIND_NAMES))}
    commit_days = np.unique(event_days[inside][is_commit]) - first_day
    # what the model reads: commits thinned (own and presence-only together, then apart)
    keep_all = np.ones(times.shape, dtype=bool)
    keep_all[is_commit] = thin_repeats(times[is_commit])
    own = ~extra
    keep_own = np.ones(times.shape, dtype=bool)
    keep_own[is_commit & own] = thin_repeats(times[is_commit & own])
    fit_times, fit_kinds = times[own & keep_own], kinds[own & keep_own]
    activity = bin_events(
        fit_times,
        fit_kinds,
        bin_minutes=bin_minutes,
        first_day=first_day,
        last_day=last_day,
        n_kinds=n_kinds,
    )
    if activity.counts.shape[0] == 0 and extra.any():
        # only presence-only events: fit on them, there is nothing else
        fit_times, fit_kinds, extra_used = times[keep_all], kinds[keep_all], False
        activity = bin_events(
            fit_times,
            fit_kinds,
            bin_minutes=bin_minutes,
            first_day=first_day,
            last_day=last_day,
            n_kinds=n_kinds,
        )
    else:
        extra_used = bool(extra.any())
    if activity.counts.shape[0] == 0 or automated:
        zeros = np.zeros((7, 24))
        return CodingTimeEstimate(
            first_day,
            n_days,
            bin_minutes,
            np.zeros(n_days),
            git_hours,
            timeout,
            np.zeros((0, 2), dtype=np.int64),
            zeros,
            zeros.copy(),
            [],
            [],
            counts,
            None,
            git_hours_total_minutes=git_hours_total,
        )
    prior, start = default_prior(fit_times, fit_kinds, n_kinds, bin_minutes, priors)
    if prior_model is not None:
        prior = prior_from_model(prior_model, priors, bin_minutes)
        start = prior_model
    sample = subsample_sequences(activity, max_fit_rows)
    prior = scale_dwell_prior(prior, sample, priors)
    fit = fit_parameters(sample, prior, initial or start, n_iter=n_iter, tol=tol, n_jobs=n_jobs)
    coding_state = coding_state_of(fit.parameters.lambdas)
    coding_minutes, per_bin, posteriors = _daily_minutes(
        fit.parameters, activity, coding_state, n_jobs
    )
    if extra_used:
        # presence-only events are a kind of their own, as likely at the desk as coding
        presence_kind = np.where(extra, n_kinds, kinds)[keep_all]
        with_extra = bin_events(
            times[keep_all],
            presence_kind,
            bin_minutes=bin_minutes,
            first_day=first_day,
            last_day=last_day,
            n_kinds=n_kinds + 1,
        )
        rates = fit.parameters.lambdas
        presence_rates = np.full((rates.shape[0], 1), rates[:, COMMIT].max())
        presence_rates[rates[:, COMMIT].argmin()] = rates[:, COMMIT].min()
        extended = HMMParameters(
            fit.parameters.startprob, fit.parameters.transmat, np.hstack([rates, presence_rates])
        )
        minutes_extra, per_bin_extra, posteriors_extra = _daily_minutes(
            extended, with_extra, coding_state, n_jobs
        )
        if minutes_extra.sum() >= coding_minutes.sum():
            activity, per_bin, posteriors = with_extra, per_bin_extra, posteriors_extra
        coding_minutes = np.maximum(coding_minutes, minutes_extra)
    if shrink_days and not (fit_kinds != COMMIT).any():
        # commits only: a day's few commits are a thin sample of its work (saves are not)
        fit_days = day_numbers(fit_times) - first_day
        coding_minutes = shrink_active_days(
            coding_minutes,
            np.bincount(fit_days, minlength=n_days),
            np.unique(fit_days),
            first_day,
        )
    if commit_days.size and min_commit_day_minutes > 0:
        coding_minutes[commit_days] = np.maximum(
            coding_minutes[commit_days], min_commit_day_minutes
        )
    # the bins' minutes follow their day's total (raised to the floor, or shrunk), so that the
    # heatmap, peak hours and the per-repo split add up to the days shown
    day_of_bin = activity.day_index
    bin_totals = np.bincount(day_of_bin, weights=per_bin, minlength=n_days)[:n_days]
    scale = np.divide(coding_minutes, bin_totals, out=np.ones(n_days), where=bin_totals > 1e-9)
    per_bin = per_bin * scale[day_of_bin]
    away_state = int(np.argmin(fit.parameters.lambdas.sum(axis=1)))
    heatmap = _week_grid(activity, per_bin / bin_minutes)
    presence = _week_grid(activity, 1.0 - posteriors[:, away_state])
    sessions = (
        viterbi_sessions(fit.parameters, activity, coding_state, n_jobs)
        if with_sessions
        else np.zeros((0, 2), dtype=np.int64)
    )
    return CodingTimeEstimate(
        first_day=first_day,
        n_days=n_days,
        bin_minutes=bin_minutes,
        coding_minutes=coding_minutes,
        git_hours_minutes=git_hours,
        timeout_minutes=timeout,
        sessions=sessions,
        heatmap=heatmap,
        presence=presence,
        peak_hours=peak_hours_of(heatmap),
        review_windows=review_windows_of(heatmap, presence),
        event_counts=counts,
        fit=fit,
        coding_state=coding_state,
        bin_numbers=activity.bins,
        bin_coding_minutes=per_bin,
        git_hours_total_minutes=git_hours_total,
    )


@dataclass
class MemberEstimate:
    """Totals of one person over the reported days."""

    coding_minutes: float
    git_hours_minutes: float  # git-hours' own total (whole hours per author), in minutes
    timeout_minutes: float
    active_days: int
    n_events: int
    refined: bool  # kept for readers of the old team view: true when the person's fit ran
    converged: bool = True
    change_per_bin: float = 0.0
    automated: bool = False


@dataclass
class TeamEstimate:
    """One MemberEstimate per person, in input order."""

    members: list[MemberEstimate]
    team_fit: ModelFit | None  # kept for old readers: the fit of the busiest person
    bin_minutes: int

    @property
    def unconverged(self) -> list[int]:
        """Indexes of the members whose fit stopped at the iteration limit."""
        return [i for i, m in enumerate(self.members) if not m.converged]


@dataclass
class TeamMember:
    """One person's events for the team view (see `estimate_coding_time` for the fields)."""

    local_times: np.ndarray
    kinds: np.ndarray
    presence_only: np.ndarray | None = None
    git_hours_times: tuple[np.ndarray, np.ndarray] | None = None
    automated: bool = False  # a bot's identity: no coding time (see automation.py)


def estimate_team(
    members: list[tuple[np.ndarray, np.ndarray]] | list[TeamMember],
    *,
    bin_minutes: int = 5,
    first_day: int | None = None,
    last_day: int | None = None,
    priors: CodingTimePriors | None = None,
    n_jobs: int = 1,
    **_ignored: object,
) -> TeamEstimate:
    """Coding time of many people: each person's row is exactly their own estimate
    (`estimate_coding_time` on the same events with the same options), run `n_jobs` at a time.

    `members` holds a TeamMember, or (local_times, kinds), per person. Options of the earlier
    team model (`n_iter`, `refine_iter`, ...) are accepted and ignored.
    """
    if not members:
        return TeamEstimate([], None, bin_minutes)
    people = [m if isinstance(m, TeamMember) else TeamMember(m[0], m[1]) for m in members]
    if first_day is None or last_day is None:
        all_days = [
            day_numbers(np.asarray(p.local_times, dtype=np.float64))
            for p in people
            if len(p.local_times)
        ]
        if first_day is None:
            first_day = min((int(d.min()) for d in all_days), default=0)
        if last_day is None:
            last_day = max((int(d.max()) for d in all_days), default=first_day)

    def one(index: int) -> tuple[MemberEstimate, ModelFit | None]:
        person = people[index]
        times = np.asarray(person.local_times, dtype=np.float64)
        estimate = estimate_coding_time(
            times,
            np.asarray(person.kinds, dtype=np.int64),
            bin_minutes=bin_minutes,
            first_day=first_day,
            last_day=last_day,
            priors=priors,
            with_sessions=False,
            presence_only=person.presence_only,
            git_hours_times=person.git_hours_times,
            automated=person.automated,
        )
        days = day_numbers(times)
        active = int(np.unique(days[(days >= first_day) & (days <= last_day)]).size)
        fit = estimate.fit
        return (
            MemberEstimate(
                coding_minutes=float(estimate.coding_minutes.sum()),
                git_hours_minutes=estimate.git_hours_total_minutes,
                timeout_minutes=float(estimate.timeout_minutes.sum()),
                active_days=active,
                n_events=int(times.size),
                refined=fit is not None,
                converged=True if fit is None else fit.converged,
                change_per_bin=0.0 if fit is None else fit.change_per_bin,
                automated=person.automated,
            ),
            fit,
        )

    # busiest first, so that two workers finish together
    order = sorted(range(len(people)), key=lambda i: -len(people[i].local_times))
    if n_jobs > 1 and len(people) > 1:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            done = dict(zip(order, pool.map(one, order), strict=True))
    else:
        done = {index: one(index) for index in order}
    results = [done[index][0] for index in range(len(people))]
    return TeamEstimate(results, done[order[0]][1], bin_minutes)
