"""hmm_core agrees with the plain-NumPy reference on random small problems."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hmm_core import CategoricalHMM, GaussianHMM, PoissonHMM
from tests.hmm_core.reference_hmm import (
    categorical_log_emissions,
    gaussian_log_emissions,
    poisson_log_emissions,
    reference_hmm,
    reference_m_step_transmat,
)

CASES = [
    # (K, n_classes, lengths)
    (2, 1, None),
    (3, 1, [7, 1, 12, 20]),
    (4, 3, None),
    (2, 4, [15, 2, 23]),
    (5, 2, [10, 30]),
    (8, 1, [25, 15]),
    (9, 3, [40]),
]


def random_chain(rng: np.random.Generator, K: int, C: int) -> tuple[np.ndarray, np.ndarray]:
    startprob = rng.dirichlet(np.ones(K))
    transmat = rng.dirichlet(np.ones(K), size=(C, K))
    return startprob, transmat


def set_chain(model: Any, startprob: np.ndarray, transmat: np.ndarray) -> None:
    model.startprob_ = startprob
    model.transmat_ = transmat[0] if transmat.shape[0] == 1 else transmat


def make_problem(kind: str, K: int, C: int, seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """A model with random parameters, data, and its log emissions for the reference."""
    rng = np.random.default_rng(seed)
    startprob, transmat = random_chain(rng, K, C)
    T = 40
    if kind == "poisson":
        model: Any = PoissonHMM(K, n_classes=C, init_params="", n_iter=1)
        model.lambdas_ = rng.uniform(0.3, 6.0, size=(K, 2))
        X: np.ndarray = rng.poisson(3.0, size=(T, 2))
        log_emissions = poisson_log_emissions(X, model.lambdas_)
    elif kind == "categorical":
        model = CategoricalHMM(K, n_classes=C, init_params="", n_iter=1)
        model.emissionprob_ = rng.dirichlet(np.ones(5), size=K)
        X = rng.integers(0, 5, size=(T, 1))
        log_emissions = categorical_log_emissions(X, model.emissionprob_)
    else:
        model = GaussianHMM(K, n_classes=C, init_params="", n_iter=1)
        model.means_ = rng.normal(0.0, 2.0, size=(K, 2))
        model.covars_ = rng.uniform(0.5, 3.0, size=(K, 2))
        X = rng.normal(0.0, 2.0, size=(T, 2))
        log_emissions = gaussian_log_emissions(X, model.means_, model._covars_)
    set_chain(model, startprob, transmat)
    return model, X, log_emissions


def lengths_for(lengths: list[int] | None, T: int) -> list[int] | None:
    if lengths is None:
        return None
    scaled = [max(1, round(n * T / sum(lengths))) for n in lengths]
    scaled[-1] = T - sum(scaled[:-1])
    return scaled


@pytest.mark.parametrize("kind", ["poisson", "categorical", "gaussian"])
@pytest.mark.parametrize(("K", "C", "lengths"), CASES)
def test_inference_matches_reference(kind: str, K: int, C: int, lengths: list[int] | None) -> None:
    model, X, log_emissions = make_problem(kind, K, C, seed=K * 100 + C)
    lengths = lengths_for(lengths, X.shape[0])
    classes: np.ndarray | None = None
    if C > 1:
        classes = np.random.default_rng(K).integers(0, C, size=(X.shape[0],))
    transmat = np.asarray(model.transmat_).reshape(C, K, K)
    ref = reference_hmm(log_emissions, model.startprob_, transmat, lengths, classes)

    assert model.score(X, lengths, classes) == pytest.approx(ref.log_likelihood, rel=1e-10)
    log_likelihood, posteriors = model.score_samples(X, lengths, classes)
    assert log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-10)
    np.testing.assert_allclose(posteriors, ref.posteriors, atol=1e-10)
    np.testing.assert_allclose(model.predict_proba(X, lengths, classes), ref.posteriors, atol=1e-10)

    viterbi_log_prob, path = model.decode(X, lengths, classes=classes)
    assert viterbi_log_prob == pytest.approx(ref.viterbi_log_prob, rel=1e-10)
    np.testing.assert_array_equal(path, ref.viterbi_path)
    np.testing.assert_array_equal(model.predict(X, lengths, classes), ref.viterbi_path)

    map_log_prob, map_states = model.decode(X, lengths, algorithm="map", classes=classes)
    np.testing.assert_array_equal(map_states, ref.posteriors.argmax(axis=1))
    assert map_log_prob == pytest.approx(np.log(ref.posteriors.max(axis=1)).sum(), rel=1e-9)


@pytest.mark.parametrize("kind", ["poisson", "categorical", "gaussian"])
@pytest.mark.parametrize(("K", "C", "lengths"), CASES)
def test_one_em_step_matches_reference(
    kind: str, K: int, C: int, lengths: list[int] | None
) -> None:
    model, X, log_emissions = make_problem(kind, K, C, seed=K * 10 + C)
    lengths = lengths_for(lengths, X.shape[0])
    classes: np.ndarray | None = None
    if C > 1:
        classes = np.random.default_rng(C).integers(0, C, size=(X.shape[0],))
    previous = np.asarray(model.transmat_).reshape(C, K, K).copy()
    ref = reference_hmm(log_emissions, model.startprob_, previous, lengths, classes)

    model.fit(X, lengths, classes)

    assert model.monitor_.history == [pytest.approx(ref.log_likelihood, rel=1e-10)]
    np.testing.assert_allclose(
        model.startprob_, ref.start_counts / ref.start_counts.sum(), atol=1e-10
    )
    expected_transmat = reference_m_step_transmat(ref, previous)
    np.testing.assert_allclose(
        np.asarray(model.transmat_).reshape(C, K, K), expected_transmat, atol=1e-10
    )
    weights = ref.posteriors
    occupancy = weights.sum(axis=0)[:, None]
    if kind == "poisson":
        np.testing.assert_allclose(model.lambdas_, weights.T @ X / occupancy, rtol=1e-10)
    elif kind == "categorical":
        counts = np.stack([weights[X[:, 0] == s].sum(axis=0) for s in range(5)], axis=1)
        np.testing.assert_allclose(
            model.emissionprob_, counts / counts.sum(axis=1, keepdims=True), atol=1e-10
        )
    else:
        means = weights.T @ X / occupancy
        np.testing.assert_allclose(model.means_, means, rtol=1e-9)
        spread = np.stack(
            [(weights[:, k : k + 1] * (X - means[k]) ** 2).sum(axis=0) for k in range(K)]
        )
        np.testing.assert_allclose(model._covars_, (1e-2 + spread) / occupancy, rtol=1e-8)


def test_class_dependent_transitions_change_the_likelihood() -> None:
    """With two different class matrices, the class labels matter exactly as the reference says."""
    model, X, log_emissions = make_problem("poisson", 3, 2, seed=5)
    ones = np.ones(X.shape[0], dtype=int)
    zeros = np.zeros(X.shape[0], dtype=int)
    transmat = np.asarray(model.transmat_)
    for classes in (ones, zeros):
        ref = reference_hmm(log_emissions, model.startprob_, transmat, None, classes)
        assert model.score(X, classes=classes) == pytest.approx(ref.log_likelihood, rel=1e-10)
    assert model.score(X, classes=ones) != pytest.approx(model.score(X, classes=zeros))
    # classes[0] of a sequence has no step into it, so it must not matter.
    shifted = ones.copy()
    shifted[0] = 0
    assert model.score(X, classes=shifted) == pytest.approx(model.score(X, classes=ones))


def test_counts_beyond_the_table_and_underflowing_rows_match_reference() -> None:
    """Huge counts (lgamma path) and rows whose pmf underflows (log-space rescue) stay exact."""
    model = PoissonHMM(3, init_params="")
    model.startprob_ = np.array([0.5, 0.3, 0.2])
    model.transmat_ = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    model.lambdas_ = np.array([[0.5, 1.0], [2.0, 4.0], [900.0, 3.0]])
    X = np.array([[0, 1], [3, 2], [2500, 0], [1, 1], [700, 400], [0, 0], [5000, 6], [2, 3]])
    ref = reference_hmm(
        poisson_log_emissions(X, model.lambdas_), model.startprob_, model.transmat_[None]
    )
    log_likelihood, posteriors = model.score_samples(X)
    assert log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-10)
    np.testing.assert_allclose(posteriors, ref.posteriors, atol=1e-10)
    assert np.all(np.isfinite(posteriors))
    np.testing.assert_array_equal(model.predict(X), ref.viterbi_path)


def test_nearly_impossible_paths_match_reference() -> None:
    """Start and transition probabilities near the underflow limit keep everything finite."""
    model = PoissonHMM(2, init_params="")
    model.startprob_ = np.array([1.0, 1e-300])
    model.transmat_ = np.array([[1 - 1e-15, 1e-15], [1e-15, 1 - 1e-15]])
    model.lambdas_ = np.array([[1e-3], [50.0]])
    X = np.array([[0], [0], [50], [50], [0], [60], [0], [45]] * 5)
    ref = reference_hmm(
        poisson_log_emissions(X, model.lambdas_), model.startprob_, model.transmat_[None]
    )
    log_likelihood, posteriors = model.score_samples(X)
    assert log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-10)
    np.testing.assert_allclose(posteriors, ref.posteriors, atol=1e-10)
    log_prob, path = model.decode(X)
    assert log_prob == pytest.approx(ref.viterbi_log_prob, rel=1e-10)
    np.testing.assert_array_equal(path, ref.viterbi_path)
