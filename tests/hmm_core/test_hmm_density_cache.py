"""The Gaussian density cache: its in-kernel exp and the split forward pass that reads it."""

from __future__ import annotations

import numpy as np
import pytest

from hmm_core import GaussianHMM, _kernels
from hmm_core.hmm import SPLIT_MIN_ROWS

T = SPLIT_MIN_ROWS + 5_001


@pytest.mark.parametrize("covariance_type", ["spherical", "diag", "full", "tied"])
@pytest.mark.parametrize("n_states", [3, 4, 5])
def test_cached_probabilities_are_the_exp_of_the_log_densities(
    covariance_type: str, n_states: int
) -> None:
    rng = np.random.default_rng(n_states)
    model = GaussianHMM(n_states, covariance_type, init_params="", random_state=0)
    model.startprob_ = np.full(n_states, 1.0 / n_states)
    model.transmat_ = np.full((n_states, n_states), 1.0 / n_states)
    model.means_ = rng.normal(scale=3.0, size=(n_states, 3))
    model.covars_ = {
        "spherical": np.linspace(0.01, 2.0, n_states),
        "diag": rng.uniform(0.01, 2.0, size=(n_states, 3)),
        "full": np.stack([np.eye(3) * s for s in np.linspace(0.01, 2.0, n_states)]),
        "tied": np.eye(3) * 0.5,
    }[covariance_type]
    # Rows near the means, far from all of them (relative probabilities below 1e-280) and
    # in between, so every branch of the exp is taken.
    X = np.concatenate(
        [rng.normal(scale=3.0, size=(3000, 3)), rng.normal(scale=60.0, size=(1000, 3))]
    )
    observations = model._prepare(X, None, None, fitting=False)
    emissions = model._emission_model(observations)
    logs = np.empty((len(X), n_states))
    _kernels.log_emission_matrix(emissions, logs)
    peak = logs.max(axis=1)
    relative = logs - peak[:, None]
    expected = np.where(relative > np.log(1e-280), np.exp(relative), 0.0)

    cached = np.empty_like(logs)
    log_factors = np.empty(len(X))
    _kernels.cache_emissions(emissions, cached, log_factors, 2)

    assert np.array_equal(log_factors, peak)
    assert np.array_equal(cached == 0.0, expected == 0.0)
    assert (expected == 0.0).any() and (expected > 0.0).all(axis=1).any()
    kept = expected > 0.0
    assert np.max(np.abs(cached[kept] / expected[kept] - 1.0)) <= 2.3e-16


def jump_model(n_jobs: int) -> GaussianHMM:
    """Two states; the second is reachable only through a transition of probability 1e-250."""
    model = GaussianHMM(2, "diag", init_params="", n_jobs=n_jobs)
    model.startprob_ = np.array([1.0, 0.0])
    model.transmat_ = np.array([[1.0 - 1e-250, 1e-250], [0.0, 1.0]])
    model.means_ = np.array([[0.0], [100.0]])
    model.covars_ = np.array([[1.0], [1.0]])
    return model


@pytest.mark.parametrize("jump", [1, 7_000, T // 2 + 500, T - 3])
def test_a_nearly_impossible_step_in_a_split_pass_matches_one_thread(jump: int) -> None:
    # At the jump the scale factor is about 1e-250: the split forward pass, which carries an
    # unnormalised vector between rows, must redo that row from the normalised alpha.
    rng = np.random.default_rng(jump)
    X = rng.normal(size=(T, 1))
    X[jump:] += 100.0
    one_log_prob, one_posteriors = jump_model(1).score_samples(X)
    two_log_prob, two_posteriors = jump_model(2).score_samples(X)
    assert two_log_prob == pytest.approx(one_log_prob, rel=1e-12)
    np.testing.assert_allclose(two_posteriors, one_posteriors, rtol=1e-9, atol=1e-300)
    assert np.array_equal(two_posteriors.argmax(axis=1), (np.arange(T) >= jump).astype(int))
