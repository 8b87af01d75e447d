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
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

SECONDS_PER_DAY = 86400
HOURS_PER_WEEK = 168
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; weekdays count from Monday = 0
COMMIT, SAVE = 0, 1
KIND_NAMES = ("commit", "save")
AWAY, DESK, CODING = 0, 1, 2
STATE_NAMES = ("away", "desk", "coding")
N_STATES = 3

GIT_HOURS_MAX_GAP_MINUTES = 120.0
GIT_HOURS_FIRST_COMMIT_MINUTES = 120.0
TIMEOUT_MINUTES = 15.0


# ----------------------------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------------------------


def _day_numbers(local_times: np.ndarray) -> np.ndarray:
    days: np.ndarray = np.floor_divide(local_times, SECONDS_PER_DAY).astype(np.int64)
    return days


def _per_day(
    credit_minutes: np.ndarray, day: np.ndarray, first_day: int, n_days: int
) -> np.ndarray:
    index = day - first_day
    inside = (index >= 0) & (index < n_days)
    minutes: np.ndarray = np.bincount(
        index[inside], weights=credit_minutes[inside], minlength=n_days
    )[:n_days]
    return minutes


def git_hours_minutes_per_day(
    commit_local_times: np.ndarray, first_day: int, n_days: int
) -> np.ndarray:
    """The git-hours heuristic with its defaults, credited to the day of each commit.

    Commits are sorted; a gap to the previous commit shorter than 120 minutes counts in full,
    and the first commit of a session (a longer gap, or the very first commit) adds 120 minutes.

    >>> git_hours_minutes_per_day(np.array([0.0, 1800.0, 86400.0]), 0, 2).tolist()
    [150.0, 120.0]
    """
    times = np.sort(np.asarray(commit_local_times, dtype=np.float64))
    if times.size == 0:
        return np.zeros(n_days)
    gaps = np.diff(times) / 60.0
    credit = np.empty(times.size)
    credit[0] = GIT_HOURS_FIRST_COMMIT_MINUTES
    credit[1:] = np.where(gaps < GIT_HOURS_MAX_GAP_MINUTES, gaps, GIT_HOURS_FIRST_COMMIT_MINUTES)
    return _per_day(credit, _day_numbers(times), first_day, n_days)


def timeout_minutes_per_day(
    local_times: np.ndarray, first_day: int, n_days: int, timeout_minutes: float = TIMEOUT_MINUTES
) -> np.ndarray:
    """A WakaTime-style timeout: a gap between consecutive events shorter than the timeout
    counts in full (credited to the later event's day), a longer gap counts nothing.

    >>> timeout_minutes_per_day(np.array([0.0, 600.0, 4000.0]), 0, 1).tolist()
    [10.0]
    """
    times = np.sort(np.asarray(local_times, dtype=np.float64))
    if times.size < 2:
        return np.zeros(n_days)
    gaps = np.diff(times) / 60.0
    credit = np.where(gaps < timeout_minutes, gaps, 0.0)
    return _per_day(credit, _day_numbers(times[1:]), first_day, n_days)


# ----------------------------------------------------------------------------------------------
# Binning
# ----------------------------------------------------------------------------------------------


def hour_of_week(local_seconds: np.ndarray) -> np.ndarray:
    """Hour of the week (Monday 00:00-01:00 is 0) of local times in seconds."""
    hours = np.floor_divide(np.asarray(local_seconds, dtype=np.int64), 3600)
    result: np.ndarray = (hours + EPOCH_WEEKDAY * 24) % HOURS_PER_WEEK
    return result


@dataclass
class BinnedActivity:
    """Event counts on the bins near activity, as sequences the HMM reads.

    Bins further than `pad_hours` from every event are left out: each stretch of kept bins is
    one sequence, and left-out bins count as away.
    """

    bin_minutes: int
    first_day: int  # local day number (days since 1970-01-01) of the first reported day
    n_days: int
    bins: np.ndarray  # (T,) absolute bin numbers (local seconds // bin seconds)
    counts: np.ndarray  # (T, D) int64 events per kind
    classes: np.ndarray  # (T,) hour of the week
    starts: np.ndarray  # (S,) first row of each sequence
    ends: np.ndarray  # (S,) one past the last row
    first_offset: np.ndarray | None = (
        None  # (T,) seconds into the bin of its first event, NaN if none
    )
    last_offset: np.ndarray | None = (
        None  # (T,) seconds into the bin of its last event, NaN if none
    )

    @property
    def lengths(self) -> np.ndarray:
        lengths: np.ndarray = self.ends - self.starts
        return lengths

    @property
    def bin_seconds(self) -> int:
        return self.bin_minutes * 60

    @property
    def day_index(self) -> np.ndarray:
        """Report-day index (0 .. n_days-1) of every kept bin."""
        days: np.ndarray = (self.bins * self.bin_seconds) // SECONDS_PER_DAY - self.first_day
        return days


def bin_events(
    local_times: np.ndarray,
    kinds: np.ndarray,
    *,
    bin_minutes: int = 5,
    first_day: int | None = None,
    last_day: int | None = None,
    n_kinds: int | None = None,
    pad_hours: float = 3.0,
) -> BinnedActivity:
    """Count events per bin and kind on the stretches of bins within `pad_hours` of an event.

    `first_day`/`last_day` (inclusive local day numbers) bound the report; by default they are
    the days of the first and last event. Events outside are ignored.
    """
    if bin_minutes < 1 or (24 * 60) % bin_minutes != 0:
        raise ValueError(
            f"bin_minutes must divide a day evenly (1, 5, 10, 15, ...), got {bin_minutes}"
        )
    times = np.asarray(local_times, dtype=np.float64)
    kinds = np.asarray(kinds, dtype=np.int64)
    if times.shape != kinds.shape:
        raise ValueError("local_times and kinds must have the same length")
    if times.size and not np.all(np.isfinite(times)):
        raise ValueError("local_times contains NaN or infinite values")
    n_kinds = int(kinds.max()) + 1 if n_kinds is None and kinds.size else (n_kinds or 1)
    if kinds.size and (kinds.min() < 0 or kinds.max() >= n_kinds):
        raise ValueError(f"kinds must lie in [0, {n_kinds})")
    days = _day_numbers(times)
    if first_day is None:
        first_day = int(days.min()) if days.size else 0
    if last_day is None:
        last_day = int(days.max()) if days.size else first_day
    if last_day < first_day:
        raise ValueError(f"last_day {last_day} is before first_day {first_day}")
    inside = (days >= first_day) & (days <= last_day)
    times, kinds = times[inside], kinds[inside]
    bin_seconds = bin_minutes * 60
    bins_per_day = SECONDS_PER_DAY // bin_seconds
    low, high = first_day * bins_per_day, (last_day + 1) * bins_per_day
    event_bins = np.floor_divide(times, bin_seconds).astype(np.int64)
    n_days = last_day - first_day + 1
    if event_bins.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return BinnedActivity(
            bin_minutes,
            first_day,
            n_days,
            empty,
            np.zeros((0, n_kinds), np.int64),
            empty,
            empty,
            empty,
        )
    unique_bins = np.unique(event_bins)
    pad = max(1, round(pad_hours * 60 / bin_minutes))
    window_starts = np.maximum(unique_bins - pad, low)
    window_ends = np.minimum(unique_bins + pad + 1, high)
    opens = np.r_[True, window_starts[1:] > window_ends[:-1]]
    closes = np.r_[opens[1:], True]
    starts_abs, ends_abs = window_starts[opens], window_ends[closes]
    lengths = ends_abs - starts_abs
    ends = np.cumsum(lengths)
    starts = ends - lengths
    total = int(ends[-1])
    bins = np.arange(total, dtype=np.int64) + np.repeat(starts_abs - starts, lengths)
    rows = np.searchsorted(bins, event_bins)
    counts = np.bincount(rows * n_kinds + kinds, minlength=total * n_kinds)
    order = np.argsort(times, kind="stable")
    sorted_rows, offsets = rows[order], times[order] - event_bins[order] * bin_seconds
    first_offset = np.full(total, np.nan)
    last_offset = np.full(total, np.nan)
    first_offset[sorted_rows[::-1]] = offsets[::-1]  # the earliest event of a bin is written last
    last_offset[sorted_rows] = offsets
    return BinnedActivity(
        bin_minutes=bin_minutes,
        first_day=first_day,
        n_days=n_days,
        bins=bins,
        counts=counts.reshape(total, n_kinds).astype(np.int64),
        classes=hour_of_week(bins * bin_seconds),
        starts=starts.astype(np.int64),
        ends=ends.astype(np.int64),
        first_offset=first_offset,
        last_offset=last_offset,
    )


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodingTimePriors:
    """Prior beliefs about how people work, in minutes where possible.

    The transition prior says how long each state typically lasts and where it goes next;
    with events this sparse the data say little about how long a session lasts between them,
    so the prior is worth `dwell_share` times the number of kept bins per state (at least
    `dwell_strength` transitions): it keeps its weight however long the history is. Every
    hour-of-week matrix is shrunk towards the person's overall matrix with `hour_strength`
    pseudo-transitions per row. Rates are in events per hour; `rate_strength` is the prior's
    weight in hours of observation.
    """

    coding_minutes: float = 90.0
    desk_minutes: float = 30.0
    away_minutes: float = 180.0
    coding_exit_to_desk: float = 0.6
    desk_exit_to_coding: float = 0.6
    away_exit_to_coding: float = 0.5
    dwell_strength: float = 200.0
    dwell_share: float = 1.0
    hour_strength: float = 24.0
    away_rate_per_hour: float = 0.002  # fixed: away means no activity
    desk_commit_rate_per_hour: float = 0.15
    desk_save_rate_per_hour: float = 0.5
    rate_strength_hours: float = 50.0
    start_strength: float = 10.0


@dataclass
class HMMParameters:
    """Start (K,), hour-of-week transitions (168, K, K) and rates (K, D) of the model."""

    startprob: np.ndarray
    transmat: np.ndarray
    lambdas: np.ndarray

    def copy(self) -> HMMParameters:
        return HMMParameters(self.startprob.copy(), self.transmat.copy(), self.lambdas.copy())

    @property
    def overall_transmat(self) -> np.ndarray:
        mean: np.ndarray = self.transmat.mean(axis=0)
        return mean / mean.sum(axis=1, keepdims=True)


@dataclass
class ModelFit:
    """Parameters with the fit's diagnostics."""

    parameters: HMMParameters
    log_likelihood: float
    n_iter: int
    converged: bool
    history: list[float] = field(default_factory=list)


def _transition_prior(priors: CodingTimePriors, bin_minutes: int) -> np.ndarray:
    """Mean transition matrix per bin implied by the dwell times (rows: from, columns: to)."""
    # state, mean minutes in it, where it goes when it ends, and the share going there
    habits = (
        (AWAY, priors.away_minutes, CODING, priors.away_exit_to_coding),
        (DESK, priors.desk_minutes, CODING, priors.desk_exit_to_coding),
        (CODING, priors.coding_minutes, DESK, priors.coding_exit_to_desk),
    )
    matrix = np.zeros((N_STATES, N_STATES))
    for state, minutes, target, share in habits:
        leave = min(bin_minutes / minutes, 0.9)
        other = 3 - state - target  # the third state
        matrix[state, state] = 1.0 - leave
        matrix[state, target] = leave * share
        matrix[state, other] = leave * (1.0 - share)
    return matrix


def _typical_gap_minutes(local_times: np.ndarray, cutoff_minutes: float) -> float | None:
    """Mean gap between consecutive events, over gaps shorter than the cutoff."""
    if local_times.size < 3:
        return None
    gaps = np.diff(np.sort(local_times)) / 60.0
    gaps = gaps[(gaps > 0) & (gaps < cutoff_minutes)]
    if gaps.size < 2:
        return None
    return float(gaps.mean())


def _session_minutes_per_commit(commit_times: np.ndarray) -> float | None:
    """Session time per commit: git-hours' total (gaps under two hours in full, two hours per
    session start) divided by the number of commits. Unlike raw gaps it is not shortened by
    bursts of quick fix-up commits, and it counts the lead-in before a session's first commit.
    """
    if commit_times.size < 3:
        return None
    gaps = np.diff(np.sort(commit_times)) / 60.0
    total = GIT_HOURS_FIRST_COMMIT_MINUTES + float(
        np.where(gaps < GIT_HOURS_MAX_GAP_MINUTES, gaps, GIT_HOURS_FIRST_COMMIT_MINUTES).sum()
    )
    return total / commit_times.size


@dataclass
class ModelPrior:
    """Prior pseudo-counts in the units of the EM statistics."""

    transition_counts: np.ndarray  # (K, K) Dirichlet pseudo-counts for the overall matrix
    hour_strength: float
    rate_shape: np.ndarray  # (K, D) gamma shape a (mode uses a - 1)
    rate_rate: np.ndarray  # (K, D) gamma rate b, in bins
    fixed_rates: np.ndarray  # (K,) bool: states whose rates are not learned
    start_counts: np.ndarray  # (K,)


def default_prior(
    local_times: np.ndarray,
    kinds: np.ndarray,
    n_kinds: int,
    bin_minutes: int,
    priors: CodingTimePriors,
) -> tuple[ModelPrior, HMMParameters]:
    """Priors and starting parameters for one person's events.

    The coding-state rate of each kind is centred on the person's own habits: for commits,
    one per `_session_minutes_per_commit` of session time; for saves, the mean gap between
    saves under fifteen minutes apart. A rare committer and a frequent one thus both get a
    sensible lead-in before a session's first commit.
    """
    bins_per_hour = 60.0 / bin_minutes
    mean_matrix = _transition_prior(priors, bin_minutes)
    transition_counts = mean_matrix * priors.dwell_strength
    rates = np.zeros((N_STATES, n_kinds))
    cutoffs = {SAVE: TIMEOUT_MINUTES}
    defaults = {COMMIT: 45.0, SAVE: 4.0}
    desk = {COMMIT: priors.desk_commit_rate_per_hour, SAVE: priors.desk_save_rate_per_hour}
    for kind in range(n_kinds):
        of_kind = local_times[kinds == kind]
        gap = (
            _session_minutes_per_commit(of_kind)
            if kind == COMMIT
            else _typical_gap_minutes(of_kind, cutoffs.get(kind, 60.0))
        )
        gap = gap if gap is not None else defaults.get(kind, 30.0)
        rates[CODING, kind] = bin_minutes / max(gap, 0.5)
        rates[DESK, kind] = min(desk.get(kind, 0.2) / bins_per_hour, 0.5 * rates[CODING, kind])
        rates[AWAY, kind] = priors.away_rate_per_hour / bins_per_hour
    strength_bins = priors.rate_strength_hours * bins_per_hour
    rate_rate = np.full((N_STATES, n_kinds), strength_bins)
    rate_shape = 1.0 + rates * strength_bins
    fixed = np.zeros(N_STATES, dtype=bool)
    fixed[AWAY] = True
    start = np.array([0.8, 0.1, 0.1])
    prior = ModelPrior(
        transition_counts=transition_counts,
        hour_strength=priors.hour_strength,
        rate_shape=rate_shape,
        rate_rate=rate_rate,
        fixed_rates=fixed,
        start_counts=start * priors.start_strength,
    )
    initial = HMMParameters(
        startprob=start,
        transmat=np.broadcast_to(mean_matrix, (HOURS_PER_WEEK, N_STATES, N_STATES)).copy(),
        lambdas=rates,
    )
    return prior, initial


def prior_from_model(
    model: HMMParameters, priors: CodingTimePriors, bin_minutes: int
) -> ModelPrior:
    """A prior centred on a fitted model (a team model as the prior of each member)."""
    bins_per_hour = 60.0 / bin_minutes
    strength_bins = priors.rate_strength_hours * bins_per_hour
    fixed = np.zeros(N_STATES, dtype=bool)
    fixed[AWAY] = True
    return ModelPrior(
        transition_counts=model.overall_transmat * priors.dwell_strength,
        hour_strength=priors.hour_strength,
        rate_shape=1.0 + model.lambdas * strength_bins,
        rate_rate=np.full(model.lambdas.shape, strength_bins),
        fixed_rates=fixed,
        start_counts=model.startprob * priors.start_strength,
    )


def scale_dwell_prior(
    prior: ModelPrior, activity: BinnedActivity, priors: CodingTimePriors
) -> ModelPrior:
    """Give the transition prior `dwell_share` of the data's weight (see CodingTimePriors)."""
    per_state = max(priors.dwell_strength, priors.dwell_share * activity.counts.shape[0] / N_STATES)
    rows = prior.transition_counts / prior.transition_counts.sum(axis=1, keepdims=True)
    return replace(prior, transition_counts=rows * per_state)


@dataclass
class Statistics:
    """Expected sufficient statistics of one E-step."""

    log_likelihood: float
    start: np.ndarray  # (K,)
    transitions: np.ndarray  # (C, K, K)
    occupancy: np.ndarray  # (K,)
    emitted: np.ndarray  # (K, D)


def _poisson_model(
    parameters: HMMParameters, n_jobs: int, n_iter: int = 1, params: str = "stl"
) -> Any:
    from hmm_core import PoissonHMM

    model = PoissonHMM(
        n_components=N_STATES,
        n_iter=n_iter,
        tol=-np.inf,
        params=params,
        init_params="",
        n_classes=HOURS_PER_WEEK,
        n_jobs=n_jobs,
    )
    model.startprob_ = parameters.startprob.copy()
    model.transmat_ = parameters.transmat.copy()
    model.lambdas_ = parameters.lambdas.copy()
    return model


def posteriors_of(
    parameters: HMMParameters, activity: BinnedActivity, n_jobs: int = 1
) -> np.ndarray:
    """Posterior state probabilities (T, K) of every kept bin."""
    model = _poisson_model(parameters, n_jobs)
    _, posteriors = model.score_samples(
        activity.counts, lengths=activity.lengths, classes=activity.classes
    )
    result: np.ndarray = posteriors
    return result


def expectation_step(
    activity: BinnedActivity, parameters: HMMParameters, n_jobs: int = 1
) -> Statistics:
    """One E-step on the binned activity: the sufficient statistics a MAP M-step needs."""
    model = _poisson_model(parameters, n_jobs)
    log_likelihood, stats = model.expected_statistics(
        activity.counts, activity.lengths, activity.classes
    )
    return Statistics(
        log_likelihood=float(log_likelihood),
        start=stats["start"],
        transitions=stats["trans"].reshape(HOURS_PER_WEEK, N_STATES, N_STATES),
        occupancy=stats["post"],
        emitted=stats["obs"],
    )


def maximize(statistics: Statistics, prior: ModelPrior, current: HMMParameters) -> HMMParameters:
    """The MAP M-step: Dirichlet priors on transitions (hour-of-week rows shrunk towards the
    overall matrix), gamma priors on rates, fixed rates where the prior says so."""
    start = statistics.start + prior.start_counts
    overall_counts = statistics.transitions.sum(axis=0) + prior.transition_counts
    overall = overall_counts / overall_counts.sum(axis=1, keepdims=True)
    hourly = statistics.transitions + prior.hour_strength * overall[None, :, :]
    hourly /= hourly.sum(axis=2, keepdims=True)
    rates = (prior.rate_shape - 1.0 + statistics.emitted) / (
        prior.rate_rate + statistics.occupancy[:, None]
    )
    rates[prior.fixed_rates] = current.lambdas[prior.fixed_rates]
    rates = np.maximum(rates, 1e-9)
    return HMMParameters(startprob=start / start.sum(), transmat=hourly, lambdas=rates)


def _log_prior(parameters: HMMParameters, prior: ModelPrior) -> float:
    overall = parameters.overall_transmat
    value = float(np.sum(prior.transition_counts * np.log(np.maximum(overall, 1e-300))))
    value += float(
        np.sum(
            prior.hour_strength * overall[None] * np.log(np.maximum(parameters.transmat, 1e-300))
        )
    )
    learned = ~prior.fixed_rates
    lam = parameters.lambdas[learned]
    value += float(
        np.sum((prior.rate_shape[learned] - 1.0) * np.log(lam) - prior.rate_rate[learned] * lam)
    )
    return value


def fit_parameters(
    activity: BinnedActivity,
    prior: ModelPrior,
    initial: HMMParameters,
    *,
    n_iter: int = 40,
    tol: float = 1e-5,
    n_jobs: int = 1,
) -> ModelFit:
    """MAP EM from `initial` until the gain in log posterior per bin falls below `tol` or after
    `n_iter` E-steps. The returned parameters are the ones the last E-step used."""
    parameters = initial.copy()
    history: list[float] = []
    converged = False
    rows = max(1, activity.counts.shape[0])
    iteration = 0
    log_likelihood = 0.0
    for iteration in range(1, n_iter + 1):
        statistics = expectation_step(activity, parameters, n_jobs)
        log_likelihood = statistics.log_likelihood
        objective = log_likelihood + _log_prior(parameters, prior)
        converged = bool(history) and abs(objective - history[-1]) < tol * rows
        history.append(objective)
        if converged or iteration == n_iter:
            break
        parameters = maximize(statistics, prior, parameters)
    return ModelFit(
        parameters=parameters,
        log_likelihood=log_likelihood,
        n_iter=iteration,
        converged=converged,
        history=history,
    )


# ----------------------------------------------------------------------------------------------
# Estimates
# ----------------------------------------------------------------------------------------------


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
    model = _poisson_model(parameters, n_jobs)
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


def subsample_sequences(activity: BinnedActivity, max_rows: int) -> BinnedActivity:
    """Every k-th sequence, k chosen so that at most about `max_rows` bins remain.

    Parameters are fitted on this evenly spread sample of a long history; posteriors and
    the Viterbi path still cover every bin.
    """
    total = activity.counts.shape[0]
    if total <= max_rows or activity.starts.size <= 1:
        return activity
    stride = int(np.ceil(total / max_rows))
    chosen = np.arange(0, activity.starts.size, stride)
    lengths = activity.lengths[chosen]
    rows = np.concatenate(
        [
            np.arange(a, b)
            for a, b in zip(activity.starts[chosen], activity.ends[chosen], strict=True)
        ]
    )
    ends = np.cumsum(lengths)
    return BinnedActivity(
        bin_minutes=activity.bin_minutes,
        first_day=activity.first_day,
        n_days=activity.n_days,
        bins=activity.bins[rows],
        counts=activity.counts[rows],
        classes=activity.classes[rows],
        starts=ends - lengths,
        ends=ends,
    )


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

    >>> day = 19000 * 86400  # a Monday
    >>> times = day + 3600 * np.array([9.0, 9.5, 10.0, 10.4, 11.0])
    >>> estimate = estimate_coding_time(times, np.zeros(5, dtype=int))  # doctest: +SKIP
    >>> estimate.git_hours_minutes.tolist()  # doctest: +SKIP
    [240.0]
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
    day_numbers = _day_numbers(times)
    inside = (day_numbers >= activity.first_day) & (
        day_numbers < activity.first_day + activity.n_days
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
    )


# ----------------------------------------------------------------------------------------------
# Team view
# ----------------------------------------------------------------------------------------------


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
        all_days = [_day_numbers(np.asarray(t, dtype=np.float64)) for t, _ in members if t.size]
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
            _session_minutes_per_commit(np.asarray(t, np.float64)[k == COMMIT]) for t, k in members
        ]
        known = [g for g in gaps if g is not None]
        typical = float(np.median(known)) if known else 45.0
        synthetic = np.arange(3) * typical * 60.0
        prior, initial = default_prior(
            synthetic, np.zeros(3, dtype=np.int64), n_kinds, bin_minutes, priors
        )
        if n_kinds > SAVE:
            save_gaps = [
                _typical_gap_minutes(np.asarray(t, np.float64)[k == SAVE], TIMEOUT_MINUTES)
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
        days = _day_numbers(times)
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
