"""Coding-time estimates of a person or a team: minutes per day, sessions, heatmap, reviews."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from agent.activity.coding_time.baselines import (
    TIMEOUT_MINUTES,
    git_hours_minutes_per_day,
    timeout_minutes_per_day,
)
from agent.activity.coding_time.bins import (
    COMMIT,
    EPOCH_WEEKDAY,
    HOURS_PER_WEEK,
    KIND_NAMES,
    SAVE,
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
    session_minutes_per_commit,
    typical_gap_minutes,
)


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

    @property
    def dates(self) -> list[str]:
        """ISO dates (YYYY-MM-DD) of the reported days."""
        days = np.arange(self.first_day, self.first_day + self.n_days).astype("datetime64[D]")
        return [str(day) for day in days]

    def model_summary(self) -> dict[str, object]:
        """The fitted model in plain JSON-ready values."""
        if self.fit is None:
            return {"parameters": None, "log_likelihood": None, "n_iter": 0, "converged": False}
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
    n_iter: int = 40,
    tol: float = 1e-5,
    n_jobs: int = 1,
    with_sessions: bool = True,
    max_fit_rows: int = 100_000,
) -> CodingTimeEstimate:
    """Fit the hour-of-week HMM to one person's events and report coding time and baselines.

    `local_times` are epoch seconds shifted by the user's UTC offset; `kinds` are 0 (commit)
    or 1 (save). `prior_model` centres the priors on a fitted model (a team model) instead of
    the generic habits in `priors`; `initial` warm-starts EM. A history longer than
    `max_fit_rows` kept bins is fitted on an even sample of its sequences.

    Example::

        day = 19000 * 86400  # a Monday
        times = day + 3600 * np.array([9.0, 9.5, 10.0, 10.4, 11.0])
        estimate = estimate_coding_time(times, np.zeros(5, dtype=int))
        estimate.git_hours_minutes.tolist()  # [240.0]
    """
    priors = priors or CodingTimePriors()
    times = np.asarray(local_times, dtype=np.float64)
    kinds = np.asarray(kinds, dtype=np.int64)
    n_kinds = int(kinds.max()) + 1 if kinds.size else 1
    if prior_model is not None:
        n_kinds = max(n_kinds, prior_model.lambdas.shape[1])
    activity = bin_events(
        times,
        kinds,
        bin_minutes=bin_minutes,
        first_day=first_day,
        last_day=last_day,
        n_kinds=n_kinds,
    )
    event_days = day_numbers(times)
    inside = (event_days >= activity.first_day) & (
        event_days < activity.first_day + activity.n_days
    )
    times, kinds = times[inside], kinds[inside]
    git_hours = git_hours_minutes_per_day(
        times[kinds == COMMIT], activity.first_day, activity.n_days
    )
    timeout = timeout_minutes_per_day(times, activity.first_day, activity.n_days)
    counts = {KIND_NAMES[k]: int((kinds == k).sum()) for k in range(len(KIND_NAMES))}
    if activity.counts.shape[0] == 0:
        zeros = np.zeros((7, 24))
        return CodingTimeEstimate(
            activity.first_day,
            activity.n_days,
            bin_minutes,
            np.zeros(activity.n_days),
            git_hours,
            timeout,
            np.zeros((0, 2), dtype=np.int64),
            zeros,
            zeros.copy(),
            [],
            [],
            counts,
            None,
        )
    prior, start = default_prior(times, kinds, n_kinds, bin_minutes, priors)
    if prior_model is not None:
        prior = prior_from_model(prior_model, priors, bin_minutes)
        start = prior_model
    sample = subsample_sequences(activity, max_fit_rows)
    prior = scale_dwell_prior(prior, sample, priors)
    fit = fit_parameters(sample, prior, initial or start, n_iter=n_iter, tol=tol, n_jobs=n_jobs)
    posteriors = posteriors_of(fit.parameters, activity, n_jobs)
    coding_state = coding_state_of(fit.parameters.lambdas)
    away_state = int(np.argmin(fit.parameters.lambdas.sum(axis=1)))
    coding = posteriors[:, coding_state]
    per_bin = coding_minutes_per_bin(coding, activity)
    coding_minutes = np.bincount(activity.day_index, weights=per_bin, minlength=activity.n_days)[
        : activity.n_days
    ]
    heatmap = _week_grid(activity, per_bin / bin_minutes)
    presence = _week_grid(activity, 1.0 - posteriors[:, away_state])
    sessions = (
        viterbi_sessions(fit.parameters, activity, coding_state, n_jobs)
        if with_sessions
        else np.zeros((0, 2), dtype=np.int64)
    )
    return CodingTimeEstimate(
        first_day=activity.first_day,
        n_days=activity.n_days,
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
    )


@dataclass
class MemberEstimate:
    """Totals of one person over the reported days."""

    coding_minutes: float
    git_hours_minutes: float
    timeout_minutes: float
    active_days: int
    n_events: int
    refined: bool


@dataclass
class TeamEstimate:
    """One MemberEstimate per person, in input order, and the shared team model."""

    members: list[MemberEstimate]
    team_fit: ModelFit | None
    bin_minutes: int


def _concatenate(activities: list[BinnedActivity]) -> BinnedActivity:
    offsets = np.cumsum([0] + [a.counts.shape[0] for a in activities[:-1]])
    return BinnedActivity(
        bin_minutes=activities[0].bin_minutes,
        first_day=activities[0].first_day,
        n_days=activities[0].n_days,
        bins=np.concatenate([a.bins for a in activities]),
        counts=np.concatenate([a.counts for a in activities]),
        classes=np.concatenate([a.classes for a in activities]),
        starts=np.concatenate([a.starts + o for a, o in zip(activities, offsets, strict=True)]),
        ends=np.concatenate([a.ends + o for a, o in zip(activities, offsets, strict=True)]),
    )


def estimate_team(
    members: list[tuple[np.ndarray, np.ndarray]],
    *,
    bin_minutes: int = 5,
    first_day: int | None = None,
    last_day: int | None = None,
    priors: CodingTimePriors | None = None,
    n_iter: int = 30,
    refine_iter: int = 2,
    min_refine_events: int = 20,
    n_jobs: int = 1,
    team_fit_rows: int = 300_000,
    member_fit_rows: int = 20_000,
) -> TeamEstimate:
    """Coding time of many people: one team model, then a short personal refit for each.

    The team model is fitted by MAP EM on an even sample (about `team_fit_rows` bins) of
    everyone's sequences at once, run in parallel. Each person with at least
    `min_refine_events` events then gets `refine_iter` EM iterations on up to
    `member_fit_rows` of their bins, started from the team model and with it as their prior;
    people with fewer events keep the team model. Posteriors cover every bin.
    `members` holds (local_times, kinds) per person.
    """
    priors = priors or CodingTimePriors()
    if not members:
        return TeamEstimate([], None, bin_minutes)
    n_kinds = max((int(k.max()) + 1 for _, k in members if k.size), default=1)
    if first_day is None or last_day is None:
        all_days = [day_numbers(np.asarray(t, dtype=np.float64)) for t, _ in members if t.size]
        if first_day is None:
            first_day = min((int(d.min()) for d in all_days), default=0)
        if last_day is None:
            last_day = max((int(d.max()) for d in all_days), default=first_day)
    activities = [
        bin_events(
            t, k, bin_minutes=bin_minutes, first_day=first_day, last_day=last_day, n_kinds=n_kinds
        )
        for t, k in members
    ]
    occupied = [a for a in activities if a.counts.shape[0]]
    team_fit: ModelFit | None = None
    if occupied:
        total_rows = sum(a.counts.shape[0] for a in occupied)
        stride = max(1, total_rows // (2 * team_fit_rows))  # spread the sample over people
        pooled = subsample_sequences(_concatenate(occupied[::stride]), team_fit_rows)
        gaps = [
            session_minutes_per_commit(np.asarray(t, np.float64)[k == COMMIT]) for t, k in members
        ]
        known = [g for g in gaps if g is not None]
        typical = float(np.median(known)) if known else 45.0
        synthetic = np.arange(3) * typical * 60.0
        prior, initial = default_prior(
            synthetic, np.zeros(3, dtype=np.int64), n_kinds, bin_minutes, priors
        )
        if n_kinds > SAVE:
            save_gaps = [
                typical_gap_minutes(np.asarray(t, np.float64)[k == SAVE], TIMEOUT_MINUTES)
                for t, k in members
            ]
            known_saves = [g for g in save_gaps if g is not None]
            if known_saves:
                rate = bin_minutes / max(float(np.median(known_saves)), 0.5)
                initial.lambdas[CODING, SAVE] = rate
                prior.rate_shape[CODING, SAVE] = 1.0 + rate * prior.rate_rate[CODING, SAVE]
        prior = scale_dwell_prior(prior, pooled, priors)
        team_fit = fit_parameters(pooled, prior, initial, n_iter=n_iter, n_jobs=n_jobs)

    def one(index: int) -> MemberEstimate:
        times = np.asarray(members[index][0], dtype=np.float64)
        kinds = np.asarray(members[index][1], dtype=np.int64)
        activity = activities[index]
        git_hours = git_hours_minutes_per_day(times[kinds == COMMIT], first_day, activity.n_days)
        timeout = timeout_minutes_per_day(times, first_day, activity.n_days)
        days = day_numbers(times)
        active = int(np.unique(days[(days >= first_day) & (days <= last_day)]).size)
        if team_fit is None or activity.counts.shape[0] == 0:
            return MemberEstimate(
                0.0, float(git_hours.sum()), float(timeout.sum()), active, int(times.size), False
            )
        parameters = team_fit.parameters
        refined = int(activity.counts.sum()) >= min_refine_events and refine_iter > 0
        if refined:
            sample = subsample_sequences(activity, member_fit_rows)
            member_prior = scale_dwell_prior(
                prior_from_model(parameters, priors, bin_minutes), sample, priors
            )
            parameters = fit_parameters(
                sample, member_prior, parameters, n_iter=refine_iter + 1
            ).parameters
        posteriors = posteriors_of(parameters, activity)
        coding = posteriors[:, coding_state_of(parameters.lambdas)]
        return MemberEstimate(
            coding_minutes=float(coding_minutes_per_bin(coding, activity).sum()),
            git_hours_minutes=float(git_hours.sum()),
            timeout_minutes=float(timeout.sum()),
            active_days=active,
            n_events=int(times.size),
            refined=refined,
        )

    if n_jobs > 1 and len(members) > 1:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            results = list(pool.map(one, range(len(members))))
    else:
        results = [one(index) for index in range(len(members))]
    return TeamEstimate(results, team_fit, bin_minutes)
