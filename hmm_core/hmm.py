"""Hidden Markov models with Poisson, categorical and diagonal Gaussian emissions (hmmlearn API)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from scipy.special import gammaln, xlogy

from hmm_core import _kernels

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
RandomStateLike = int | np.random.Generator | np.random.RandomState | None

POISSON, CATEGORICAL, GAUSSIAN = 0, 1, 2
MAX_POISSON_TABLE = 1024
KMEANS_SAMPLE = 10_000
SUM_TOLERANCE = 1e-6
MAX_EXACT_INTEGER = 2.0**53

__all__ = ["CategoricalHMM", "ConvergenceMonitor", "GaussianHMM", "PoissonHMM"]


class ConvergenceMonitor:
    """Records the log-likelihood of each EM iteration and decides when to stop.

    EM has converged when ``n_iter`` iterations ran or when the last gain in log-likelihood
    fell below ``tol``; ``tol=-np.inf`` therefore always runs ``n_iter`` iterations.
    """

    def __init__(self, tol: float, n_iter: int) -> None:
        self.tol = tol
        self.n_iter = n_iter
        self.history: list[float] = []
        self.iter = 0

    def report(self, log_prob: float) -> None:
        """Record the log-likelihood of one iteration."""
        self.history.append(float(log_prob))
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


def _as_generator(random_state: RandomStateLike) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    return np.random.default_rng(random_state)


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


def _kmeans_centers(data: FloatArray, n_clusters: int, rng: np.random.Generator) -> FloatArray:
    """A few Lloyd iterations on a subsample, seeded with distinct rows."""
    if data.shape[0] > KMEANS_SAMPLE:
        data = data[rng.choice(data.shape[0], KMEANS_SAMPLE, replace=False)]
    distinct = np.unique(data, axis=0)
    if distinct.shape[0] >= n_clusters:
        centers = distinct[rng.choice(distinct.shape[0], n_clusters, replace=False)]
    else:
        centers = distinct[rng.integers(0, distinct.shape[0], n_clusters)]
    centers = centers.astype(np.float64, copy=True)
    for _ in range(10):
        distances = ((data[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
        nearest = distances.argmin(axis=1)
        for k in range(n_clusters):
            members = data[nearest == k]
            if members.shape[0]:
                centers[k] = members.mean(axis=0)
    return centers


class _BaseHMM:
    """Shared EM, inference and validation; subclasses supply the emission model."""

    _emission_kind: int
    _all_params: str
    _emission_letters: str

    def __init__(
        self,
        n_components: int = 1,
        *,
        n_iter: int = 100,
        tol: float = 1e-4,
        random_state: RandomStateLike = None,
        params: str | None = None,
        init_params: str | None = None,
        n_classes: int = 1,
        n_jobs: int = 1,
    ) -> None:
        self.n_components = n_components
        self.n_iter = n_iter
        self.tol = tol
        self.random_state = random_state
        self.params = self._all_params if params is None else params
        self.init_params = self._all_params if init_params is None else init_params
        self.n_classes = n_classes
        self.n_jobs = n_jobs

    # ----------------------------------------------------------------- public API

    def fit(self, X: Any, lengths: Any = None, classes: Any = None) -> Self:
        """Estimate the parameters with Baum-Welch (EM); returns self.

        ``classes[t]`` selects the transition matrix of the step into row t when
        ``n_classes > 1``. Parameters whose letter is missing from ``init_params`` are kept
        as set by hand.
        """
        self._check_settings()
        observations = self._prepare(X, lengths, classes, fitting=True)
        self._initialize(observations, _as_generator(self.random_state))
        self._check_parameters()
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter)
        workspace = self._workspace(observations)
        for _ in range(self.n_iter):
            stats, log_likelihood = self._expectation(observations, workspace)
            self._maximization(stats)
            self.monitor_.report(log_likelihood)
            if self.monitor_.converged:
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
    ) -> tuple[float, dict[str, FloatArray]]:
        """One E-step under the current parameters: (log-likelihood, sufficient statistics).

        The statistics are ``start`` (K,) posteriors at the first row of each sequence,
        ``trans`` (C, K, K) expected transition counts per class (C = 1 gives (1, K, K)),
        ``post`` (K,) total posteriors, ``obs`` (K, F) posterior-weighted sums of X (of the
        one-hot symbols for categorical) and ``obs**2`` (K, D) of X squared (Gaussian only).
        They let callers run their own M-step, for example with priors.
        """
        observations = self._prepare_for_inference(X, lengths, classes)
        stats, log_likelihood = self._expectation(observations)
        return log_likelihood, {name: value.copy() for name, value in stats.items()}

    def predict_proba(self, X: Any, lengths: Any = None, classes: Any = None) -> FloatArray:
        """Posterior probability of each state at each row."""
        return self.score_samples(X, lengths, classes)[1]

    def predict(self, X: Any, lengths: Any = None, classes: Any = None) -> IntArray:
        """Most likely state sequence (Viterbi)."""
        return self.decode(X, lengths, classes)[1]

    def decode(
        self,
        X: Any,
        lengths: Any = None,
        classes: Any = None,
        algorithm: str = "viterbi",
    ) -> tuple[float, IntArray]:
        """Most likely states: ``"viterbi"`` gives the best path and its log probability;
        ``"map"`` gives the most probable state at each row and the sum of their log
        posteriors."""
        if algorithm not in ("viterbi", "map"):
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
        classes: Any = None,
    ) -> tuple[np.ndarray, IntArray]:
        """Draw ``n_samples`` observations and their states; returns (X, states).

        With ``n_classes > 1`` pass ``classes`` (one per sample) to pick the transitions.
        """
        self._check_settings()
        self._check_parameters()
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1; got {n_samples}")
        rng = _as_generator(self.random_state if random_state is None else random_state)
        class_array = _class_array(classes, n_samples, self.n_classes)
        cum_start = np.cumsum(self.startprob_)
        cum_trans = np.ascontiguousarray(np.cumsum(self._transmat3(), axis=2))
        states = np.empty(n_samples, dtype=np.int64)
        _kernels.sample_states(cum_start, cum_trans, class_array, rng.random(n_samples), states)
        return self._sample_emissions(states, rng), states

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
        self._check_parameters()
        return self._prepare(X, lengths, classes, fitting=False)

    def _prepare(self, X: Any, lengths: Any, classes: Any, *, fitting: bool) -> _Observations:
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
        class_array = _class_array(classes, array.shape[0], int(self.n_classes))
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

    def _check_parameters(self) -> None:
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

    def _initialize(self, observations: _Observations, rng: np.random.Generator) -> None:
        K, C = int(self.n_components), int(self.n_classes)
        if "s" in self.init_params:
            self.startprob_ = np.full(K, 1.0 / K)
        if "t" in self.init_params:
            shape = (K, K) if C == 1 else (C, K, K)
            self.transmat_ = np.full(shape, 1.0 / K)
        self._initialize_emissions(observations, rng)

    def _forward_backward(
        self,
        observations: _Observations,
        *,
        backward: bool,
        stats: FloatArray | None = None,
        workspace: tuple[FloatArray, FloatArray] | None = None,
    ) -> tuple[float, FloatArray]:
        n_sequences = observations.starts.shape[0]
        if workspace is None:
            workspace = self._workspace(observations)
        alpha, scale = workspace
        logliks = np.zeros(n_sequences, dtype=np.float64)
        status = np.empty(n_sequences, dtype=np.int64)
        transmat = self._transmat3()
        _kernels.forward_backward(
            self._emission_model(observations),
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
            status,
            backward,
            self._n_threads(),
        )
        self._raise_on_failure(status)
        log_likelihood = float(logliks.sum())
        if not math.isfinite(log_likelihood):
            raise ValueError(
                "the log-likelihood is not finite: the data are numerically impossible under "
                "the current parameters"
            )
        return log_likelihood, alpha

    def _stats_layout(self) -> tuple[int, int, int, int]:
        K, C = int(self.n_components), int(self.n_classes)
        columns = self._n_obs_columns()
        squared = self._n_squared_columns()
        return K, C, columns, squared

    def _workspace(self, observations: _Observations) -> tuple[FloatArray, FloatArray]:
        """Buffers of the forward-backward kernel: alphas (T, K) and scale factors (T,)."""
        alpha = np.empty((observations.n_samples, int(self.n_components)), dtype=np.float64)
        return alpha, np.empty(observations.n_samples, dtype=np.float64)

    def _expectation(
        self,
        observations: _Observations,
        workspace: tuple[FloatArray, FloatArray] | None = None,
    ) -> tuple[dict[str, FloatArray], float]:
        K, C, columns, squared = self._stats_layout()
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
        offset = 0

        def take(n: int) -> FloatArray:
            nonlocal offset
            part = flat[offset : offset + n]
            offset += n
            return part

        start = take(K)
        trans = take(C * K * K).reshape(C, K, K) * self._transmat3()
        post = take(K)
        obs = take(columns * K).reshape(columns, K).T
        obs_squared = take(squared * K).reshape(squared, K).T
        return {
            "start": start,
            "trans": trans,
            "post": post,
            "obs": obs,
            "obs**2": obs_squared,
        }, log_likelihood

    def _maximization(self, stats: dict[str, FloatArray]) -> None:
        if "s" in self.params:
            total = stats["start"].sum()
            if total > 0:
                self.startprob_ = stats["start"] / total
        if "t" in self.params:
            transmat = _normalize_rows(stats["trans"], self._transmat3())
            self.transmat_ = transmat[0] if self.n_classes == 1 else transmat
        self._maximize_emissions(stats)

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

    def _expected_width(self, fitting: bool) -> int | None:
        raise NotImplementedError

    def _convert(self, array: np.ndarray, fitting: bool) -> tuple[IntArray, FloatArray, int]:
        raise NotImplementedError

    def _initialize_emissions(self, observations: _Observations, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _check_emissions(self) -> None:
        raise NotImplementedError

    def _emission_model(self, observations: _Observations) -> Any:
        raise NotImplementedError

    def _n_obs_columns(self) -> int:
        raise NotImplementedError

    def _n_squared_columns(self) -> int:
        return 0

    def _maximize_emissions(self, stats: dict[str, FloatArray]) -> None:
        raise NotImplementedError

    def _sample_emissions(self, states: IntArray, rng: np.random.Generator) -> np.ndarray:
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

    Parameters letters: ``s`` start, ``t`` transitions, ``l`` lambdas.
    """

    _emission_kind = POISSON
    _all_params = "stl"
    _emission_letters = "l"

    @property
    def n_features(self) -> int:
        """Number of count columns, from ``lambdas_``."""
        return int(np.shape(self.lambdas_)[1])

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

    def _initialize_emissions(self, observations: _Observations, rng: np.random.Generator) -> None:
        if "l" not in self.init_params:
            return
        data = observations.as_float()
        K = int(self.n_components)
        centers = _kmeans_centers(data, K, rng)
        column_means = data.mean(axis=0) + 1e-3
        jitter = (0.05 + 0.1 * rng.random((K, data.shape[1]))) * column_means
        self.lambdas_ = np.maximum(centers, 0.0) + jitter

    def _check_emissions(self) -> None:
        lambdas = self._parameter("lambdas_", "l")
        K = int(self.n_components)
        if lambdas.ndim != 2 or lambdas.shape[0] != K:
            raise ValueError(f"lambdas_ must have shape ({K}, n_features); got {lambdas.shape}")
        if not np.all(np.isfinite(lambdas)) or np.any(lambdas < 0):
            raise ValueError("lambdas_ must hold finite non-negative rates")

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

    def _n_obs_columns(self) -> int:
        return int(np.shape(self.lambdas_)[1])

    def _maximize_emissions(self, stats: dict[str, FloatArray]) -> None:
        if "l" not in self.params:
            return
        post = stats["post"][:, None]
        occupied = post > 0
        self.lambdas_ = np.where(
            occupied, stats["obs"] / np.where(occupied, post, 1.0), self.lambdas_
        )

    def _sample_emissions(self, states: IntArray, rng: np.random.Generator) -> np.ndarray:
        return rng.poisson(np.asarray(self.lambdas_)[states]).astype(np.int64)


class CategoricalHMM(_BaseHMM):
    """HMM with one categorical symbol per row (X of shape (n_samples, 1));
    ``emissionprob_`` has shape (K, n_features).

    Parameter letters: ``s`` start, ``t`` transitions, ``e`` emission probabilities.
    """

    _emission_kind = CATEGORICAL
    _all_params = "ste"
    _emission_letters = "e"

    def __init__(
        self,
        n_components: int = 1,
        *,
        n_features: int | None = None,
        n_iter: int = 100,
        tol: float = 1e-4,
        random_state: RandomStateLike = None,
        params: str | None = None,
        init_params: str | None = None,
        n_classes: int = 1,
        n_jobs: int = 1,
    ) -> None:
        super().__init__(
            n_components,
            n_iter=n_iter,
            tol=tol,
            random_state=random_state,
            params=params,
            init_params=init_params,
            n_classes=n_classes,
            n_jobs=n_jobs,
        )
        self.n_features = n_features

    def _expected_width(self, fitting: bool) -> int | None:
        return 1

    def _n_symbols(self, fitting: bool) -> int | None:
        if not (fitting and "e" in self.init_params) and hasattr(self, "emissionprob_"):
            return int(np.shape(self.emissionprob_)[1])
        return self.n_features

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

    def _initialize_emissions(self, observations: _Observations, rng: np.random.Generator) -> None:
        if "e" not in self.init_params:
            return
        n_symbols = self.n_features or observations.max_count + 1
        weights = rng.random((int(self.n_components), n_symbols))
        self.emissionprob_ = weights / weights.sum(axis=1, keepdims=True)

    def _check_emissions(self) -> None:
        emissionprob = self._parameter("emissionprob_", "e")
        K = int(self.n_components)
        if emissionprob.ndim != 2 or emissionprob.shape[0] != K:
            raise ValueError(
                f"emissionprob_ must have shape ({K}, n_features); got {emissionprob.shape}"
            )
        if not np.all(np.isfinite(emissionprob)) or np.any(emissionprob < 0):
            raise ValueError("emissionprob_ must hold finite non-negative probabilities")
        if np.any(np.abs(emissionprob.sum(axis=1) - 1.0) > SUM_TOLERANCE):
            raise ValueError("every row of emissionprob_ must sum to 1")

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

    def _n_obs_columns(self) -> int:
        return int(np.shape(self.emissionprob_)[1])

    def _maximize_emissions(self, stats: dict[str, FloatArray]) -> None:
        if "e" in self.params:
            self.emissionprob_ = _normalize_rows(stats["obs"], self.emissionprob_)

    def _sample_emissions(self, states: IntArray, rng: np.random.Generator) -> np.ndarray:
        cumulative = np.cumsum(self.emissionprob_, axis=1)[states]
        draws = rng.random((states.shape[0], 1))
        symbols = (draws >= cumulative).sum(axis=1)
        return np.minimum(symbols, cumulative.shape[1] - 1).astype(np.int64)[:, None]


class GaussianHMM(_BaseHMM):
    """HMM with diagonal-covariance Gaussian emissions; ``means_`` and ``covars_`` are (K, D).

    Parameter letters: ``s`` start, ``t`` transitions, ``m`` means, ``c`` covariances.
    ``min_covar`` floors the variances (at initialisation and after each update, so a state
    that collapses onto one value keeps a usable density); ``covars_prior`` and
    ``covars_weight`` regularise the variance update as in hmmlearn.
    """

    _emission_kind = GAUSSIAN
    _all_params = "stmc"
    _emission_letters = "mc"

    @property
    def n_features(self) -> int:
        """Number of feature columns, from ``means_``."""
        return int(np.shape(self.means_)[1])

    def __init__(
        self,
        n_components: int = 1,
        *,
        min_covar: float = 1e-3,
        covars_prior: float = 1e-2,
        covars_weight: float = 1.0,
        n_iter: int = 100,
        tol: float = 1e-4,
        random_state: RandomStateLike = None,
        params: str | None = None,
        init_params: str | None = None,
        n_classes: int = 1,
        n_jobs: int = 1,
    ) -> None:
        super().__init__(
            n_components,
            n_iter=n_iter,
            tol=tol,
            random_state=random_state,
            params=params,
            init_params=init_params,
            n_classes=n_classes,
            n_jobs=n_jobs,
        )
        self.min_covar = min_covar
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight

    def _expected_width(self, fitting: bool) -> int | None:
        for letter, name in (("m", "means_"), ("c", "covars_")):
            kept = not (fitting and letter in self.init_params) and hasattr(self, name)
            if kept and np.ndim(getattr(self, name)) == 2:
                return int(np.shape(getattr(self, name))[1])
        return None

    def _convert(self, array: np.ndarray, fitting: bool) -> tuple[IntArray, FloatArray, int]:
        if np.issubdtype(array.dtype, np.complexfloating):
            raise ValueError("X must hold real numbers for Gaussian emissions; got complex")
        return _EMPTY_INT, np.ascontiguousarray(array, dtype=np.float64), 0

    def _initialize_emissions(self, observations: _Observations, rng: np.random.Generator) -> None:
        data = observations.values
        K = int(self.n_components)
        if "m" in self.init_params:
            self.means_ = _kmeans_centers(data, K, rng)
        if "c" in self.init_params:
            variance = data.var(axis=0) + self.min_covar
            self.covars_ = np.tile(variance, (K, 1))

    def _check_emissions(self) -> None:
        K = int(self.n_components)
        means = self._parameter("means_", "m")
        covars = self._parameter("covars_", "c")
        if means.ndim != 2 or means.shape[0] != K:
            raise ValueError(f"means_ must have shape ({K}, n_features); got {means.shape}")
        if covars.shape != means.shape:
            raise ValueError(
                f"covars_ must have the shape of means_ {means.shape} (diagonal covariances); "
                f"got {covars.shape}"
            )
        if not np.all(np.isfinite(means)):
            raise ValueError("means_ must be finite")
        if not np.all(np.isfinite(covars)) or np.any(covars <= 0):
            raise ValueError("covars_ must hold finite positive variances")

    def _emission_model(self, observations: _Observations) -> Any:
        means = np.asarray(self.means_, dtype=np.float64)
        covars = np.asarray(self.covars_, dtype=np.float64)
        n_features = means.shape[1]
        constant = -0.5 * (n_features * np.log(2.0 * np.pi) + np.log(covars).sum(axis=1))
        return _kernels.EmissionModel(
            GAUSSIAN,
            int(self.n_components),
            n_features,
            n_features,
            _EMPTY_INT,
            observations.values,
            np.zeros((0, 0, 0)),
            np.zeros((0, 0, 0)),
            means.T,
            (1.0 / covars).T,
            constant,
        )

    def _n_obs_columns(self) -> int:
        return int(np.shape(self.means_)[1])

    def _n_squared_columns(self) -> int:
        return int(np.shape(self.means_)[1])

    def _maximize_emissions(self, stats: dict[str, FloatArray]) -> None:
        post = stats["post"][:, None]
        occupied = post > 0
        if "m" in self.params:
            self.means_ = np.where(
                occupied, stats["obs"] / np.where(occupied, post, 1.0), self.means_
            )
        if "c" in self.params:
            means = self.means_
            spread = stats["obs**2"] - 2.0 * means * stats["obs"] + means**2 * post
            denominator = np.maximum(max(self.covars_weight - 1.0, 0.0) + post, 1e-5)
            covars = (self.covars_prior + spread) / denominator
            self.covars_ = np.maximum(covars, self.min_covar)

    def _sample_emissions(self, states: IntArray, rng: np.random.Generator) -> np.ndarray:
        means = np.asarray(self.means_)[states]
        deviation = np.sqrt(np.asarray(self.covars_)[states])
        return means + deviation * rng.standard_normal(means.shape)
