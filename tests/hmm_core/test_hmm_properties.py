"""Property tests: posteriors are distributions and EM never lowers the log-likelihood."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm_core import CategoricalHMM, GaussianHMM, PoissonHMM

problems = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["poisson", "categorical", "gaussian"]),
        "n_components": st.integers(1, 6),
        "n_classes": st.integers(1, 3),
        "lengths": st.lists(st.integers(1, 40), min_size=1, max_size=4),
        "seed": st.integers(0, 2**32 - 1),
    }
)


def build(problem: dict[str, Any], **options: Any) -> tuple[Any, np.ndarray, Any]:
    rng = np.random.default_rng(problem["seed"])
    K, C = problem["n_components"], problem["n_classes"]
    T = sum(problem["lengths"])
    kind = problem["kind"]
    if kind == "poisson":
        model: Any = PoissonHMM(K, n_classes=C, random_state=problem["seed"], **options)
        X: np.ndarray = rng.poisson(rng.uniform(0.1, 10.0), size=(T, 2))
    elif kind == "categorical":
        model = CategoricalHMM(
            K, n_features=3, n_classes=C, random_state=problem["seed"], **options
        )
        X = rng.integers(0, 3, size=(T, 1))
    else:
        # No variance prior: plain maximum likelihood, which EM never makes worse.
        model = GaussianHMM(
            K, n_classes=C, covars_prior=0.0, random_state=problem["seed"], **options
        )
        X = rng.normal(size=(T, 2)) * rng.uniform(0.1, 5.0)
    classes = rng.integers(0, C, size=T) if C > 1 else None
    return model, X, classes


@settings(max_examples=40, deadline=None)
@given(problems)
def test_posteriors_are_distributions(problem: dict[str, Any]) -> None:
    model, X, classes = build(problem, n_iter=2)
    model.fit(X, problem["lengths"], classes)
    posteriors = model.predict_proba(X, problem["lengths"], classes)
    assert posteriors.shape == (X.shape[0], problem["n_components"])
    assert np.all(posteriors >= 0.0)
    np.testing.assert_allclose(posteriors.sum(axis=1), 1.0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(problems)
def test_em_never_lowers_the_log_likelihood(problem: dict[str, Any]) -> None:
    model, X, classes = build(problem, n_iter=15, tol=-np.inf)
    model.fit(X, problem["lengths"], classes)
    history = np.array(model.monitor_.history)
    assert len(history) == 15
    assert np.all(np.isfinite(history))
    gains = np.diff(history)
    assert np.all(gains >= -1e-8 * np.abs(history[1:]).max() - 1e-9)
    final = model.score(X, problem["lengths"], classes)
    assert final >= history[-1] - 1e-8 * abs(final) - 1e-9
