"""MAP EM: hmmlearn's priors, and the class-shrinkage and fixed-rate options coding time needs."""

from __future__ import annotations

import numpy as np
import pytest

from agent.activity.coding_time.model import HMMParameters, ModelPrior, Statistics, maximize
from hmm_core import CategoricalHMM, GaussianHMM, PoissonHMM


def random_statistics(rng: np.random.Generator, K: int, C: int, D: int) -> Statistics:
    return Statistics(
        log_likelihood=0.0,
        start=rng.uniform(0.0, 3.0, size=K),
        transitions=rng.uniform(0.0, 50.0, size=(C, K, K)),
        occupancy=rng.uniform(1.0, 500.0, size=K),
        emitted=rng.uniform(0.0, 300.0, size=(K, D)),
    )


@pytest.mark.parametrize("seed", range(5))
def test_one_poisson_m_step_matches_coding_time_maximize(seed: int) -> None:
    rng = np.random.default_rng(seed)
    K, C, D = 3, 7, 2
    statistics = random_statistics(rng, K, C, D)
    prior = ModelPrior(
        transition_counts=rng.uniform(0.5, 40.0, size=(K, K)),
        hour_strength=float(rng.uniform(1.0, 30.0)),
        rate_shape=1.0 + rng.uniform(0.0, 20.0, size=(K, D)),
        rate_rate=rng.uniform(10.0, 200.0, size=(K, D)),
        fixed_rates=np.array([False, False, True]),
        start_counts=rng.uniform(0.1, 5.0, size=K),
    )
    current = HMMParameters(
        startprob=rng.dirichlet(np.ones(K)),
        transmat=rng.dirichlet(np.ones(K), size=(C, K)),
        lambdas=rng.uniform(1e-4, 3.0, size=(K, D)),
    )
    expected = maximize(statistics, prior, current)

    model = PoissonHMM(
        K,
        startprob_prior=1.0 + prior.start_counts,
        transmat_prior=1.0 + prior.transition_counts,
        lambdas_prior=prior.rate_shape - 1.0,
        lambdas_weight=prior.rate_rate,
        n_classes=C,
        class_transmat_strength=prior.hour_strength,
        fixed_lambdas=prior.fixed_rates,
        min_lambda=1e-9,
    )
    model.startprob_ = current.startprob.copy()
    model.transmat_ = current.transmat.copy()
    model.lambdas_ = current.lambdas.copy()
    model._do_mstep(
        {
            "start": statistics.start,
            "trans": statistics.transitions,
            "post": statistics.occupancy,
            "obs": statistics.emitted,
        }
    )
    np.testing.assert_allclose(model.startprob_, expected.startprob, rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.transmat_, expected.transmat, rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.lambdas_, expected.lambdas, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(model.lambdas_[2], current.lambdas[2])


def test_fixed_lambdas_stay_put_through_fit() -> None:
    truth = PoissonHMM(2)
    truth.startprob_ = np.array([0.5, 0.5])
    truth.transmat_ = np.array([[0.9, 0.1], [0.1, 0.9]])
    truth.lambdas_ = np.array([[0.5, 1.0], [6.0, 4.0]])
    X, _ = truth.sample(3000, random_state=0)
    model = PoissonHMM(
        2, init_params="st", n_iter=20, fixed_lambdas=np.array([[True, False], [False, False]])
    )
    model.lambdas_ = np.array([[0.25, 2.0], [3.0, 3.0]])
    model.fit(X)
    assert model.lambdas_[0, 0] == 0.25
    assert model.lambdas_[0, 1] != 2.0 and model.lambdas_[1, 0] != 3.0


def test_class_transmat_strength_shrinks_class_rows_towards_the_overall_matrix() -> None:
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 4, size=2000)
    truth = PoissonHMM(2, n_classes=4)
    truth.startprob_ = np.array([0.5, 0.5])
    truth.transmat_ = rng.dirichlet([1.0, 1.0], size=(4, 2))
    truth.lambdas_ = np.array([[0.5], [6.0]])
    X, _ = truth.sample(2000, random_state=1, classes=classes)

    def spread(strength: float | None) -> float:
        model = PoissonHMM(
            2, n_classes=4, n_iter=5, random_state=0, class_transmat_strength=strength
        )
        model.fit(X, classes=classes)
        return float(np.abs(model.transmat_ - model.transmat_.mean(axis=0)).max())

    free, shrunk, frozen = spread(None), spread(200.0), spread(1e9)
    assert frozen < 1e-5 < shrunk < free


def test_dirichlet_priors_act_as_pseudo_counts() -> None:
    stats = {
        "start": np.array([3.0, 1.0]),
        "trans": np.array([[[8.0, 2.0], [1.0, 9.0]]]),
        "post": np.array([10.0, 10.0]),
        "obs": np.array([[6.0, 3.0, 1.0], [1.0, 1.0, 8.0]]),
    }
    model = CategoricalHMM(
        2, startprob_prior=np.array([2.0, 5.0]), transmat_prior=3.0, emissionprob_prior=2.0
    )
    model.startprob_ = np.array([0.5, 0.5])
    model.transmat_ = np.full((2, 2), 0.5)
    model.emissionprob_ = np.full((2, 3), 1 / 3)
    model._do_mstep(stats)
    np.testing.assert_allclose(model.startprob_, [4 / 9, 5 / 9])
    np.testing.assert_allclose(model.transmat_, [[10 / 14, 4 / 14], [3 / 14, 11 / 14]])
    np.testing.assert_allclose(model.emissionprob_[0], [7 / 13, 4 / 13, 2 / 13])


def test_gamma_prior_on_lambdas_is_per_state() -> None:
    model = PoissonHMM(2, lambdas_prior=np.array([[4.0], [0.0]]), lambdas_weight=2.0)
    model.startprob_ = np.array([0.5, 0.5])
    model.transmat_ = np.full((2, 2), 0.5)
    model.lambdas_ = np.array([[1.0], [1.0]])
    model._do_mstep(
        {
            "start": np.ones(2),
            "trans": np.ones((1, 2, 2)),
            "post": np.array([2.0, 8.0]),
            "obs": np.array([[2.0], [16.0]]),
        }
    )
    np.testing.assert_allclose(model.lambdas_, [[6.0 / 4.0], [16.0 / 10.0]])


@pytest.mark.parametrize("covariance_type", ["spherical", "diag", "full", "tied"])
def test_normal_prior_pulls_means_towards_means_prior(covariance_type: str) -> None:
    rng = np.random.default_rng(4)
    X = np.concatenate([rng.normal(-3.0, 1.0, size=(40, 2)), rng.normal(3.0, 1.0, size=(40, 2))])
    free = GaussianHMM(2, covariance_type, n_iter=5, random_state=0).fit(X)
    pulled = GaussianHMM(
        2, covariance_type, means_prior=0.0, means_weight=1000.0, n_iter=5, random_state=0
    ).fit(X)
    assert np.abs(pulled.means_).max() < 0.5 < np.abs(free.means_).max()


@pytest.mark.parametrize("covariance_type", ["spherical", "diag", "full", "tied"])
def test_covariance_prior_with_weight_dominates_small_data(covariance_type: str) -> None:
    D = 2
    X = np.random.default_rng(5).normal(size=(30, D))
    prior = {
        "spherical": np.full(2, 50.0),
        "diag": np.full((2, D), 50.0),
        "full": np.tile(50.0 * np.eye(D), (2, 1, 1)),
        "tied": 50.0 * np.eye(D),
    }
    model = GaussianHMM(
        2,
        covariance_type,
        covars_prior=prior[covariance_type] * 1e4,
        covars_weight=1e4,
        n_iter=3,
        random_state=0,
    ).fit(X)
    diagonal = np.diagonal(model.covars_, axis1=1, axis2=2)
    assert np.all(diagonal > 10.0), diagonal
