"""Hidden Markov models with Poisson, categorical and Gaussian emissions (hmmlearn 0.3.3's API)."""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from scipy import linalg
from scipy.special import gammaln, xlogy

from hmm_core import _kernels

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
RandomStateLike = int | np.random.Generator | np.random.RandomState | None

POISSON, CATEGORICAL, GAUSSIAN, GAUSSIAN_FULL, GAUSSIAN_TIED = 0, 1, 2, 3, 4
COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")
IMPLEMENTATIONS = ("log", "scaling")
DECODER_ALGORITHMS = ("viterbi", "map")
MAX_POISSON_TABLE = 1024
# With n_jobs > 1, a single sequence at least this long is split across two threads by the
# kernels (forward and backward passes at the same time, each accumulating the statistics of
# the half it reaches second). The result then differs from one thread's only by rounding
# (about 1e-15 relative).
SPLIT_MIN_ROWS = 20_000
KMEANS_SAMPLE = 20_000
KMEANS_INITS = 10
KMEANS_MAX_ITER = 300
SUM_TOLERANCE = 1e-6
MAX_EXACT_INTEGER = 2.0**53
# A covariance whose Cholesky factorisation fails is retried with this much added to its
# diagonal before it is refused (as hmmlearn does).
CHOLESKY_JITTER = 1e-7

_log = logging.getLogger(__name__)

__all__ = ["CategoricalHMM", "ConvergenceMonitor", "GaussianHMM", "PoissonHMM"]


class ConvergenceMonitor:
    """Records the log-likelihood of each EM iteration and decides when to stop.

    EM has converged when ``n_iter`` iterations ran or when the last gain in log-likelihood
    fell below ``tol``; ``tol=-np.inf`` therefore always runs ``n_iter`` iterations. With
    ``verbose`` each iteration is printed to stderr as hmmlearn does (iteration, log-likelihood,
    gain); a drop in log-likelihood is logged as a warning.
    """

    _template = "{iter:>10d} {log_prob:>16.8f} {delta:>+16.8f}"

    def __init__(self, tol: float, n_iter: int, verbose: bool = False) -> None:
        self.tol = tol
        self.n_iter = n_iter
        self.verbose = verbose
        self.history: list[float] = []
        self.iter = 0

    def _reset(self) -> None:
        """Forget the iterations of a previous fit."""
        self.iter = 0
        self.history = []

    def report(self, log_prob: float) -> None:
        """Record the log-likelihood of one iteration."""
        log_prob = float(log_prob)
        if self.verbose:
            delta = log_prob - self.history[-1] if self.history else np.nan
            print(
                self._template.format(iter=self.iter + 1, log_prob=log_prob, delta=delta),
                file=sys.stderr,
            )
        precision = np.finfo(float).eps ** 0.5
        if self.history and log_prob - self.history[-1] < -precision:
            _log.warning(
                "Model is not converging.  Current: %s is not greater than %s. Delta is %s",
                log_prob,
                self.history[-1],
                log_prob - self.history[-1],
            )
        self.history.append(log_prob)
        self.iter += 1

    @property
    def converged(self) -> bool:
        """Whether EM should stop."""
        if self.iter >= self.n_iter:
            return True
        return len(self.history) >= 2 and self.history[-1] - self.history[-2] < self.tol

    def __repr__(self) -> str:
        return (
            f"ConvergenceMonitor(tol={self.tol}, n_iter={self.n_iter}, iter={self.iter}, "
            f"converged={self.converged}, history={self.history})"
        )


@dataclass(frozen=True)
class _Observations:
    """Validated observations in the layout the kernels read."""

    counts: IntArray  # (T, D) Poisson counts or (T, 1) symbols; empty for Gaussian
    values: FloatArray  # (T, D) Gaussian observations; empty otherwise
    starts: IntArray
    ends: IntArray
    classes: IntArray  # (T,) or empty
    n_samples: int
    n_features: int
    max_count: int  # largest count or symbol (0 for Gaussian)

    def as_float(self) -> FloatArray:
        """Observations as float64, for initialisation."""
        return self.values if self.values.size else self.counts.astype(np.float64)


@dataclass(frozen=True)
class _Workspace:
    """Buffers of the forward-backward kernels for one set of observations."""

    alpha: FloatArray  # (T, K) scaled forward vectors, then posteriors
    scale: FloatArray  # (T,) scale factors
    split: bool  # one sequence split across two threads
    cached_probs: FloatArray  # Gaussian (T, K) emission probabilities / row maximum
    cached_log_factors: FloatArray  # Gaussian (T,) log of each row's maximum


def _check_random_state(seed: Any) -> np.random.RandomState:
    """A RandomState for seed: None gives NumPy's global one (so ``np.random.seed`` applies),
    an int a new seeded one; a Generator's bit generator is shared."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.RandomState(seed.bit_generator)
    raise ValueError(
        f"random_state must be None, an int, a numpy RandomState or a numpy Generator; got {seed!r}"
    )


def _first_row(mask: npt.NDArray[np.bool_]) -> int:
    """Index of the first row where mask holds (mask may be 1-D or 2-D)."""
    flat = mask if mask.ndim == 1 else mask.any(axis=1)
    return int(np.argmax(flat))


def _observation_array(X: Any) -> np.ndarray:
    array = np.asarray(X)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise ValueError(f"X must hold numbers; got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(
            f"X must be 2-D (n_samples, n_features); got {array.ndim}-D, "
            "reshape a single feature with X.reshape(-1, 1)"
        )
    if array.shape[0] == 0:
        raise ValueError("X is empty: it has no rows")
    if array.shape[1] == 0:
        raise ValueError("X is empty: it has no feature columns")
    return array


def _check_finite(array: np.ndarray) -> None:
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        bad = ~np.isfinite(array)
        if bad.any():
            raise ValueError(f"X contains NaN or infinity (first at row {_first_row(bad)})")


def _integer_array(array: np.ndarray, what: str) -> IntArray:
    """Convert integer-valued numbers to int64, naming the first non-integer row."""
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{what} must be real integers; got complex numbers")
    if array.dtype.kind == "u" and array.max() > MAX_EXACT_INTEGER:
        raise ValueError(f"{what} must be integers below 2**53; found {array.max()}")
    if np.issubdtype(array.dtype, np.floating):
        too_large = np.abs(array) > MAX_EXACT_INTEGER
        if too_large.any():
            raise ValueError(
                f"{what} must be integers below 2**53; found {array[too_large][0]:g} at row "
                f"{_first_row(too_large)}"
            )
        fractional = array != np.floor(array)
        if fractional.any():
            raise ValueError(
                f"{what} must be integers; found a non-integer value at row "
                f"{_first_row(fractional)}"
            )
    return np.ascontiguousarray(array, dtype=np.int64)


def _sequence_bounds(lengths: Any, n_samples: int) -> tuple[IntArray, IntArray]:
    if lengths is None:
        return np.zeros(1, dtype=np.int64), np.full(1, n_samples, dtype=np.int64)
    array = np.asarray(lengths)
    if array.ndim != 1 or array.size == 0:
        raise ValueError("lengths must be a non-empty 1-D sequence of sequence lengths")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"lengths must hold integers; got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and (
        not np.all(np.isfinite(array)) or np.any(array != np.floor(array))
    ):
        raise ValueError("lengths must hold integers")
    counts = array.astype(np.int64)
    if np.any(counts <= 0):
        raise ValueError(
            f"lengths must be positive; entry {int(np.argmax(counts <= 0))} is "
            f"{int(counts[counts <= 0][0])} (a sequence of length 0 is not allowed)"
        )
    total = int(counts.sum())
    if total != n_samples:
        raise ValueError(f"lengths sum to {total} but X has {n_samples} rows; they must match")
    ends = np.cumsum(counts)
    return ends - counts, ends


def _class_array(classes: Any, n_samples: int, n_classes: int) -> IntArray:
    if classes is None:
        if n_classes > 1:
            raise ValueError(
                f"classes is required when n_classes > 1 (n_classes={n_classes}): pass one "
                "class per row of X"
            )
        return np.zeros(0, dtype=np.int64)
    array = np.asarray(classes)
    if array.ndim != 1 or array.shape[0] != n_samples:
        raise ValueError(
            f"classes has shape {array.shape} but X has {n_samples} rows; pass one class per row"
        )
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"classes must hold integers; got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ValueError("classes contains NaN or infinity")
        if np.any(array != np.floor(array)):
            raise ValueError("classes must hold integers")
    result = np.ascontiguousarray(array, dtype=np.int64)
    outside = (result < 0) | (result >= n_classes)
    if outside.any():
        row = int(np.argmax(outside))
        raise ValueError(
            f"classes contains {int(result[row])} at row {row}, outside the range "
            f"[0, {n_classes}) given by n_classes={n_classes}"
        )
    return result


def _normalize_rows(weights: FloatArray, previous: FloatArray) -> FloatArray:
    """Rows of weights divided by their sums; rows that sum to zero keep the previous row."""
    totals = weights.sum(axis=-1, keepdims=True)
    safe = np.where(totals > 0, totals, 1.0)
    return np.where(totals > 0, weights / safe, previous)


def _squared_distances(data: FloatArray, centers: FloatArray) -> FloatArray:
    """(n, k) squared Euclidean distances, never negative."""
    distances = (
        (data**2).sum(axis=1)[:, None] - 2.0 * data @ centers.T + (centers**2).sum(axis=1)[None, :]
    )
    return np.maximum(distances, 0.0)


def _kmeans_plus_plus(data: FloatArray, n_clusters: int, rng: np.random.RandomState) -> FloatArray:
    """Greedy k-means++ seeding: each new centre is the best of a few candidates drawn with
    probability proportional to the squared distance to the nearest centre so far."""
    n_samples = data.shape[0]
    n_trials = 2 + int(np.log(n_clusters))
    centers = np.empty((n_clusters, data.shape[1]))
    centers[0] = data[rng.randint(n_samples)]
    closest = _squared_distances(data, centers[:1])[:, 0]
    for index in range(1, n_clusters):
        total = closest.sum()
        if total <= 0:
            centers[index:] = data[rng.randint(n_samples, size=n_clusters - index)]
            break
        candidates = np.searchsorted(np.cumsum(closest), rng.random_sample(n_trials) * total)
        candidates = np.minimum(candidates, n_samples - 1)
        candidate_distances = np.minimum(
            closest[None, :], _squared_distances(data, data[candidates]).T
        )
        best = int(np.argmin(candidate_distances.sum(axis=1)))
        centers[index] = data[candidates[best]]
        closest = candidate_distances[best]
    return centers


def _lloyd(data: FloatArray, centers: FloatArray) -> tuple[FloatArray, float]:
    """Lloyd iterations until the assignment stops changing; returns centres and inertia.
    An emptied cluster takes the point farthest from its centre."""
    labels = np.full(data.shape[0], -1)
    for _ in range(KMEANS_MAX_ITER):
        distances = _squared_distances(data, centers)
        new_labels = distances.argmin(axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        counts = np.bincount(labels, minlength=centers.shape[0])
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, data)
        for k in np.flatnonzero(counts == 0):
            farthest = int(np.argmax(distances[np.arange(data.shape[0]), labels]))
            sums[k] = data[farthest]
            counts[k] = 1
            labels[farthest] = k
        centers = sums / counts[:, None]
    distances = _squared_distances(data, centers)
    return centers, float(distances.min(axis=1).sum())


def _kmeans_centers(data: FloatArray, n_clusters: int, rng: np.random.RandomState) -> FloatArray:
    """k-means (k-means++ seeding, Lloyd iterations, best of several seedings by inertia) on at
    most KMEANS_SAMPLE rows."""
    if data.shape[0] > KMEANS_SAMPLE:
        data = data[rng.choice(data.shape[0], KMEANS_SAMPLE, replace=False)]
    data = np.asarray(data, dtype=np.float64)
    best_centers: FloatArray | None = None
    best_inertia = np.inf
    for _ in range(KMEANS_INITS):
        centers, inertia = _lloyd(data, _kmeans_plus_plus(data, n_clusters, rng))
        if inertia < best_inertia:
            best_centers, best_inertia = centers, inertia
    assert best_centers is not None
    return best_centers


def _prior_array(
    name: str, value: Any, shapes: list[tuple[int, ...]], *, non_negative: bool = True
) -> FloatArray:
    """value as a float array of shape () or one of shapes; finite (and >= 0 if asked)."""
    array = np.asarray(value, dtype=np.float64)
    if array.shape != () and array.shape not in shapes:
        allowed = " or ".join(str(shape) for shape in shapes)
        raise ValueError(f"{name} must be a number or have shape {allowed}; got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    if non_negative and np.any(array < 0):
        raise ValueError(f"{name} must be non-negative")
    return array


def _as_column(array: FloatArray, n_rows: int) -> FloatArray:
    """A per-state (K,) array as a (K, 1) column; other shapes unchanged."""
    return array[:, None] if array.ndim == 1 and array.shape[0] == n_rows else array


class _BaseHMM:
    """Shared EM, inference and validation; subclasses supply the emission model."""

    _emission_kind: int
    _all_params: str
    _emission_letters: str

    def __init__(
        self,
        n_components: int = 1,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        algorithm: str = "viterbi",
        random_state: RandomStateLike = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str | None = None,
        init_params: str | None = None,
        implementation: str = "log",
        *,
        n_classes: int = 1,
        n_jobs: int = 1,
        class_transmat_strength: float | None = None,
    ) -> None:
        self.n_components = n_components
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = self._all_params if params is None else params
        self.init_params = self._all_params if init_params is None else init_params
        self.implementation = implementation
        self.n_classes = n_classes
        self.n_jobs = n_jobs
        self.class_transmat_strength = class_transmat_strength
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose)

    # ----------------------------------------------------------------- public API

    def fit(self, X: Any, lengths: Any = None, classes: Any = None) -> Self:
        """Estimate the parameters with Baum-Welch (EM, MAP with the priors); returns self.

        Parameters named in ``init_params`` are initialised from the data first (a warning
        says so when one was set by hand); parameters that are not set are initialised
        whatever ``init_params`` says. ``classes[t]`` selects the transition matrix of the
        step into row t when ``n_classes > 1``.
        """
        self._check_settings()
        observations = self._prepare(X, lengths, classes, fitting=True)
        self._initialize(observations)
        self._check()
        monitor = self.monitor_
        monitor.tol, monitor.n_iter, monitor.verbose = self.tol, self.n_iter, self.verbose
        monitor._reset()
        workspace = self._workspace(observations)
        for _ in range(self.n_iter):
            stats, log_likelihood = self._expectation(observations, workspace)
            self._do_mstep(stats)
            monitor.report(log_likelihood)
            if monitor.converged:
                break
        return self

    def score(self, X: Any, lengths: Any = None, classes: Any = None) -> float:
        """Total log-likelihood of X under the model."""
        observations = self._prepare_for_inference(X, lengths, classes)
        log_likelihood, _ = self._forward_backward(observations, backward=False)
        return log_likelihood

    def score_samples(
        self, X: Any, lengths: Any = None, classes: Any = None
    ) -> tuple[float, FloatArray]:
        """Log-likelihood of X and the posterior state probabilities, shape (n_samples, K)."""
        observations = self._prepare_for_inference(X, lengths, classes)
        log_likelihood, posteriors = self._forward_backward(observations, backward=True)
        posteriors /= posteriors.sum(axis=1, keepdims=True)
        if not np.isfinite(posteriors).all():
            raise ValueError(
                "the posteriors are not finite: the data are numerically impossible under the "
                "current parameters"
            )
        return log_likelihood, posteriors

    def expected_statistics(
        self, X: Any, lengths: Any = None, classes: Any = None
    ) -> tuple[float, dict[str, Any]]:
        """One E-step under the current parameters: (log-likelihood, sufficient statistics).

        The statistics are ``start`` (K,) posteriors at the first row of each sequence,
        ``trans`` (C, K, K) expected transition counts per class (C = 1 gives (1, K, K)),
        ``post`` (K,) total posteriors, ``obs`` (K, F) posterior-weighted sums of X (of the
        one-hot symbols for categorical), ``obs**2`` (K, D) of X squared (diagonal and
        spherical Gaussian) or ``obs*obs.T`` (K, D, D) of the outer products (full and tied).
        ``maximize(stats)`` runs the M-step on them.
        """
        observations = self._prepare_for_inference(X, lengths, classes)
        stats, log_likelihood = self._expectation(observations)
        return log_likelihood, {
            name: value.copy() if isinstance(value, np.ndarray) else value
            for name, value in stats.items()
        }

    def maximize(self, stats: dict[str, Any]) -> Self:
        """One M-step from the statistics of ``expected_statistics``: the parameters named in
        ``params`` become their MAP estimates under the priors (the plain maximum-likelihood
        ones with the default priors); returns self. Together the two run EM one step at a
        time, e.g. to combine the statistics of several data sets before the M-step. This is
        hmmlearn's ``_do_mstep`` hook, which a subclass may override."""
        self._do_mstep(stats)
        return self

    def predict_proba(self, X: Any, lengths: Any = None, classes: Any = None) -> FloatArray:
        """Posterior probability of each state at each row."""
        return self.score_samples(X, lengths, classes)[1]

    def predict(self, X: Any, lengths: Any = None, classes: Any = None) -> IntArray:
        """Most likely state sequence (with the decoder ``algorithm``)."""
        return self.decode(X, lengths, classes=classes)[1]

    def decode(
        self,
        X: Any,
        lengths: Any = None,
        algorithm: str | None = None,
        classes: Any = None,
    ) -> tuple[float, IntArray]:
        """Most likely states: ``"viterbi"`` gives the best path and its log probability;
        ``"map"`` gives the most probable state at each row and the sum of their log
        posteriors. ``algorithm=None`` uses the model's ``algorithm``."""
        algorithm = self.algorithm if algorithm is None else algorithm
        if algorithm not in DECODER_ALGORITHMS:
            raise ValueError(f"algorithm must be 'viterbi' or 'map'; got {algorithm!r}")
        if algorithm == "map":
            _, posteriors = self.score_samples(X, lengths, classes)
            states = posteriors.argmax(axis=1).astype(np.int64)
            best = posteriors[np.arange(posteriors.shape[0]), states]
            return float(np.log(best).sum()), states
        observations = self._prepare_for_inference(X, lengths, classes)
        return self._viterbi(observations)

    def sample(
        self,
        n_samples: int = 1,
        random_state: RandomStateLike = None,
        currstate: int | None = None,
        classes: Any = None,
    ) -> tuple[np.ndarray, IntArray]:
        """Draw ``n_samples`` observations and their states; returns (X, states).

        ``currstate`` fixes the first state. With ``n_classes > 1`` pass ``classes`` (one per
        sample) to pick the transitions.
        """
        self._check_settings()
        self._check()
        if not isinstance(n_samples, int | np.integer) or n_samples < 1:
            raise ValueError(f"n_samples must be an integer >= 1; got {n_samples!r}")
        rng = _check_random_state(self.random_state if random_state is None else random_state)
        class_array = _class_array(classes, int(n_samples), self.n_classes)
        K = int(self.n_components)
        if currstate is None:
            cum_start = np.cumsum(self.startprob_)
        else:
            if not isinstance(currstate, int | np.integer) or not 0 <= currstate < K:
                raise ValueError(f"currstate must be a state in [0, {K}); got {currstate!r}")
            cum_start = np.where(np.arange(K) >= currstate, 1.0, 0.0)
        cum_trans = np.ascontiguousarray(np.cumsum(self._transmat3(), axis=2))
        states = np.empty(int(n_samples), dtype=np.int64)
        _kernels.sample_states(
            np.ascontiguousarray(cum_start, dtype=np.float64),
            cum_trans,
            class_array,
            rng.random_sample(int(n_samples)),
            states,
        )
        return self._sample_emissions(states, rng), states

    def get_stationary_distribution(self) -> FloatArray:
        """The stationary distribution of ``transmat_`` (one class only)."""
        self._check()
        if self.n_classes != 1:
            raise ValueError("the stationary distribution needs n_classes == 1")
        eigvals, eigvecs = linalg.eig(np.asarray(self.transmat_).T)
        eigvec = np.real_if_close(eigvecs[:, np.argmax(eigvals)])
        result: FloatArray = eigvec / eigvec.sum()
        return result

    def aic(self, X: Any, lengths: Any = None, classes: Any = None) -> float:
        """Akaike information criterion: -2 log-likelihood + 2 * free parameters."""
        n_params = sum(self._get_n_fit_scalars_per_param().values())
        return -2.0 * self.score(X, lengths, classes) + 2.0 * n_params

    def bic(self, X: Any, lengths: Any = None, classes: Any = None) -> float:
        """Bayesian information criterion: -2 log-likelihood + free parameters * log(n_samples)."""
        n_params = sum(self._get_n_fit_scalars_per_param().values())
        return -2.0 * self.score(X, lengths, classes) + n_params * np.log(len(X))

    # ----------------------------------------------------------------- hmmlearn hooks

    def _init(self, X: Any, lengths: Any = None) -> None:
        """Initialise the parameters from X as ``fit`` does (lengths are not needed)."""
        self._check_settings()
        self._initialize(self._prepare(X, None, None, fitting=True, with_classes=False))

    def _check(self) -> None:
        """Validate the parameters; raises ValueError naming the first bad one."""
        K = int(self.n_components)
        startprob = self._parameter("startprob_", "s")
        if startprob.shape != (K,):
            raise ValueError(f"startprob_ must have shape ({K},); got {startprob.shape}")
        if not np.all(np.isfinite(startprob)) or np.any(startprob < 0):
            raise ValueError("startprob_ must hold finite non-negative probabilities")
        if abs(startprob.sum() - 1.0) > SUM_TOLERANCE:
            raise ValueError(f"startprob_ must sum to 1; it sums to {startprob.sum()}")
        transmat = self._parameter("transmat_", "t")
        expected: tuple[int, ...] = (K, K) if self.n_classes == 1 else (self.n_classes, K, K)
        if transmat.shape != expected:
            raise ValueError(
                f"transmat_ must have shape {expected} with n_classes={self.n_classes}; "
                f"got {transmat.shape}"
            )
        if not np.all(np.isfinite(transmat)) or np.any(transmat < 0):
            raise ValueError("transmat_ must hold finite non-negative probabilities")
        sums = transmat.sum(axis=-1)
        if np.any(np.abs(sums - 1.0) > SUM_TOLERANCE):
            raise ValueError("every row of transmat_ must sum to 1")
        self._check_emissions()

    def _check_and_set_n_features(self, X: Any) -> None:
        """Check that X has the model's width and remember it as ``n_features``."""
        array = _observation_array(X)
        expected = self._expected_width(fitting=True)
        if expected is not None and array.shape[1] != expected:
            raise ValueError(
                f"X has {array.shape[1]} feature columns but the model has {expected}; "
                "pass data of the width the model was fitted or set up with"
            )
        self.n_features = array.shape[1]

    def _needs_init(self, code: str, name: str) -> bool:
        """Whether the parameter `name` (letter `code`) is to be initialised from the data."""
        if code in self.init_params:
            if hasattr(self, name):
                _log.warning(
                    "Even though the %r attribute is set, it will be overwritten during "
                    "initialization because 'init_params' contains %r",
                    name,
                    code,
                )
            return True
        return not hasattr(self, name)

    def _get_n_fit_scalars_per_param(self) -> dict[str, int]:
        """Free scalars per parameter letter in ``params``."""
        K, C = int(self.n_components), int(self.n_classes)
        counts = {"s": K - 1, "t": C * K * (K - 1)} | self._emission_scalars()
        return {letter: counts[letter] for letter in self.params if letter in counts}

    def _do_mstep(self, stats: dict[str, Any]) -> None:
        """The M-step: MAP estimates under the priors from the statistics of one E-step."""
        if "s" in self.params:
            prior = _prior_array(
                "startprob_prior",
                self.startprob_prior,
                [(self.n_components,)],
                non_negative=False,
            )
            start = np.maximum(prior - 1.0 + stats["start"], 0.0)
            start = np.where(self._parameter("startprob_", "s") == 0, 0.0, start)
            total = start.sum()
            if total > 0:
                self.startprob_ = start / total
        if "t" in self.params:
            transmat = self._maximize_transitions(np.asarray(stats["trans"]))
            self.transmat_ = transmat[0] if self.n_classes == 1 else transmat
        self._maximize_emissions(stats)

    # ----------------------------------------------------------------- validation

    def _check_settings(self) -> None:
        if not isinstance(self.n_components, int | np.integer) or self.n_components < 1:
            raise ValueError(f"n_components must be an integer >= 1; got {self.n_components!r}")
        if not isinstance(self.n_classes, int | np.integer) or self.n_classes < 1:
            raise ValueError(f"n_classes must be an integer >= 1; got {self.n_classes!r}")
        if not isinstance(self.n_iter, int | np.integer) or self.n_iter < 0:
            raise ValueError(f"n_iter must be a non-negative integer; got {self.n_iter!r}")
        if not isinstance(self.n_jobs, int | np.integer) or self.n_jobs == 0:
            raise ValueError(f"n_jobs must be a non-zero integer; got {self.n_jobs!r}")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be 'log' or 'scaling'; got {self.implementation!r}"
            )
        if self.algorithm not in DECODER_ALGORITHMS:
            raise ValueError(f"algorithm must be 'viterbi' or 'map'; got {self.algorithm!r}")
        strength = self.class_transmat_strength
        if strength is not None and not (
            isinstance(strength, int | float | np.integer | np.floating)
            and math.isfinite(strength)
            and strength >= 0
        ):
            raise ValueError(
                f"class_transmat_strength must be None or a finite number >= 0; got {strength!r}"
            )
        for name in ("params", "init_params"):
            unknown = set(getattr(self, name)) - set(self._all_params)
            if unknown:
                raise ValueError(
                    f"{name} has unknown letters {''.join(sorted(unknown))!r}; "
                    f"{type(self).__name__} knows {self._all_params!r}"
                )

    def _n_threads(self) -> int:
        if self.n_jobs > 0:
            return int(self.n_jobs)
        return max(1, (os.cpu_count() or 1) + 1 + int(self.n_jobs))

    def _prepare_for_inference(self, X: Any, lengths: Any, classes: Any) -> _Observations:
        self._check_settings()
        self._check()
        return self._prepare(X, lengths, classes, fitting=False)

    def _prepare(
        self, X: Any, lengths: Any, classes: Any, *, fitting: bool, with_classes: bool = True
    ) -> _Observations:
        array = _observation_array(X)
        _check_finite(array)
        expected = self._expected_width(fitting)
        if expected is not None and array.shape[1] != expected:
            raise ValueError(
                f"X has {array.shape[1]} feature columns but the model has {expected}; "
                "pass data of the width the model was fitted or set up with"
            )
        counts, values, max_count = self._convert(array, fitting)
        starts, ends = _sequence_bounds(lengths, array.shape[0])
        class_array = (
            _class_array(classes, array.shape[0], int(self.n_classes))
            if with_classes
            else np.zeros(0, dtype=np.int64)
        )
        return _Observations(
            counts=counts,
            values=values,
            starts=starts,
            ends=ends,
            classes=class_array,
            n_samples=array.shape[0],
            n_features=array.shape[1],
            max_count=max_count,
        )

    def _parameter(self, name: str, letter: str) -> FloatArray:
        if not hasattr(self, name):
            raise ValueError(
                f"{name} is not set: fit the model, set {name} by hand, or include "
                f"{letter!r} in init_params"
            )
        value = np.asarray(getattr(self, name), dtype=np.float64)
        setattr(self, name, value)
        return value

    def _transmat3(self) -> FloatArray:
        K = int(self.n_components)
        return np.ascontiguousarray(
            np.asarray(self.transmat_, dtype=np.float64).reshape(self.n_classes, K, K)
        )

    # ----------------------------------------------------------------- EM

    def _initialize(self, observations: _Observations) -> None:
        """hmmlearn's initialisation: random Dirichlet start and transitions, emissions from
        the data; warns when the data hold fewer values than the free parameters."""
        self._set_n_features(observations)
        K, C = int(self.n_components), int(self.n_classes)
        rng = _check_random_state(self.random_state)
        concentration = np.full(K, 1.0 / K)
        if self._needs_init("s", "startprob_"):
            self.startprob_ = rng.dirichlet(concentration)
        if self._needs_init("t", "transmat_"):
            transmat = rng.dirichlet(concentration, size=C * K).reshape(C, K, K)
            self.transmat_ = transmat[0] if C == 1 else transmat
        self._initialize_emissions(observations, rng)
        n_fit_scalars = sum(self._get_n_fit_scalars_per_param().values())
        n_values = observations.n_samples * observations.n_features
        if n_values < n_fit_scalars:
            _log.warning(
                "Fitting a model with %d free scalar parameters with only %d data points "
                "will result in a degenerate solution.",
                n_fit_scalars,
                n_values,
            )

    def _maximize_transitions(self, trans: FloatArray) -> FloatArray:
        """New (C, K, K) transition matrices from the expected counts under the Dirichlet
        prior; with ``class_transmat_strength`` the class rows are shrunk towards the overall
        matrix, which alone gets the prior."""
        K, C = int(self.n_components), int(self.n_classes)
        current = self._transmat3()
        strength = self.class_transmat_strength
        if C > 1 and strength is not None:
            prior = _prior_array(
                "transmat_prior", self.transmat_prior, [(K, K)], non_negative=False
            )
            overall_counts = np.maximum(prior - 1.0 + trans.sum(axis=0), 0.0)
            overall = _normalize_rows(overall_counts, current.mean(axis=0))
            counts = trans + float(strength) * overall[None, :, :]
        else:
            prior = _prior_array(
                "transmat_prior", self.transmat_prior, [(K, K), (C, K, K)], non_negative=False
            )
            counts = np.maximum(prior - 1.0 + trans, 0.0)
        counts = np.where(current == 0, 0.0, counts)
        return _normalize_rows(counts, current)

    def _forward_backward(
        self,
        observations: _Observations,
        *,
        backward: bool,
        stats: FloatArray | None = None,
        workspace: _Workspace | None = None,
    ) -> tuple[float, FloatArray]:
        n_sequences = observations.starts.shape[0]
        if workspace is None:
            workspace = self._workspace(observations)
        alpha, scale = workspace.alpha, workspace.scale
        logliks = np.zeros(n_sequences, dtype=np.float64)
        lowest_log_factors = np.zeros(n_sequences, dtype=np.float64)
        status = np.empty(n_sequences, dtype=np.int64)
        transmat = self._transmat3()
        emissions = self._emission_model(observations)
        if self._emission_kind == GAUSSIAN:
            # Densities once per call, in parallel over rows, instead of in every pass.
            cached, log_factors = workspace.cached_probs, workspace.cached_log_factors
            _kernels.cache_emissions(emissions, cached, log_factors, self._n_threads())
        _kernels.forward_backward(
            emissions,
            observations.starts,
            observations.ends,
            observations.classes,
            np.ascontiguousarray(self.startprob_, dtype=np.float64),
            transmat,
            np.ascontiguousarray(transmat.transpose(0, 2, 1)),
            alpha,
            scale,
            np.zeros(0) if stats is None else stats,
            logliks,
            lowest_log_factors,
            status,
            backward,
            self._n_threads(),
            workspace.split,
        )
        self._raise_on_failure(status)
        if self.implementation == "scaling" and np.exp(lowest_log_factors.min()) == 0.0:
            raise ValueError(
                "Forward pass failed with underflow: an observation's emission probabilities "
                "are all below the smallest double (implementation='scaling' refuses this as "
                "hmmlearn does); consider using implementation='log' instead"
            )
        log_likelihood = float(logliks.sum())
        if not math.isfinite(log_likelihood):
            raise ValueError(
                "the log-likelihood is not finite: the data are numerically impossible under "
                "the current parameters"
            )
        return log_likelihood, alpha

    def _workspace(self, observations: _Observations) -> _Workspace:
        """Buffers of the kernels, allocated once per fit (fresh pages are slow to touch)."""
        shape = (observations.n_samples, int(self.n_components))
        split = (
            observations.starts.shape[0] == 1
            and observations.n_samples >= SPLIT_MIN_ROWS
            and self._n_threads() > 1
        )
        cached = self._emission_kind == GAUSSIAN
        return _Workspace(
            alpha=np.empty(shape),
            scale=np.empty(observations.n_samples),
            split=split,
            cached_probs=np.empty(shape) if cached else _EMPTY_FLOAT,
            cached_log_factors=np.empty(observations.n_samples) if cached else np.zeros(0),
        )

    def _expectation(
        self,
        observations: _Observations,
        workspace: _Workspace | None = None,
    ) -> tuple[dict[str, Any], float]:
        K, C = int(self.n_components), int(self.n_classes)
        columns = self._n_obs_columns()
        squared = self._n_squared_columns()
        size = K + C * K * K + K + columns * K + squared * K
        flat = np.zeros(size, dtype=np.float64)
        log_likelihood, _ = self._forward_backward(
            observations, backward=True, stats=flat, workspace=workspace
        )
        if not np.all(np.isfinite(flat)):
            raise ValueError(
                "the expected statistics are not finite: the data are numerically impossible "
                "under the current parameters"
            )
        parts = np.split(flat, np.cumsum([K, C * K * K, K, columns * K]))
        stats: dict[str, Any] = {
            "nobs": int(observations.starts.shape[0]),
            "start": parts[0],
            "trans": parts[1].reshape(C, K, K) * self._transmat3(),
            "post": parts[2],
            "obs": parts[3].reshape(columns, K).T,
        }
        stats.update(self._second_moments(parts[4].reshape(squared, K).T))
        return stats, log_likelihood

    def _viterbi(self, observations: _Observations) -> tuple[float, IntArray]:
        K = int(self.n_components)
        n_sequences = observations.starts.shape[0]
        with np.errstate(divide="ignore"):
            log_start = np.log(np.asarray(self.startprob_, dtype=np.float64))
            log_trans_t = np.ascontiguousarray(np.log(self._transmat3()).transpose(0, 2, 1))
        backpointers = np.empty((observations.n_samples, K), dtype=np.int32)
        path = np.empty(observations.n_samples, dtype=np.int64)
        logprobs = np.zeros(n_sequences, dtype=np.float64)
        status = np.empty(n_sequences, dtype=np.int64)
        _kernels.viterbi(
            self._emission_model(observations),
            observations.starts,
            observations.ends,
            observations.classes,
            log_start,
            log_trans_t,
            backpointers,
            path,
            logprobs,
            status,
            self._n_threads(),
        )
        self._raise_on_failure(status)
        return float(logprobs.sum()), path

    @staticmethod
    def _raise_on_failure(status: IntArray) -> None:
        failed = status != -1
        if not failed.any():
            return
        code = int(status[np.argmax(failed)])
        if code >= 0:
            raise ValueError(
                f"the observation at row {code} of X is impossible under every state "
                "(zero emission probability); check the data or the emission parameters"
            )
        row = -code - 2
        raise ValueError(
            f"the observation at row {row} of X is impossible given the start and transition "
            "probabilities (every state that could emit it is unreachable)"
        )

    # ----------------------------------------------------------------- emission hooks

    def _set_n_features(self, observations: _Observations) -> None:
        self.n_features = observations.n_features

    def _expected_width(self, fitting: bool) -> int | None:
        raise NotImplementedError

    def _convert(self, array: np.ndarray, fitting: bool) -> tuple[IntArray, FloatArray, int]:
        raise NotImplementedError

    def _initialize_emissions(
        self, observations: _Observations, rng: np.random.RandomState
    ) -> None:
        raise NotImplementedError

    def _check_emissions(self) -> None:
        raise NotImplementedError

    def _emission_model(self, observations: _Observations) -> Any:
        raise NotImplementedError

    def _emission_scalars(self) -> dict[str, int]:
        raise NotImplementedError

    def _n_obs_columns(self) -> int:
        raise NotImplementedError

    def _n_squared_columns(self) -> int:
        return 0

    def _second_moments(self, squared: FloatArray) -> dict[str, FloatArray]:
        return {}

    def _maximize_emissions(self, stats: dict[str, Any]) -> None:
        raise NotImplementedError

    def _sample_emissions(self, states: IntArray, rng: np.random.RandomState) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_components={self.n_components}, "
            f"n_classes={self.n_classes}, n_iter={self.n_iter}, tol={self.tol})"
        )


_EMPTY_INT = np.zeros((0, 0), dtype=np.int64)
_EMPTY_FLOAT = np.zeros((0, 0), dtype=np.float64)


class PoissonHMM(_BaseHMM):
    """HMM with independent Poisson counts per feature; ``lambdas_`` has shape (K, D).

    Parameter letters: ``s`` start, ``t`` transitions, ``l`` lambdas. The positional
    parameters and their defaults are hmmlearn 0.3.3's. ``lambdas_prior`` and
    ``lambdas_weight`` (a number, (K,) or (K, D)) are the shape and rate of a gamma prior on
    each rate: the M-step gives ``(lambdas_prior + sum of counts) / (lambdas_weight +
    occupancy)`` per state.

    Extensions, keyword-only: ``n_classes`` transition matrices selected per row by
    ``classes`` (``transmat_`` is then (n_classes, K, K)); ``class_transmat_strength``
    shrinks each class's rows towards the overall matrix with that many pseudo-transitions
    per row (the overall matrix alone gets ``transmat_prior``); ``fixed_lambdas``, a (K,) or
    (K, D) boolean mask of rates the M-step leaves as they are; ``min_lambda``, a floor on
    every rate after the M-step; ``n_jobs`` threads over sequences.
    """

    _emission_kind = POISSON
    _all_params = "stl"
    _emission_letters = "l"

    def __init__(
        self,
        n_components: int = 1,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        lambdas_prior: Any = 0.0,
        lambdas_weight: Any = 0.0,
        algorithm: str = "viterbi",
        random_state: RandomStateLike = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "stl",
        init_params: str = "stl",
        implementation: str = "log",
        *,
        n_classes: int = 1,
        n_jobs: int = 1,
        class_transmat_strength: float | None = None,
        fixed_lambdas: Any = None,
        min_lambda: float = 0.0,
    ) -> None:
        super().__init__(
            n_components,
            startprob_prior,
            transmat_prior,
            algorithm,
            random_state,
            n_iter,
            tol,
            verbose,
            params,
            init_params,
            implementation,
            n_classes=n_classes,
            n_jobs=n_jobs,
            class_transmat_strength=class_transmat_strength,
        )
        self.lambdas_prior = lambdas_prior
        self.lambdas_weight = lambdas_weight
        self.fixed_lambdas = fixed_lambdas
        self.min_lambda = min_lambda
        self._n_features: int | None = None

    @property
    def n_features(self) -> int | None:
        """Number of count columns: as set or fitted, else the width of ``lambdas_``."""
        if self._n_features is not None:
            return self._n_features
        if hasattr(self, "lambdas_") and np.ndim(self.lambdas_) == 2:
            return int(np.shape(self.lambdas_)[1])
        return None

    @n_features.setter
    def n_features(self, value: int | None) -> None:
        self._n_features = None if value is None else int(value)

    def _expected_width(self, fitting: bool) -> int | None:
        if (fitting and "l" in self.init_params) or not hasattr(self, "lambdas_"):
            return None
        return int(np.shape(self.lambdas_)[1]) if np.ndim(self.lambdas_) == 2 else None

    def _convert(self, array: np.ndarray, fitting: bool) -> tuple[IntArray, FloatArray, int]:
        counts = _integer_array(array, "Poisson counts in X")
        if counts.min() < 0:
            raise ValueError(
                f"Poisson counts in X must be non-negative; found a negative count at row "
                f"{_first_row(counts < 0)}"
            )
        return counts, _EMPTY_FLOAT, int(counts.max())

    def _initialize_emissions(
        self, observations: _Observations, rng: np.random.RandomState
    ) -> None:
        if not self._needs_init("l", "lambdas_"):
            return
        data = observations.as_float()
        K = int(self.n_components)
        centers = _kmeans_centers(data, K, rng)
        column_means = data.mean(axis=0) + 1e-3
        jitter = (0.05 + 0.1 * rng.random_sample((K, data.shape[1]))) * column_means
        self.lambdas_ = np.maximum(centers, 0.0) + jitter

    def _fixed_mask(self, shape: tuple[int, int]) -> npt.NDArray[np.bool_] | None:
        if self.fixed_lambdas is None:
            return None
        mask = np.asarray(self.fixed_lambdas)
        if mask.dtype != np.bool_ or mask.shape not in ((shape[0],), shape):
            raise ValueError(
                f"fixed_lambdas must be a boolean mask of shape ({shape[0]},) or {shape}; "
                f"got {mask.dtype} of shape {mask.shape}"
            )
        return np.broadcast_to(mask[:, None] if mask.ndim == 1 else mask, shape)

    def _check_emissions(self) -> None:
        lambdas = self._parameter("lambdas_", "l")
        if lambdas.ndim == 1 and lambdas.size:
            lambdas = self.lambdas_ = np.atleast_2d(lambdas)
        K = int(self.n_components)
        if lambdas.ndim != 2 or lambdas.shape[0] != K or lambdas.shape[1] == 0:
            raise ValueError(f"lambdas_ must have shape ({K}, n_features); got {lambdas.shape}")
        if self._n_features is not None and lambdas.shape[1] != self._n_features:
            raise ValueError(
                f"lambdas_ must have shape ({K}, {self._n_features}) (n_features="
                f"{self._n_features}); got {lambdas.shape}"
            )
        if not np.all(np.isfinite(lambdas)) or np.any(lambdas < 0):
            raise ValueError("lambdas_ must hold finite non-negative rates")
        self._n_features = int(lambdas.shape[1])
        shapes = [(K,), lambdas.shape]
        _prior_array("lambdas_prior", self.lambdas_prior, shapes)
        _prior_array("lambdas_weight", self.lambdas_weight, shapes)
        _prior_array("min_lambda", self.min_lambda, [])
        self._fixed_mask(lambdas.shape)

    def _emission_model(self, observations: _Observations) -> Any:
        lambdas = np.asarray(self.lambdas_, dtype=np.float64)
        table_size = min(observations.max_count + 1, MAX_POISSON_TABLE)
        counts = np.arange(table_size, dtype=np.float64)[None, :, None]
        rates = lambdas.T[:, None, :]
        log_table = xlogy(counts, rates) - rates - gammaln(counts + 1.0)
        with np.errstate(divide="ignore"):
            log_rate = np.log(lambdas.T)
        return _kernels.EmissionModel(
            POISSON,
            int(self.n_components),
            observations.n_features,
            observations.n_features,
            observations.counts,
            _EMPTY_FLOAT,
            np.exp(log_table),
            log_table,
            lambdas.T,
            log_rate,
            np.zeros(0),
        )

    def _emission_scalars(self) -> dict[str, int]:
        K, D = int(self.n_components), int(self.n_features or 0)
        mask = self._fixed_mask((K, D))
        return {"l": K * D - (0 if mask is None else int(mask.sum()))}

    def _n_obs_columns(self) -> int:
        return int(np.shape(self.lambdas_)[1])

    def _maximize_emissions(self, stats: dict[str, Any]) -> None:
        if "l" not in self.params:
            return
        lambdas = np.asarray(self.lambdas_, dtype=np.float64)
        K = lambdas.shape[0]
        prior = _as_column(
            _prior_array("lambdas_prior", self.lambdas_prior, [(K,), lambdas.shape]), K
        )
        weight = _as_column(
            _prior_array("lambdas_weight", self.lambdas_weight, [(K,), lambdas.shape]), K
        )
        numerator = prior + stats["obs"]
        denominator = weight + stats["post"][:, None]
        usable = denominator > 0
        updated = np.where(usable, numerator / np.where(usable, denominator, 1.0), lambdas)
        mask = self._fixed_mask(lambdas.shape)
        if mask is not None:
            updated = np.where(mask, lambdas, updated)
        self.lambdas_ = np.maximum(updated, float(self.min_lambda))

    def _sample_emissions(self, states: IntArray, rng: np.random.RandomState) -> np.ndarray:
        return rng.poisson(np.asarray(self.lambdas_)[states]).astype(np.int64)


class CategoricalHMM(_BaseHMM):
    """HMM with one categorical symbol per row (X of shape (n_samples, 1));
    ``emissionprob_`` has shape (K, n_features).

    Parameter letters: ``s`` start, ``t`` transitions, ``e`` emission probabilities.
    ``emissionprob_prior`` is a Dirichlet prior on each row of ``emissionprob_`` (a number or
    (K, n_features)). ``n_features`` is the number of symbols: given, or learnt from the data
    (largest symbol + 1) or from ``emissionprob_``.
    """

    _emission_kind = CATEGORICAL
    _all_params = "ste"
    _emission_letters = "e"

    def __init__(
        self,
        n_components: int = 1,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        *,
        emissionprob_prior: Any = 1.0,
        n_features: int | None = None,
        algorithm: str = "viterbi",
        random_state: RandomStateLike = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "ste",
        init_params: str = "ste",
        implementation: str = "log",
        n_classes: int = 1,
        n_jobs: int = 1,
        class_transmat_strength: float | None = None,
    ) -> None:
        super().__init__(
            n_components,
            startprob_prior,
            transmat_prior,
            algorithm,
            random_state,
            n_iter,
            tol,
            verbose,
            params,
            init_params,
            implementation,
            n_classes=n_classes,
            n_jobs=n_jobs,
            class_transmat_strength=class_transmat_strength,
        )
        self.emissionprob_prior = emissionprob_prior
        self.n_features = n_features

    def _check_and_set_n_features(self, X: Any) -> None:
        """Check that X holds non-negative integer symbols below ``n_features`` (setting it
        from the largest symbol when unset)."""
        array = np.asarray(X)
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"symbols in X must be integers; got dtype {array.dtype}")
        if array.size == 0:
            raise ValueError("X is empty: it has no rows")
        if array.min() < 0:
            raise ValueError(f"symbols in X must be non-negative; found {int(array.min())}")
        if self.n_features is not None:
            if array.max() >= self.n_features:
                raise ValueError(
                    f"X contains the category {int(array.max())}, outside the range "
                    f"[0, {self.n_features}) given by n_features={self.n_features}"
                )
        else:
            self.n_features = int(array.max()) + 1

    def _expected_width(self, fitting: bool) -> int | None:
        return 1

    def _kept_emissionprob(self, fitting: bool) -> bool:
        return not (fitting and "e" in self.init_params) and hasattr(self, "emissionprob_")

    def _n_symbols(self, fitting: bool) -> int | None:
        if self._kept_emissionprob(fitting):
            return int(np.shape(np.atleast_2d(self.emissionprob_))[1])
        return None if self.n_features is None else int(self.n_features)

    def _convert(self, array: np.ndarray, fitting: bool) -> tuple[IntArray, FloatArray, int]:
        symbols = _integer_array(array, "categories in X")
        n_symbols = self._n_symbols(fitting)
        low = symbols.min()
        if low < 0 or (n_symbols is not None and symbols.max() >= n_symbols):
            outside = (symbols < 0) if low < 0 else (symbols >= (n_symbols or 0))
            row = _first_row(outside)
            limit = "n_features" if n_symbols is None else str(n_symbols)
            raise ValueError(
                f"X contains the category {int(symbols[row, 0])} at row {row}, outside the "
                f"range [0, {limit})"
            )
        return symbols, _EMPTY_FLOAT, int(symbols.max())

    def _set_n_features(self, observations: _Observations) -> None:
        n_symbols = self._n_symbols(fitting=True)
        self.n_features = observations.max_count + 1 if n_symbols is None else n_symbols

    def _initialize_emissions(
        self, observations: _Observations, rng: np.random.RandomState
    ) -> None:
        if not self._needs_init("e", "emissionprob_"):
            return
        weights = rng.random_sample((int(self.n_components), int(self.n_features or 1)))
        self.emissionprob_ = weights / weights.sum(axis=1, keepdims=True)

    def _check_emissions(self) -> None:
        emissionprob = np.atleast_2d(self._parameter("emissionprob_", "e"))
        self.emissionprob_ = emissionprob
        K = int(self.n_components)
        if self.n_features is None and emissionprob.ndim == 2:
            self.n_features = int(emissionprob.shape[1])
        expected = (K, self.n_features)
        if emissionprob.shape != expected or emissionprob.shape[1] == 0:
            raise ValueError(
                f"emissionprob_ must have shape {expected} (n_components, n_features); "
                f"got {emissionprob.shape}"
            )
        if not np.all(np.isfinite(emissionprob)) or np.any(emissionprob < 0):
            raise ValueError("emissionprob_ must hold finite non-negative probabilities")
        sums = emissionprob.sum(axis=1)
        if np.any(np.abs(sums - 1.0) > SUM_TOLERANCE):
            raise ValueError(f"every row of emissionprob_ must sum to 1; row sums are {sums}")
        _prior_array(
            "emissionprob_prior", self.emissionprob_prior, [emissionprob.shape], non_negative=False
        )

    def _emission_model(self, observations: _Observations) -> Any:
        table = np.ascontiguousarray(np.asarray(self.emissionprob_, dtype=np.float64).T)
        with np.errstate(divide="ignore"):
            log_table = np.log(table)
        return _kernels.EmissionModel(
            CATEGORICAL,
            int(self.n_components),
            1,
            table.shape[0],
            observations.counts,
            _EMPTY_FLOAT,
            table,
            log_table,
            np.zeros(0),
            np.zeros(0),
            np.zeros(0),
        )

    def _emission_scalars(self) -> dict[str, int]:
        return {"e": int(self.n_components) * (int(self.n_features or 1) - 1)}

    def _n_obs_columns(self) -> int:
        return int(np.shape(self.emissionprob_)[1])

    def _maximize_emissions(self, stats: dict[str, Any]) -> None:
        if "e" not in self.params:
            return
        prior = _prior_array(
            "emissionprob_prior",
            self.emissionprob_prior,
            [np.shape(self.emissionprob_)],
            non_negative=False,
        )
        counts = np.maximum(prior - 1.0 + stats["obs"], 0.0)
        self.emissionprob_ = _normalize_rows(counts, self.emissionprob_)

    def _sample_emissions(self, states: IntArray, rng: np.random.RandomState) -> np.ndarray:
        cumulative = np.cumsum(self.emissionprob_, axis=1)[states]
        draws = rng.random_sample((states.shape[0], 1))
        symbols = (draws >= cumulative).sum(axis=1)
        return np.minimum(symbols, cumulative.shape[1] - 1).astype(np.int64)[:, None]


class GaussianHMM(_BaseHMM):
    """HMM with Gaussian emissions; ``means_`` is (K, D) and ``covars_`` is (K, D, D) for
    every ``covariance_type``, as in hmmlearn, while ``_covars_`` holds the compact form:
    (K,) for ``"spherical"``, (K, D) for ``"diag"``, (K, D, D) for ``"full"`` and (D, D) for
    ``"tied"``. Setting ``covars_`` takes the compact form and checks it.

    Parameter letters: ``s`` start, ``t`` transitions, ``m`` means, ``c`` covariances.
    ``means_prior``/``means_weight`` are the mean and precision weight of a normal prior on
    the means; ``covars_prior``/``covars_weight`` an inverse-gamma (spherical, diag) or
    inverse-Wishart (full, tied) prior on the covariances, as in hmmlearn. ``min_covar`` is
    added to the diagonal of the initial covariance and, for spherical and diagonal
    covariances, floors the variances after each M-step.
    """

    _emission_kind = GAUSSIAN
    _all_params = "stmc"
    _emission_letters = "mc"

    def __init__(
        self,
        n_components: int = 1,
        covariance_type: str = "diag",
        min_covar: float = 1e-3,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        means_prior: Any = 0,
        means_weight: Any = 0,
        covars_prior: Any = 1e-2,
        covars_weight: Any = 1,
        algorithm: str = "viterbi",
        random_state: RandomStateLike = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "stmc",
        init_params: str = "stmc",
        implementation: str = "log",
        *,
        n_classes: int = 1,
        n_jobs: int = 1,
        class_transmat_strength: float | None = None,
    ) -> None:
        super().__init__(
            n_components,
            startprob_prior,
            transmat_prior,
            algorithm,
            random_state,
            n_iter,
            tol,
            verbose,
            params,
            init_params,
            implementation,
            n_classes=n_classes,
            n_jobs=n_jobs,
            class_transmat_strength=class_transmat_strength,
        )
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self._n_features: int | None = None

    # ----------------------------------------------------------------- covariances

    @property
    def n_features(self) -> int | None:
        """Number of feature columns: as set or fitted, else the width of ``means_``."""
        if self._n_features is not None:
            return self._n_features
        if hasattr(self, "means_") and np.ndim(self.means_) == 2:
            return int(np.shape(self.means_)[1])
        return None

    @n_features.setter
    def n_features(self, value: int | None) -> None:
        self._n_features = None if value is None else int(value)

    @property
    def covars_(self) -> FloatArray:
        """Covariance matrices, (K, D, D) whatever the covariance type."""
        compact = np.asarray(self._covars_, dtype=np.float64)
        K = int(self.n_components)
        if self.covariance_type == "full":
            return compact
        if self.covariance_type == "diag":
            return np.stack([np.diag(row) for row in compact])
        if self.covariance_type == "tied":
            return np.tile(compact, (K, 1, 1))
        D = self.n_features or 1
        return np.eye(D)[None, :, :] * compact.ravel()[:, None, None]

    @covars_.setter
    def covars_(self, value: Any) -> None:
        self._covars_ = self._validated_covars(np.array(value, dtype=np.float64, copy=True))

    def _validated_covars(self, covars: FloatArray) -> FloatArray:
        """The compact covariances, or ValueError naming the expected shape."""
        kind = self.covariance_type
        K = int(self.n_components)
        if kind not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of 'spherical', 'diag', 'full', 'tied'; got {kind!r}"
            )
        if not np.all(np.isfinite(covars)):
            raise ValueError("covars_ must be finite")
        if kind == "spherical":
            if covars.size != K:
                raise ValueError(
                    f"covars_ for covariance_type='spherical' must have shape ({K},) "
                    f"(n_components,); got {covars.shape}"
                )
            covars = covars.reshape(K)
            if np.any(covars <= 0):
                raise ValueError("covars_ for covariance_type='spherical' must be positive")
        elif kind == "diag":
            if covars.ndim != 2 or covars.shape[0] != K or covars.shape[1] == 0:
                raise ValueError(
                    f"covars_ for covariance_type='diag' must have shape ({K}, n_features); "
                    f"got {covars.shape}"
                )
            if np.any(covars <= 0):
                raise ValueError("covars_ for covariance_type='diag' must be positive")
        elif kind == "full":
            if covars.ndim != 3 or covars.shape[0] != K or covars.shape[1] != covars.shape[2]:
                raise ValueError(
                    f"covars_ for covariance_type='full' must have shape ({K}, n_features, "
                    f"n_features); got {covars.shape}"
                )
            for k, matrix in enumerate(covars):
                if not _symmetric_positive_definite(matrix):
                    raise ValueError(
                        f"component {k} of covars_ (covariance_type='full') must be "
                        "symmetric, positive-definite"
                    )
        else:
            if covars.ndim != 2 or covars.shape[0] != covars.shape[1]:
                raise ValueError(
                    f"covars_ for covariance_type='tied' must have shape (n_features, "
                    f"n_features); got {covars.shape}"
                )
            if not _symmetric_positive_definite(covars):
                raise ValueError(
                    "covars_ for covariance_type='tied' must be symmetric, positive-definite"
                )
        return covars

    def _covariance_width(self) -> int | None:
        if not hasattr(self, "_covars_"):
            return None
        compact = np.asarray(self._covars_)
        if self.covariance_type == "diag" and compact.ndim == 2:
            return int(compact.shape[1])
        if self.covariance_type in ("full", "tied") and compact.ndim >= 2:
            return int(compact.shape[-1])
        return None

    def _full_covariances(self) -> FloatArray:
        """(K, D, D) covariances for sampling and the density."""
        compact = np.asarray(self._covars_, dtype=np.float64)
        K, D = int(self.n_components), int(np.shape(self.means_)[1])
        if self.covariance_type == "spherical":
            return np.eye(D)[None] * compact.reshape(K)[:, None, None]
        if self.covariance_type == "diag":
            return np.eye(D)[None] * compact[:, None, :]
        if self.covariance_type == "tied":
            return np.broadcast_to(compact, (K, D, D))
        return compact

    # ----------------------------------------------------------------- hooks

    def _expected_width(self, fitting: bool) -> int | None:
        keeps_means = not (fitting and "m" in self.init_params) and hasattr(self, "means_")
        if keeps_means and np.ndim(self.means_) == 2:
            return int(np.shape(self.means_)[1])
        if not (fitting and "c" in self.init_params):
            return self._covariance_width()
        return None

    def _convert(self, array: np.ndarray, fitting: bool) -> tuple[IntArray, FloatArray, int]:
        if np.issubdtype(array.dtype, np.complexfloating):
            raise ValueError("X must hold real numbers for Gaussian emissions; got complex")
        return _EMPTY_INT, np.ascontiguousarray(array, dtype=np.float64), 0

    def _initialize_emissions(
        self, observations: _Observations, rng: np.random.RandomState
    ) -> None:
        data = observations.values
        K, D = int(self.n_components), data.shape[1]
        if self._needs_init("m", "means_"):
            self.means_ = _kmeans_centers(data, K, rng)
        if self._needs_init("c", "covars_"):
            if self.covariance_type not in COVARIANCE_TYPES:
                self._validated_covars(np.ones(K))
            covariance = np.atleast_2d(np.cov(data.T)) if data.shape[0] > 1 else np.zeros((D, D))
            covariance = covariance + self.min_covar * np.eye(D)
            if self.covariance_type == "spherical":
                self._covars_ = np.full(K, np.diag(covariance).mean())
            elif self.covariance_type == "diag":
                self._covars_ = np.tile(np.diag(covariance), (K, 1))
            elif self.covariance_type == "full":
                self._covars_ = np.tile(covariance, (K, 1, 1))
            else:
                self._covars_ = covariance

    def _check_emissions(self) -> None:
        K = int(self.n_components)
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of 'spherical', 'diag', 'full', 'tied'; "
                f"got {self.covariance_type!r}"
            )
        means = self._parameter("means_", "m")
        if means.ndim != 2 or means.shape[0] != K or means.shape[1] == 0:
            raise ValueError(f"means_ must have shape ({K}, n_features); got {means.shape}")
        if not np.all(np.isfinite(means)):
            raise ValueError("means_ must be finite")
        D = int(means.shape[1])
        if not hasattr(self, "_covars_"):
            raise ValueError(
                "covars_ is not set: fit the model, set covars_ by hand, or include 'c' in "
                "init_params"
            )
        covars = np.asarray(self._covars_, dtype=np.float64)
        expected = {
            "spherical": (K,),
            "diag": (K, D),
            "full": (K, D, D),
            "tied": (D, D),
        }[self.covariance_type]
        if covars.shape != expected and not (
            self.covariance_type == "spherical" and covars.size == K
        ):
            raise ValueError(
                f"covars_ for covariance_type={self.covariance_type!r} must have shape "
                f"{expected} to match means_ {means.shape}; got {covars.shape}"
            )
        if not np.all(np.isfinite(covars)):
            raise ValueError("covars_ must be finite")
        if self.covariance_type in ("spherical", "diag") and np.any(covars < 0):
            raise ValueError(
                f"covars_ for covariance_type={self.covariance_type!r} must not be negative"
            )
        self._covars_ = covars.reshape(expected)
        self._n_features = D
        _prior_array("means_prior", self.means_prior, [(K, D)], non_negative=False)
        _prior_array("means_weight", self.means_weight, [(K,), (K, D)])
        shapes_by_type: dict[str, list[tuple[int, ...]]] = {
            "spherical": [(K,)],
            "diag": [(K, D)],
            "full": [(K, D, D), (D, D)],
            "tied": [(D, D)],
        }
        prior_shapes = shapes_by_type[self.covariance_type]
        _prior_array("covars_prior", self.covars_prior, prior_shapes, non_negative=False)
        _prior_array(
            "covars_weight",
            self.covars_weight,
            [] if self.covariance_type == "tied" else [(K,)],
            non_negative=False,
        )

    def _cholesky_factors(self) -> FloatArray:
        """Lower Cholesky factors of the full covariances, (K, D, D) or (D, D) for tied."""
        covars = np.asarray(self._covars_, dtype=np.float64)
        matrices = covars[None] if self.covariance_type == "tied" else covars
        factors = np.empty_like(matrices)
        for k, matrix in enumerate(matrices):
            try:
                factors[k] = linalg.cholesky(matrix, lower=True)
            except linalg.LinAlgError:
                try:
                    jittered = matrix + CHOLESKY_JITTER * np.eye(matrix.shape[0])
                    factors[k] = linalg.cholesky(jittered, lower=True)
                except linalg.LinAlgError:
                    which = (
                        "the tied covariance"
                        if self.covariance_type == "tied"
                        else (f"component {k} of covars_")
                    )
                    raise ValueError(
                        f"{which} is not symmetric positive-definite: set covars_ to "
                        "positive-definite matrices or raise covars_prior"
                    ) from None
        return factors[0] if self.covariance_type == "tied" else factors

    def _emission_model(self, observations: _Observations) -> Any:
        means = np.asarray(self.means_, dtype=np.float64)
        K, D = means.shape
        log_2pi = D * np.log(2.0 * np.pi)
        if self.covariance_type in ("spherical", "diag"):
            variances = np.maximum(
                self._full_covariances().diagonal(axis1=1, axis2=2), np.finfo(float).tiny
            )
            constant = -0.5 * (log_2pi + np.log(variances).sum(axis=1))
            return _kernels.EmissionModel(
                GAUSSIAN,
                K,
                D,
                D,
                _EMPTY_INT,
                observations.values,
                np.zeros((0, 0, 0)),
                np.zeros((0, 0, 0)),
                means.T,
                (1.0 / variances).T,
                constant,
                n_squared_columns=D,
            )
        factors = self._cholesky_factors()
        diagonals = np.diagonal(factors, axis1=-2, axis2=-1)
        log_det = 2.0 * np.log(diagonals).sum(axis=-1)
        constant = np.broadcast_to(-0.5 * (log_2pi + log_det), (K,))
        pairs = D * (D + 1) // 2
        if self.covariance_type == "full":
            # Kernel layout: states innermost, [row, column, state] and [row, state].
            kind, rate = GAUSSIAN_FULL, means.T
            factors, diagonals = factors.transpose(1, 2, 0), diagonals.T
        else:
            kind = GAUSSIAN_TIED
            rate = _forward_substitution(factors, means.T)
        return _kernels.EmissionModel(
            kind,
            K,
            D,
            D,
            _EMPTY_INT,
            observations.values,
            np.zeros((0, 0, 0)),
            np.zeros((0, 0, 0)),
            rate,
            np.zeros(0),
            constant,
            factors,
            1.0 / diagonals,
            pairs,
        )

    def _emission_scalars(self) -> dict[str, int]:
        K, D = int(self.n_components), int(self.n_features or 1)
        covariance = {
            "spherical": K,
            "diag": K * D,
            "full": K * D * (D + 1) // 2,
            "tied": D * (D + 1) // 2,
        }.get(self.covariance_type, 0)
        return {"m": K * D, "c": covariance}

    def _n_obs_columns(self) -> int:
        return int(np.shape(self.means_)[1])

    def _n_squared_columns(self) -> int:
        D = int(np.shape(self.means_)[1])
        return D if self.covariance_type in ("spherical", "diag") else D * (D + 1) // 2

    def _second_moments(self, squared: FloatArray) -> dict[str, FloatArray]:
        if self.covariance_type in ("spherical", "diag"):
            return {"obs**2": squared}
        K, D = int(self.n_components), int(np.shape(self.means_)[1])
        upper = np.triu_indices(D)
        outer = np.zeros((K, D, D))
        outer[:, upper[0], upper[1]] = squared
        outer[:, upper[1], upper[0]] = squared
        return {"obs*obs.T": outer}

    def _maximize_emissions(self, stats: dict[str, Any]) -> None:
        K, D = np.shape(self.means_)
        means_prior = _prior_array("means_prior", self.means_prior, [(K, D)], non_negative=False)
        means_weight = _prior_array("means_weight", self.means_weight, [(K,), (K, D)])
        weight_column = _as_column(means_weight, K)
        post = stats["post"]
        if "m" in self.params:
            denominator = weight_column + post[:, None]
            usable = np.broadcast_to(denominator > 0, (K, D))
            self.means_ = np.where(
                usable,
                (weight_column * means_prior + stats["obs"]) / np.where(usable, denominator, 1.0),
                self.means_,
            )
        if "c" not in self.params:
            return
        means = np.asarray(self.means_)
        covars_prior = np.asarray(self.covars_prior, dtype=np.float64)
        covars_weight = np.asarray(self.covars_weight, dtype=np.float64)
        difference = means - means_prior
        if self.covariance_type in ("spherical", "diag"):
            spread = (
                weight_column * difference**2
                + stats["obs**2"]
                - 2.0 * means * stats["obs"]
                + means**2 * post[:, None]
            )
            denominator = np.maximum(_as_column(covars_weight, K) - 1.0, 0.0) + post[:, None]
            prior = _as_column(covars_prior, K)
            # Unlike hmmlearn, variances are floored at min_covar so that a state collapsing
            # onto a single value keeps a usable density.
            covars = np.maximum((prior + spread) / np.maximum(denominator, 1e-5), self.min_covar)
            self._covars_ = covars.mean(axis=1) if self.covariance_type == "spherical" else covars
            return
        weights = np.broadcast_to(
            means_weight if means_weight.ndim < 2 else means_weight.mean(axis=1), (K,)
        )
        obs_means = stats["obs"][:, :, None] * means[:, None, :]
        spread = (
            weights[:, None, None] * difference[:, :, None] * difference[:, None, :]
            + stats["obs*obs.T"]
            - obs_means
            - obs_means.transpose(0, 2, 1)
            + means[:, :, None] * means[:, None, :] * post[:, None, None]
        )
        if self.covariance_type == "tied":
            extra = max(float(covars_weight) - D, 0.0)
            self._covars_ = (covars_prior + spread.sum(axis=0)) / (extra + post.sum())
        else:
            extra_k = np.broadcast_to(np.maximum(covars_weight - D, 0.0), (K,))
            self._covars_ = (covars_prior + spread) / (extra_k + post)[:, None, None]

    def _sample_emissions(self, states: IntArray, rng: np.random.RandomState) -> np.ndarray:
        means = np.asarray(self.means_, dtype=np.float64)
        covariances = self._full_covariances()
        factors = np.empty_like(covariances)
        for k, matrix in enumerate(covariances):
            try:
                factors[k] = linalg.cholesky(matrix, lower=True)
            except linalg.LinAlgError:
                factors[k] = linalg.cholesky(
                    matrix + CHOLESKY_JITTER * np.eye(len(matrix)), lower=True
                )
        noise = rng.standard_normal((states.shape[0], means.shape[1]))
        result: np.ndarray = np.empty_like(noise)
        for k in range(means.shape[0]):
            rows = states == k
            result[rows] = means[k] + noise[rows] @ factors[k].T
        return result


def _forward_substitution(lower: FloatArray, right: FloatArray) -> FloatArray:
    """Solve lower @ result = right for a small lower-triangular matrix, in plain NumPy: a
    BLAS triangular solve here wakes BLAS's thread pool, whose spinning then slows the
    kernels that run next on a machine with few cores."""
    result = np.empty_like(right)
    for row in range(lower.shape[0]):
        known = (lower[row, :row, None] * result[:row]).sum(axis=0)
        result[row] = (right[row] - known) / lower[row, row]
    return result


def _symmetric_positive_definite(matrix: FloatArray) -> bool:
    if not np.allclose(matrix, matrix.T):
        return False
    try:
        linalg.cholesky(matrix, lower=True)
    except linalg.LinAlgError:
        return False
    return True
