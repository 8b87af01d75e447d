"""EM recovers the parameters that generated 100,000 sampled steps."""

from __future__ import annotations

import numpy as np

from hmm_core import CategoricalHMM, GaussianHMM, PoissonHMM

N_STEPS = 100_000


def order_by(values: np.ndarray) -> np.ndarray:
    return np.argsort(values)


def test_poisson_recovery() -> None:
    truth = PoissonHMM(2)
    truth.startprob_ = np.array([0.5, 0.5])
    truth.transmat_ = np.array([[0.95, 0.05], [0.10, 0.90]])
    truth.lambdas_ = np.array([[0.3, 2.0], [4.0, 0.5]])
    X, _ = truth.sample(N_STEPS, random_state=7)

    model = PoissonHMM(2, n_iter=300, tol=1e-8, random_state=3).fit(X)

    order = order_by(model.lambdas_[:, 0])
    np.testing.assert_allclose(model.lambdas_[order], truth.lambdas_, rtol=0.03, atol=0.02)
    np.testing.assert_allclose(model.transmat_[np.ix_(order, order)], truth.transmat_, atol=0.01)
    assert model.monitor_.converged


def test_class_dependent_transitions_recovery() -> None:
    """Three classes with very different dynamics, as hour-of-week classes would have."""
    truth = PoissonHMM(2, n_classes=3)
    truth.startprob_ = np.array([0.7, 0.3])
    truth.transmat_ = np.array(
        [
            [[0.98, 0.02], [0.30, 0.70]],  # class 0: mostly idle
            [[0.60, 0.40], [0.05, 0.95]],  # class 1: mostly active
            [[0.50, 0.50], [0.50, 0.50]],  # class 2: no memory
        ]
    )
    truth.lambdas_ = np.array([[0.2, 0.1], [5.0, 2.0]])
    classes = (np.arange(N_STEPS) // 12) % 3
    X, states = truth.sample(N_STEPS, random_state=11, classes=classes)
    # The sampled path itself follows the class matrices.
    steps = states[:-1] * 2 + states[1:]
    for c in range(3):
        counts = np.bincount(steps[classes[1:] == c], minlength=4).reshape(2, 2)
        empirical = counts / counts.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(empirical, truth.transmat_[c], atol=0.02)

    model = PoissonHMM(2, n_classes=3, n_iter=300, tol=1e-8, random_state=5)
    model.fit(X, classes=classes)

    assert model.transmat_.shape == (3, 2, 2)
    order = order_by(model.lambdas_[:, 0])
    np.testing.assert_allclose(model.lambdas_[order], truth.lambdas_, rtol=0.05, atol=0.02)
    for c in range(3):
        np.testing.assert_allclose(
            model.transmat_[c][np.ix_(order, order)], truth.transmat_[c], atol=0.03
        )


def test_categorical_recovery() -> None:
    truth = CategoricalHMM(2)
    truth.startprob_ = np.array([0.6, 0.4])
    truth.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
    truth.emissionprob_ = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    X, _ = truth.sample(N_STEPS, random_state=2)

    # Random emission probabilities start EM (as in hmmlearn); from random_state=0 both
    # libraries stop in the same flat local optimum, so the test starts from another draw.
    model = CategoricalHMM(2, n_iter=300, tol=1e-8, random_state=1).fit(X)

    order = order_by(-model.emissionprob_[:, 0])
    np.testing.assert_allclose(model.emissionprob_[order], truth.emissionprob_, atol=0.02)
    np.testing.assert_allclose(model.transmat_[np.ix_(order, order)], truth.transmat_, atol=0.02)


def test_gaussian_recovery() -> None:
    truth = GaussianHMM(2)
    truth.startprob_ = np.array([0.5, 0.5])
    truth.transmat_ = np.array([[0.9, 0.1], [0.3, 0.7]])
    truth.means_ = np.array([[-1.0, 2.0], [3.0, 0.0]])
    truth.covars_ = np.array([[0.5, 1.0], [2.0, 0.3]])
    X, _ = truth.sample(N_STEPS, random_state=4)

    model = GaussianHMM(2, n_iter=300, tol=1e-8, random_state=1).fit(X)

    order = order_by(model.means_[:, 0])
    np.testing.assert_allclose(model.means_[order], truth.means_, atol=0.03)
    np.testing.assert_allclose(model.covars_[order], truth.covars_, rtol=0.03)
    np.testing.assert_allclose(model.transmat_[np.ix_(order, order)], truth.transmat_, atol=0.01)
