"""The coding-time HMM: priors, parameters and the MAP EM fit over hmm_core's PoissonHMM."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.activity.coding_time.baselines import (
    GIT_HOURS_FIRST_COMMIT_MINUTES,
    GIT_HOURS_MAX_GAP_MINUTES,
    TIMEOUT_MINUTES,
)
from agent.activity.coding_time.bins import COMMIT, HOURS_PER_WEEK, SAVE, BinnedActivity

AWAY, DESK, CODING = 0, 1, 2
STATE_NAMES = ("away", "desk", "coding")
N_STATES = 3
MIN_RATE = 1e-9  # floor on every rate after an M-step, in events per bin

if TYPE_CHECKING:
    from hmm_core import PoissonHMM


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
    desk_minutes: float = 45.0
    away_minutes: float = 180.0
    coding_exit_to_desk: float = 0.8
    desk_exit_to_coding: float = 0.6
    away_exit_to_coding: float = 0.5
    dwell_strength: float = 200.0
    dwell_share: float = 1.0
    hour_strength: float = 100.0
    away_rate_per_hour: float = 0.002  # fixed: away means no activity
    desk_commit_rate_per_hour: float = 0.15
    desk_save_rate_per_hour: float = 1.0
    rate_strength_hours: float = 50.0
    rate_share: float = 1.0
    session_share: float = 0.9
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
    tolerance: float = 0.0  # the stopping rule: change in log posterior per bin

    @property
    def change_per_bin(self) -> float:
        """The last change in log posterior per fitted bin (compare with `tolerance`)."""
        if len(self.history) < 2:
            return float("nan")
        return abs(self.history[-1] - self.history[-2]) / max(1, self.n_rows)

    n_rows: int = 1  # bins the fit saw


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


def typical_gap_minutes(local_times: np.ndarray, cutoff_minutes: float) -> float | None:
    """Mean gap between consecutive events, over gaps shorter than the cutoff."""
    if local_times.size < 3:
        return None
    gaps = np.diff(np.sort(local_times)) / 60.0
    gaps = gaps[(gaps > 0) & (gaps < cutoff_minutes)]
    if gaps.size < 2:
        return None
    return float(gaps.mean())


def session_minutes_per_commit(commit_times: np.ndarray) -> float | None:
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
    one per `session_minutes_per_commit` of session time; for saves, the mean gap between
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
            session_minutes_per_commit(of_kind)
            if kind == COMMIT
            else typical_gap_minutes(of_kind, cutoffs.get(kind, 60.0))
        )
        gap = gap if gap is not None else defaults.get(kind, 30.0)
        if kind == COMMIT:
            gap *= priors.session_share
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
    rate_weight = np.maximum(
        prior.rate_rate, priors.rate_share * activity.counts.shape[0] / N_STATES
    )
    mean_rates = (prior.rate_shape - 1.0) / prior.rate_rate
    return replace(
        prior,
        transition_counts=rows * per_state,
        rate_shape=1.0 + mean_rates * rate_weight,
        rate_rate=rate_weight,
    )


def poisson_hmm(
    parameters: HMMParameters,
    n_jobs: int,
    n_iter: int = 1,
    params: str = "stl",
    prior: ModelPrior | None = None,
) -> PoissonHMM:
    """An hmm_core PoissonHMM over the hour-of-week classes holding copies of `parameters`.

    With `prior` its M-step (`maximize` on the statistics of `expected_statistics`) is the
    MAP step under it: Dirichlet pseudo-counts on the start and the overall transition matrix,
    each hour-of-week row shrunk towards the overall matrix with `hour_strength`
    pseudo-transitions, gamma priors on the rates, and the rates of `fixed_rates` left as set.
    """
    from hmm_core import PoissonHMM

    map_options: dict[str, Any] = {}
    if prior is not None:
        map_options = {
            "startprob_prior": 1.0 + prior.start_counts,
            "transmat_prior": 1.0 + prior.transition_counts,
            "lambdas_prior": prior.rate_shape - 1.0,
            "lambdas_weight": prior.rate_rate,
            "class_transmat_strength": prior.hour_strength,
            "fixed_lambdas": prior.fixed_rates,
            "min_lambda": MIN_RATE,
        }
    model = PoissonHMM(
        n_components=N_STATES,
        n_iter=n_iter,
        tol=-np.inf,
        params=params,
        init_params="",
        n_classes=HOURS_PER_WEEK,
        n_jobs=n_jobs,
        **map_options,
    )
    model.startprob_ = parameters.startprob.copy()
    model.transmat_ = parameters.transmat.copy()
    model.lambdas_ = parameters.lambdas.copy()
    return model


def posteriors_of(
    parameters: HMMParameters, activity: BinnedActivity, n_jobs: int = 1
) -> np.ndarray:
    """Posterior state probabilities (T, K) of every kept bin."""
    model = poisson_hmm(parameters, n_jobs)
    _, posteriors = model.score_samples(
        activity.counts, lengths=activity.lengths, classes=activity.classes
    )
    result: np.ndarray = posteriors
    return result


def parameters_of(model: PoissonHMM) -> HMMParameters:
    """Copies of the parameters a PoissonHMM over the hour-of-week classes holds."""
    return HMMParameters(
        startprob=np.array(model.startprob_, dtype=np.float64),
        transmat=np.array(model.transmat_, dtype=np.float64),
        lambdas=np.array(model.lambdas_, dtype=np.float64),
    )


def _log_prior(parameters: HMMParameters, prior: ModelPrior) -> float:
    """Log density of the prior at `parameters` (up to a constant): the objective's prior term."""
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
    model = poisson_hmm(initial, n_jobs, prior=prior)
    parameters = initial.copy()
    history: list[float] = []
    converged = False
    rows = max(1, activity.counts.shape[0])
    iteration = 0
    log_likelihood = 0.0
    for iteration in range(1, n_iter + 1):
        total, statistics = model.expected_statistics(
            activity.counts, activity.lengths, activity.classes
        )
        log_likelihood = float(total)
        objective = log_likelihood + _log_prior(parameters, prior)
        converged = bool(history) and abs(objective - history[-1]) < tol * rows
        history.append(objective)
        if converged or iteration == n_iter:
            break
        model.maximize(statistics)
        parameters = parameters_of(model)
    return ModelFit(
        parameters=parameters,
        log_likelihood=log_likelihood,
        n_iter=iteration,
        converged=converged,
        history=history,
        tolerance=tol,
        n_rows=rows,
    )
