"""hmm_core follows hmmlearn 0.3.3 step for step from the same initial parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hmmlearn import hmm as hmmlearn_hmm

from hmm_core import CategoricalHMM, GaussianHMM, PoissonHMM

K = 3
LENGTHS = [180, 1, 319]


def initial_chain(rng: np.random.Generator) -> dict[str, np.ndarray]:
    transmat = rng.dirichlet(np.ones(K) * 2.0, size=K) + np.eye(K)
    return {
        "startprob_": rng.dirichlet(np.ones(K)),
        "transmat_": transmat / transmat.sum(axis=1, keepdims=True),
    }


def poisson_pair(rng: np.random.Generator, n_iter: int) -> tuple[Any, Any, np.ndarray]:
    truth = PoissonHMM(K, random_state=1)
    truth.startprob_ = np.full(K, 1.0 / K)
    truth.transmat_ = np.full((K, K), 0.1) + np.eye(K) * 0.7
    truth.lambdas_ = np.array([[0.5, 4.0], [3.0, 1.0], [8.0, 6.0]])
    X, _ = truth.sample(sum(LENGTHS), random_state=2)
    params = initial_chain(rng) | {"lambdas_": rng.uniform(1.0, 6.0, size=(K, 2))}
    ours = PoissonHMM(K, n_iter=n_iter, tol=-np.inf, init_params="")
    theirs = hmmlearn_hmm.PoissonHMM(
        K, n_iter=n_iter, tol=-np.inf, init_params="", implementation="scaling"
    )
    for model in (ours, theirs):
        for name, value in params.items():
            setattr(model, name, value.copy())
    return ours, theirs, X


def categorical_pair(rng: np.random.Generator, n_iter: int) -> tuple[Any, Any, np.ndarray]:
    X = rng.integers(0, 4, size=(sum(LENGTHS), 1))
    X[::7] = 3
    params = initial_chain(rng) | {"emissionprob_": rng.dirichlet(np.ones(4), size=K)}
    ours = CategoricalHMM(K, n_iter=n_iter, tol=-np.inf, init_params="")
    theirs = hmmlearn_hmm.CategoricalHMM(
        K, n_features=4, n_iter=n_iter, tol=-np.inf, init_params="", implementation="scaling"
    )
    for model in (ours, theirs):
        for name, value in params.items():
            setattr(model, name, value.copy())
    return ours, theirs, X


def gaussian_pair(rng: np.random.Generator, n_iter: int) -> tuple[Any, Any, np.ndarray]:
    centres = np.array([[-2.0, 0.0], [0.0, 3.0], [2.5, -1.0]])
    X = centres[rng.integers(0, K, size=sum(LENGTHS))] + rng.normal(size=(sum(LENGTHS), 2))
    params = initial_chain(rng) | {
        "means_": rng.normal(size=(K, 2)),
        "covars_": rng.uniform(0.5, 2.0, size=(K, 2)),
    }
    ours = GaussianHMM(K, n_iter=n_iter, tol=-np.inf, init_params="")
    theirs = hmmlearn_hmm.GaussianHMM(
        K,
        covariance_type="diag",
        n_iter=n_iter,
        tol=-np.inf,
        init_params="",
        implementation="scaling",
    )
    for model in (ours, theirs):
        for name, value in params.items():
            setattr(model, name, value.copy())
    return ours, theirs, X


def emission_parameters(model: Any) -> list[np.ndarray]:
    if hasattr(model, "lambdas_"):
        return [np.asarray(model.lambdas_)]
    if hasattr(model, "emissionprob_"):
        return [np.asarray(model.emissionprob_)]
    covars = np.asarray(model.covars_)
    diagonal = np.diagonal(covars, axis1=1, axis2=2) if covars.ndim == 3 else covars
    return [np.asarray(model.means_), diagonal]


@pytest.mark.parametrize("make_pair", [poisson_pair, categorical_pair, gaussian_pair])
@pytest.mark.parametrize("n_iter", [1, 10])
def test_fit_agrees_with_hmmlearn(make_pair: Any, n_iter: int) -> None:
    ours, theirs, X = make_pair(np.random.default_rng(n_iter), n_iter)
    ours.fit(X, LENGTHS)
    theirs.fit(X, LENGTHS)

    assert ours.monitor_.iter == theirs.monitor_.iter == n_iter
    assert len(ours.monitor_.history) == n_iter
    np.testing.assert_allclose(ours.monitor_.history, list(theirs.monitor_.history), rtol=1e-8)
    np.testing.assert_allclose(ours.startprob_, theirs.startprob_, atol=1e-6)
    np.testing.assert_allclose(ours.transmat_, theirs.transmat_, atol=1e-6)
    for mine, reference in zip(emission_parameters(ours), emission_parameters(theirs), strict=True):
        np.testing.assert_allclose(mine, reference, atol=1e-6)

    assert ours.score(X, LENGTHS) == pytest.approx(theirs.score(X, LENGTHS), rel=1e-8)
    np.testing.assert_allclose(
        ours.predict_proba(X, LENGTHS), theirs.predict_proba(X, LENGTHS), atol=1e-8
    )
    our_log_prob, our_path = ours.decode(X, LENGTHS)
    their_log_prob, their_path = theirs.decode(X, LENGTHS)
    assert our_log_prob == pytest.approx(their_log_prob, rel=1e-8)
    np.testing.assert_array_equal(our_path, their_path)
