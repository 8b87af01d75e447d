"""MAP EM: hmmlearn's priors, and the class-shrinkage and fixed-rate options coding time needs."""

from __future__ import annotations

import numpy as np
import pytest

from agent.activity.coding_time.model import HMMParameters, ModelPrior, poisson_hmm
from hmm_core import CategoricalHMM, GaussianHMM, PoissonHMM

HOURS = 168
# One M-step on random_case(0) as coding time computed it before hmm_core took the step over.
PINNED_STARTPROB = np.array([0.4153753529243244, 0.5111452844228667, 0.07347936265280892])
PINNED_TRANSMAT_0 = np.array(
    [
        [0.044476413333538044, 0.45284303284570804, 0.5026805538207539],
        [0.3235679718464247, 0.38315123922679967, 0.2932807889267757],
        [0.5136909799667657, 0.4515024948985278, 0.034806525134706605],
    ]
)
PINNED_LAMBDAS = np.array(
    [
        [0.3865119643194872, 0.7630114076009925],
        [0.32106317289126474, 0.37341612864715223],
        [2.407610380359831, 1.1515982961108804],
    ]
)


def random_case(seed: int) -> tuple[dict[str, np.ndarray], ModelPrior, HMMParameters]:
    """E-step statistics, a coding-time prior and current parameters, all random."""
    rng = np.random.default_rng(seed)
    K, C, D = 3, HOURS, 2
    statistics = {
        "start": rng.uniform(0.0, 3.0, size=K),
        "trans": rng.uniform(0.0, 50.0, size=(C, K, K)),
        "post": rng.uniform(1.0, 500.0, size=K),
        "obs": rng.uniform(0.0, 300.0, size=(K, D)),
    }
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
    return statistics, prior, current


def closed_form_map_step(
    statistics: dict[str, np.ndarray], prior: ModelPrior, current: HMMParameters
) -> HMMParameters:
    """The coding-time MAP M-step written out: pseudo-counts added, class rows shrunk towards
    the overall matrix, gamma-posterior modes of the rates, fixed rates kept, rates floored."""
    start = statistics["start"] + prior.start_counts
    overall = statistics["trans"].sum(axis=0) + prior.transition_counts
    overall /= overall.sum(axis=1, keepdims=True)
    hourly = statistics["trans"] + prior.hour_strength * overall[None, :, :]
    hourly /= hourly.sum(axis=2, keepdims=True)
    rates = (prior.rate_shape - 1.0 + statistics["obs"]) / (
        prior.rate_rate + statistics["post"][:, None]
    )
    rates[prior.fixed_rates] = current.lambdas[prior.fixed_rates]
    rates = np.maximum(rates, 1e-9)
    return HMMParameters(startprob=start / start.sum(), transmat=hourly, lambdas=rates)


@pytest.mark.parametrize("seed", range(5))
def test_coding_time_poisson_m_step_is_the_closed_form_map_step(seed: int) -> None:
    statistics, prior, current = random_case(seed)
    expected = closed_form_map_step(statistics, prior, current)

    model = poisson_hmm(current, n_jobs=1, prior=prior)
    model._do_mstep(statistics)
    np.testing.assert_allclose(model.startprob_, expected.startprob, rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.transmat_, expected.transmat, rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.lambdas_, expected.lambdas, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(model.lambdas_[2], current.lambdas[2])


@pytest.mark.parametrize("seed", range(3))
def test_public_maximize_is_the_same_m_step_as_the_hook(seed: int) -> None:
    statistics, prior, current = random_case(seed)
    through_hook = poisson_hmm(current, n_jobs=1, prior=prior)
    through_hook._do_mstep(statistics)
    public = poisson_hmm(current, n_jobs=1, prior=prior)
    assert public.maximize(statistics) is public
    np.testing.assert_array_equal(public.startprob_, through_hook.startprob_)
    np.testing.assert_array_equal(public.transmat_, through_hook.transmat_)
    np.testing.assert_array_equal(public.lambdas_, through_hook.lambdas_)
    assert not np.array_equal(public.lambdas_, current.lambdas)


def test_coding_time_poisson_m_step_matches_figures_pinned_before_it_moved_to_hmm_core() -> None:
    statistics, prior, current = random_case(0)
    model = poisson_hmm(current, n_jobs=1, prior=prior)
    model._do_mstep(statistics)
    np.testing.assert_allclose(model.startprob_, PINNED_STARTPROB, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.transmat_[0], PINNED_TRANSMAT_0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.lambdas_, PINNED_LAMBDAS, rtol=0, atol=1e-12)


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
