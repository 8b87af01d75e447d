"""Every bad input raises ValueError naming the problem, before any kernel runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from hmm_core import CategoricalHMM, GaussianHMM, PoissonHMM


def poisson_model(n_classes: int = 1) -> PoissonHMM:
    model = PoissonHMM(2, n_classes=n_classes, init_params="")
    model.startprob_ = np.array([0.6, 0.4])
    transmat = np.array([[0.9, 0.1], [0.2, 0.8]])
    model.transmat_ = transmat if n_classes == 1 else np.stack([transmat] * n_classes)
    model.lambdas_ = np.array([[1.0, 2.0], [5.0, 0.5]])
    return model


def categorical_model() -> CategoricalHMM:
    model = CategoricalHMM(2, init_params="")
    model.startprob_ = np.array([0.6, 0.4])
    model.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
    model.emissionprob_ = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    return model


GOOD = np.array([[0, 1], [2, 3], [1, 0], [4, 2]])

# Each entry calls one method of the model with arguments that must be refused.
METHODS: dict[str, Callable[[Any, Any, Any, Any], Any]] = {
    "fit": lambda m, X, lengths, classes: m.fit(X, lengths, classes),
    "score": lambda m, X, lengths, classes: m.score(X, lengths, classes),
    "score_samples": lambda m, X, lengths, classes: m.score_samples(X, lengths, classes),
    "predict": lambda m, X, lengths, classes: m.predict(X, lengths, classes),
    "predict_proba": lambda m, X, lengths, classes: m.predict_proba(X, lengths, classes),
    "decode": lambda m, X, lengths, classes: m.decode(X, lengths, classes=classes),
}

BAD_POISSON_INPUTS = [
    ("empty X", np.zeros((0, 2)), None, None, "X is empty"),
    ("1-D X", np.array([1, 2, 3]), None, None, "X must be 2-D"),
    ("NaN", np.array([[0.0, 1.0], [np.nan, 2.0]]), None, None, "NaN or infinity.*row 1"),
    ("infinity", np.array([[0.0, np.inf], [1.0, 2.0]]), None, None, "NaN or infinity.*row 0"),
    ("negative count", np.array([[0, 1], [2, -3]]), None, None, "non-negative.*row 1"),
    ("non-integer count", np.array([[0.0, 1.5], [2.0, 3.0]]), None, None, "non-integer.*row 0"),
    ("text", np.array([["a", "b"]]), None, None, "must hold numbers"),
    ("lengths too short", GOOD, [1, 2], None, "lengths sum to 3 but X has 4 rows"),
    ("lengths too long", GOOD, [4, 2], None, "lengths sum to 6 but X has 4 rows"),
    ("lengths with 0", GOOD, [2, 0, 2], None, "length 0"),
    ("negative length", GOOD, [5, -1], None, "lengths must be positive"),
    ("classes too short", GOOD, None, [0, 0, 0], "classes has shape \\(3,\\) but X has 4 rows"),
    ("class out of range", GOOD, None, [0, 1, 1, 0], "outside the range \\[0, 1\\)"),
    ("negative class", GOOD, None, [0, -1, 0, 0], "outside the range"),
    ("width differs", np.array([[0, 1, 2], [1, 2, 3]]), None, None, "3 feature columns.*has 2"),
]


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize(
    ("X", "lengths", "classes", "message"),
    [case[1:] for case in BAD_POISSON_INPUTS],
    ids=[case[0] for case in BAD_POISSON_INPUTS],
)
def test_bad_poisson_input_is_refused(
    method: str, X: Any, lengths: Any, classes: Any, message: str
) -> None:
    model = poisson_model()
    before = model.lambdas_.copy()
    with pytest.raises(ValueError, match=message):
        METHODS[method](model, X, lengths, classes)
    np.testing.assert_array_equal(model.lambdas_, before)


def test_classes_required_and_checked_with_several_classes() -> None:
    model = poisson_model(n_classes=3)
    with pytest.raises(ValueError, match="classes is required when n_classes > 1"):
        model.score(GOOD)
    with pytest.raises(
        ValueError, match="classes contains 3 at row 2, outside the range \\[0, 3\\)"
    ):
        model.score(GOOD, classes=[0, 1, 3, 2])
    with pytest.raises(ValueError, match="classes must hold integers"):
        model.score(GOOD, classes=[0, 1, 1.5, 2])
    assert np.isfinite(model.score(GOOD, classes=[0, 1, 2, 2]))


@pytest.mark.parametrize("n_components", [0, -1, 1.5])
def test_n_components_must_be_positive_integer(n_components: Any) -> None:
    with pytest.raises(ValueError, match="n_components must be an integer >= 1"):
        PoissonHMM(n_components).fit(GOOD)


def test_category_out_of_range() -> None:
    model = categorical_model()
    with pytest.raises(ValueError, match="category 3 at row 1, outside the range \\[0, 3\\)"):
        model.score(np.array([[0], [3], [1]]))
    with pytest.raises(ValueError, match="category -1 at row 0"):
        model.predict(np.array([[-1], [0]]))
    with pytest.raises(ValueError, match="X has 2 feature columns but the model has 1"):
        model.score(np.array([[0, 1]]))


def test_categorical_n_features_bounds_fit() -> None:
    with pytest.raises(ValueError, match="category 4 at row 2, outside the range \\[0, 4\\)"):
        CategoricalHMM(2, n_features=4).fit(np.array([[0], [1], [4]]))


def test_observation_impossible_under_every_state() -> None:
    model = categorical_model()
    model.emissionprob_ = np.array([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])
    X = np.array([[0], [1], [2], [0]])
    for call in (model.score, model.predict_proba, model.predict, model.fit):
        with pytest.raises(ValueError, match="row 2 of X is impossible under every state"):
            call(X)


def test_observation_impossible_given_the_transitions() -> None:
    model = categorical_model()
    model.startprob_ = np.array([1.0, 0.0])
    model.transmat_ = np.array([[1.0, 0.0], [0.0, 1.0]])
    X = np.array([[0], [1], [2]])  # symbol 2 is only emitted by state 1, never reached
    with pytest.raises(ValueError, match="row 2 of X is impossible given the start and transition"):
        model.score(X)
    with pytest.raises(ValueError, match="row 2 of X is impossible given the start and transition"):
        model.decode(X)


def test_poisson_with_zero_rate_makes_counts_impossible() -> None:
    model = poisson_model()
    model.lambdas_ = np.array([[0.0, 1.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="row 1 of X is impossible under every state"):
        model.score(np.array([[0, 1], [3, 1]]))


def test_gaussian_nan_and_width() -> None:
    model = GaussianHMM(2, init_params="")
    model.startprob_ = np.array([0.5, 0.5])
    model.transmat_ = np.array([[0.5, 0.5], [0.5, 0.5]])
    model.means_ = np.zeros((2, 2))
    model.covars_ = np.ones((2, 2))
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.score(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="1 feature columns but the model has 2"):
        model.score(np.array([[0.0], [1.0]]))


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("startprob_", np.array([0.5, 0.6]), "startprob_ must sum to 1"),
        ("startprob_", np.array([1.0, 0.0, 0.0]), "startprob_ must have shape \\(2,\\)"),
        ("transmat_", np.array([[0.5, 0.6], [0.5, 0.5]]), "every row of transmat_ must sum to 1"),
        ("transmat_", np.ones((3, 2, 2)) / 2, "transmat_ must have shape \\(2, 2\\)"),
        ("lambdas_", np.array([[1.0, -2.0], [1.0, 1.0]]), "lambdas_ must hold finite non-negative"),
        ("lambdas_", np.array([1.0, 2.0]), "lambdas_ must have shape"),
    ],
)
def test_bad_hand_set_parameters(attribute: str, value: np.ndarray, message: str) -> None:
    model = poisson_model()
    setattr(model, attribute, value)
    with pytest.raises(ValueError, match=message):
        model.score(GOOD)


def test_unset_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="startprob_ is not set"):
        PoissonHMM(2).score(GOOD)
    model = PoissonHMM(2)
    model.startprob_ = np.array([0.5, 0.5])
    model.transmat_ = np.full((2, 2), 0.5)
    with pytest.raises(ValueError, match=r"lambdas_ is not set.*include 'l' in init_params"):
        model.score(GOOD)


def test_fit_fills_in_parameters_that_are_not_set() -> None:
    # As in hmmlearn: init_params only says what to overwrite; missing parameters are
    # initialised from the data whatever it says.
    model = PoissonHMM(2, init_params="st", n_iter=2, random_state=0).fit(GOOD)
    assert model.lambdas_.shape == (2, 2)
    bare = GaussianHMM(2, init_params="", n_iter=2, random_state=0).fit(GOOD.astype(float))
    assert bare.means_.shape == (2, 2) and bare.covars_.shape == (2, 2, 2)


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="params has unknown letters 'x'"):
        PoissonHMM(2, params="stx").fit(GOOD)
    with pytest.raises(ValueError, match="init_params has unknown letters 'e'"):
        PoissonHMM(2, init_params="e").fit(GOOD)
    with pytest.raises(ValueError, match="n_classes must be an integer >= 1"):
        PoissonHMM(2, n_classes=0).fit(GOOD)
    with pytest.raises(ValueError, match="n_jobs must be a non-zero integer"):
        PoissonHMM(2, n_jobs=0).fit(GOOD)
    with pytest.raises(ValueError, match="algorithm must be 'viterbi' or 'map'"):
        poisson_model().decode(GOOD, algorithm="forward")


def test_counts_too_large_for_exact_integers() -> None:
    with pytest.raises(ValueError, match="integers below 2\\*\\*53; found 1e\\+20 at row 1"):
        poisson_model().score(np.array([[0.0, 1.0], [1e20, 2.0]]))
