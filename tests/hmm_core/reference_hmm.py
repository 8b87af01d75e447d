"""Plain-NumPy reference HMM (log-space forward, backward, xi and Viterbi) for the tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm, poisson


@dataclass
class ReferenceResult:
    """Everything the reference computes for one data set."""

    log_likelihood: float
    posteriors: np.ndarray  # (T, K)
    start_counts: np.ndarray  # (K,) sum of posteriors at the first row of each sequence
    transition_counts: np.ndarray  # (C, K, K) sum of xi over the steps of each class
    viterbi_log_prob: float
    viterbi_path: np.ndarray  # (T,)


def poisson_log_emissions(X: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """log P(x_t | state k) for independent Poisson features."""
    return np.stack([poisson.logpmf(X, lam).sum(axis=1) for lam in lambdas], axis=1)


def categorical_log_emissions(X: np.ndarray, emissionprob: np.ndarray) -> np.ndarray:
    """log P(x_t | state k) for one categorical symbol per row."""
    with np.errstate(divide="ignore"):
        return np.log(emissionprob[:, X[:, 0]].T)


def gaussian_log_emissions(X: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """log P(x_t | state k) for diagonal Gaussians."""
    return np.stack(
        [
            norm.logpdf(X, mu, np.sqrt(var)).sum(axis=1)
            for mu, var in zip(means, covars, strict=True)
        ],
        axis=1,
    )


def reference_hmm(
    log_emissions: np.ndarray,
    startprob: np.ndarray,
    transmat: np.ndarray,
    lengths: list[int] | None = None,
    classes: np.ndarray | None = None,
) -> ReferenceResult:
    """Exact inference in log space, one sequence at a time, with a transition matrix per class.

    ``transmat`` has shape (C, K, K); ``classes[t]`` picks the matrix of the step into row t.
    """
    T, K = log_emissions.shape
    C = transmat.shape[0]
    lengths = [T] if lengths is None else list(lengths)
    classes = np.zeros(T, dtype=int) if classes is None else np.asarray(classes)
    with np.errstate(divide="ignore"):
        log_start = np.log(startprob)
        log_trans = np.log(transmat)
    posteriors = np.zeros((T, K))
    start_counts = np.zeros(K)
    transition_counts = np.zeros((C, K, K))
    total = 0.0
    viterbi_total = 0.0
    path = np.zeros(T, dtype=int)
    offset = 0
    for length in lengths:
        rows = slice(offset, offset + length)
        b = log_emissions[rows]
        cls = classes[rows]
        log_alpha = np.zeros((length, K))
        log_alpha[0] = log_start + b[0]
        for t in range(1, length):
            log_alpha[t] = logsumexp(log_alpha[t - 1][:, None] + log_trans[cls[t]], axis=0) + b[t]
        log_beta = np.zeros((length, K))
        for t in range(length - 2, -1, -1):
            log_beta[t] = logsumexp(log_trans[cls[t + 1]] + b[t + 1] + log_beta[t + 1], axis=1)
        log_p = logsumexp(log_alpha[-1])
        total += log_p
        posteriors[rows] = np.exp(log_alpha + log_beta - log_p)
        start_counts += posteriors[offset]
        for t in range(length - 1):
            log_xi = (
                log_alpha[t][:, None]
                + log_trans[cls[t + 1]]
                + b[t + 1][None, :]
                + log_beta[t + 1][None, :]
                - log_p
            )
            transition_counts[cls[t + 1]] += np.exp(log_xi)
        delta = log_start + b[0]
        pointers = np.zeros((length, K), dtype=int)
        for t in range(1, length):
            scores = delta[:, None] + log_trans[cls[t]]
            pointers[t] = scores.argmax(axis=0)
            delta = scores.max(axis=0) + b[t]
        states = np.zeros(length, dtype=int)
        states[-1] = int(delta.argmax())
        viterbi_total += float(delta.max())
        for t in range(length - 1, 0, -1):
            states[t - 1] = pointers[t, states[t]]
        path[rows] = states
        offset += length
    return ReferenceResult(
        log_likelihood=total,
        posteriors=posteriors,
        start_counts=start_counts,
        transition_counts=transition_counts,
        viterbi_log_prob=viterbi_total,
        viterbi_path=path,
    )


def reference_m_step_transmat(result: ReferenceResult, previous: np.ndarray) -> np.ndarray:
    """Baum-Welch update of (C, K, K) transitions; rows never visited keep the previous row."""
    totals = result.transition_counts.sum(axis=2, keepdims=True)
    safe = np.where(totals > 0, totals, 1.0)
    return np.where(totals > 0, result.transition_counts / safe, previous)
