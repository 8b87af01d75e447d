"""hmmlearn compatibility: covariance types and their checks, hooks, warnings, verbose, aic/bic."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from hmmlearn import hmm as hmmlearn_hmm

from hmm_core import CategoricalHMM, GaussianHMM, PoissonHMM

K, D = 2, 3
GOOD_COVARS: dict[str, np.ndarray] = {
    "spherical": np.array([0.5, 2.0]),
    "diag": np.array([[0.5, 1.0, 2.0], [1.5, 0.3, 0.7]]),
    "full": np.array(
        [[[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 0.5]], np.diag([0.4, 0.9, 1.6])]
    ),
    "tied": np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.8]]),
}


def gaussian(covariance_type: str, **options: Any) -> GaussianHMM:
    model = GaussianHMM(K, covariance_type, init_params="", **options)
    model.startprob_ = np.array([0.3, 0.7])
    model.transmat_ = np.array([[0.8, 0.2], [0.3, 0.7]])
    model.means_ = np.array([[0.0, 1.0, -1.0], [3.0, -2.0, 0.5]])
    model.covars_ = GOOD_COVARS[covariance_type]
    return model


@pytest.mark.parametrize("covariance_type", sorted(GOOD_COVARS))
def test_covariance_types_agree_with_hmmlearn(covariance_type: str) -> None:
    ours = gaussian(covariance_type, n_iter=4, tol=-np.inf)
    theirs = hmmlearn_hmm.GaussianHMM(
        K, covariance_type, init_params="", n_iter=4, tol=-np.inf, implementation="scaling"
    )
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        setattr(
            theirs,
            name,
            np.array(GOOD_COVARS[covariance_type] if name == "covars_" else getattr(ours, name)),
        )
    X, _ = theirs.sample(400, random_state=3)
    lengths = [150, 1, 249]
    assert ours.covars_.shape == theirs.covars_.shape == (K, D, D)
    np.testing.assert_allclose(ours.covars_, theirs.covars_)
    assert ours.score(X, lengths) == pytest.approx(theirs.score(X, lengths), rel=1e-10)
    np.testing.assert_allclose(
        ours.predict_proba(X, lengths), theirs.predict_proba(X, lengths), atol=1e-9
    )
    np.testing.assert_array_equal(ours.predict(X, lengths), theirs.predict(X, lengths))
    ours.fit(X, lengths)
    theirs.fit(X, lengths)
    np.testing.assert_allclose(ours.monitor_.history, list(theirs.monitor_.history), rtol=1e-9)
    np.testing.assert_allclose(ours.means_, theirs.means_, atol=1e-8)
    if covariance_type == "spherical":
        # hmmlearn keeps fitted spherical variances as (K, D) copies of one value per state.
        np.testing.assert_allclose(ours._covars_, theirs._covars_[:, 0], atol=1e-8)
    else:
        np.testing.assert_allclose(ours.covars_, theirs.covars_, atol=1e-8)
    assert ours._covars_.shape == np.shape(GOOD_COVARS[covariance_type])
    assert ours.aic(X) == pytest.approx(theirs.aic(X), rel=1e-9)
    assert ours.bic(X) == pytest.approx(theirs.bic(X), rel=1e-9)


BAD_COVARS = [
    ("spherical", np.array([1.0, 2.0, 3.0]), r"'spherical' must have shape \(2,\)"),
    ("spherical", np.array([1.0, -2.0]), "'spherical' must be positive"),
    ("diag", np.ones(3), r"'diag' must have shape \(2, n_features\)"),
    ("diag", np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]), "'diag' must be positive"),
    ("full", np.ones((2, 3)), r"'full' must have shape \(2, n_features, n_features\)"),
    ("full", np.ones((2, 3, 2)), r"'full' must have shape"),
    ("full", np.stack([np.eye(3), np.ones((3, 3))]), "component 1 of covars_.*positive-definite"),
    ("full", np.stack([np.eye(3), np.triu(np.ones((3, 3)))]), "component 1.*symmetric"),
    ("tied", np.ones((2, 3)), r"'tied' must have shape \(n_features, n_features\)"),
    ("tied", -np.eye(3), "'tied' must be symmetric, positive-definite"),
    ("diag", np.array([[1.0, np.nan, 1.0], [1.0, 1.0, 1.0]]), "covars_ must be finite"),
]


@pytest.mark.parametrize(("covariance_type", "covars", "message"), BAD_COVARS)
def test_bad_covariances_are_refused_when_set(
    covariance_type: str, covars: np.ndarray, message: str
) -> None:
    model = GaussianHMM(K, covariance_type)
    with pytest.raises(ValueError, match=message):
        model.covars_ = covars


@pytest.mark.parametrize("covariance_type", sorted(GOOD_COVARS))
def test_covariances_must_match_the_means(covariance_type: str) -> None:
    model = gaussian(covariance_type)
    model.means_ = np.zeros((K, 2))
    if covariance_type == "spherical":
        assert np.isfinite(model.score(np.zeros((3, 2))))
        return
    with pytest.raises(
        ValueError,
        match=f"covars_ for covariance_type='{covariance_type}' "
        r"must have shape .* to match means_ \(2, 2\)",
    ):
        model.score(np.zeros((3, 2)))


def test_bad_covariance_type_is_refused() -> None:
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        GaussianHMM(2, covariance_type="round").covars_ = np.ones(2)
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        GaussianHMM(2, covariance_type="round").fit(np.zeros((5, 2)))


def test_covariance_that_loses_definiteness_is_named() -> None:
    model = gaussian("full")
    model._covars_ = np.stack([np.eye(3), -np.eye(3)])
    with pytest.raises(ValueError, match="component 1 of covars_ is not symmetric positive"):
        model.score(np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("means_", np.zeros((3, 3)), r"means_ must have shape \(2, n_features\)"),
        ("means_", np.array([[0.0, np.inf, 0.0], [0.0, 0.0, 0.0]]), "means_ must be finite"),
        ("means_prior", np.zeros((2, 2)), r"means_prior must be a number or have shape \(2, 3\)"),
        ("means_weight", np.ones(3), r"means_weight must be a number or have shape \(2,\)"),
        ("means_weight", -1.0, "means_weight must be non-negative"),
        ("covars_prior", np.ones((2, 2)), r"covars_prior must be a number or have shape \(2, 3\)"),
        ("covars_weight", np.ones(5), r"covars_weight must be a number or have shape \(2,\)"),
        ("startprob_prior", np.ones(3), r"startprob_prior must be a number or have shape \(2,\)"),
        ("transmat_prior", np.ones((3, 3)), r"transmat_prior must be a number or have shape"),
        ("implementation", "fast", "implementation must be 'log' or 'scaling'"),
        ("algorithm", "best", "algorithm must be 'viterbi' or 'map'"),
    ],
)
def test_bad_gaussian_settings_are_named(name: str, value: Any, message: str) -> None:
    model = gaussian("diag", n_iter=1)
    setattr(model, name, value)
    with pytest.raises(ValueError, match=message):
        model.fit(np.random.default_rng(0).normal(size=(20, 3)))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("lambdas_prior", np.ones((2, 3)), r"lambdas_prior must be a number or have shape"),
        ("lambdas_weight", -1.0, "lambdas_weight must be non-negative"),
        ("fixed_lambdas", np.array([1, 0]), r"fixed_lambdas must be a boolean mask of shape"),
        ("fixed_lambdas", np.ones(3, dtype=bool), r"fixed_lambdas must be a boolean mask"),
        ("class_transmat_strength", -2.0, "class_transmat_strength must be None or a finite"),
    ],
)
def test_bad_poisson_priors_are_named(name: str, value: Any, message: str) -> None:
    model = PoissonHMM(2, init_params="", n_iter=1)
    model.startprob_ = np.array([0.5, 0.5])
    model.transmat_ = np.full((2, 2), 0.5)
    model.lambdas_ = np.array([[1.0, 2.0], [3.0, 0.5]])
    setattr(model, name, value)
    with pytest.raises(ValueError, match=message):
        model.fit(np.array([[0, 1], [2, 3], [1, 1]]))


def test_emissionprob_rows_and_categories_are_checked() -> None:
    model = CategoricalHMM(2, init_params="")
    model.startprob_ = np.array([0.5, 0.5])
    model.transmat_ = np.full((2, 2), 0.5)
    model.emissionprob_ = np.array([[0.5, 0.6], [0.5, 0.5]])
    with pytest.raises(ValueError, match="every row of emissionprob_ must sum to 1"):
        model.score([[0], [1]])
    model.emissionprob_ = np.array([[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="category 2 at row 1, outside the range"):
        model.score([[0], [2]])
    with pytest.raises(ValueError, match="symbols in X must be integers"):
        model._check_and_set_n_features(np.array([[0.0], [1.0]]))


def test_scaling_refuses_underflow_and_log_does_not() -> None:
    data = np.concatenate([np.zeros(50), np.full(50, 5.0)])
    data[20] = 10_000.0
    for implementation in ("scaling", "log"):
        model = GaussianHMM(2, "spherical", init_params="", implementation=implementation)
        model.startprob_ = np.array([0.5, 0.5])
        model.transmat_ = np.full((2, 2), 0.5)
        model.means_ = np.array([[0.0], [5.0]])
        model.covars_ = np.array([1.0, 1.0])
        if implementation == "scaling":
            with pytest.raises(ValueError, match=r"underflow.*implementation='log'"):
                model.fit(data[:, None])
        else:
            model.fit(data[:, None])
            assert np.isfinite(model.score(data[:, None]))


def test_overwritten_parameters_warn(caplog: pytest.LogCaptureFixture) -> None:
    model = PoissonHMM(2, n_iter=1, random_state=0)
    model.lambdas_ = np.array([[1.0], [4.0]])
    with caplog.at_level(logging.WARNING):
        model.fit(np.array([[0], [1], [5], [6], [0], [2]]))
    assert any(
        "'lambdas_' attribute is set, it will be overwritten" in record.getMessage()
        for record in caplog.records
    )


def test_verbose_prints_the_monitor(capsys: pytest.CaptureFixture[str]) -> None:
    X = np.random.default_rng(0).poisson(3.0, size=(200, 1))
    PoissonHMM(2, n_iter=3, tol=-np.inf, verbose=True, random_state=0).fit(X)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].split()[0] == "1" and lines[0].split()[2] == "+nan"
    assert lines[2].split()[0] == "3"


def test_random_state_none_follows_numpy_global_seed() -> None:
    X = np.random.default_rng(1).normal(size=(100, 2))
    np.random.seed(42)
    first = GaussianHMM(3, n_iter=1).fit(X)
    np.random.seed(42)
    second = GaussianHMM(3, n_iter=1).fit(X)
    np.testing.assert_array_equal(first.means_, second.means_)
    np.testing.assert_array_equal(first.transmat_, second.transmat_)


def test_kmeans_recovers_separated_means_for_many_seeds() -> None:
    centres = np.array([[-40.0, 0.0, 20.0], [0.0, 60.0, -20.0], [40.0, -60.0, 0.0]])
    rng = np.random.default_rng(2)
    X = centres[rng.integers(0, 3, size=600)] + rng.normal(size=(600, 3))
    for seed in range(20):
        model = GaussianHMM(3, n_iter=0, random_state=seed)
        model.fit(X)
        found = np.sort(model.means_[:, 0])
        np.testing.assert_allclose(found, [-40.0, 0.0, 40.0], atol=0.5)


def test_n_features_is_learnt_by_categorical_fit() -> None:
    X = np.array([[0], [2], [1], [2], [0]])
    model = CategoricalHMM(2, n_iter=2, random_state=0).fit(X)
    assert model.n_features == 3 and model.emissionprob_.shape == (2, 3)


def test_positional_arguments_follow_hmmlearn() -> None:
    model = GaussianHMM(
        3,
        "full",
        1e-2,
        2.0,
        3.0,
        0.5,
        1.0,
        0.1,
        4.0,
        "map",
        7,
        5,
        1e-3,
        True,
        "st",
        "mc",
        "scaling",
    )
    assert (model.covariance_type, model.min_covar, model.startprob_prior) == ("full", 1e-2, 2.0)
    assert (model.means_weight, model.covars_weight, model.algorithm) == (1.0, 4.0, "map")
    assert (model.random_state, model.n_iter, model.verbose) == (7, 5, True)
    assert (model.params, model.init_params, model.implementation) == ("st", "mc", "scaling")
    poisson = PoissonHMM(2, 1.0, 1.0, 0.5, 2.0)
    assert (poisson.lambdas_prior, poisson.lambdas_weight) == (0.5, 2.0)


@pytest.mark.parametrize("kind", ["poisson", "spherical", "diag", "full", "tied"])
def test_one_long_sequence_split_across_threads_matches_one_thread(kind: str) -> None:
    rng = np.random.default_rng(6)
    T = 30_000  # above the length from which n_jobs=2 splits one sequence
    classes = rng.integers(0, 3, size=T)
    fitted = []
    for n_jobs in (1, 2):
        if kind == "poisson":
            model: Any = PoissonHMM(
                3, n_classes=3, n_iter=4, tol=-np.inf, random_state=0, n_jobs=n_jobs
            )
            X: np.ndarray = np.random.default_rng(7).poisson(
                np.repeat([[1.0, 4.0], [6.0, 0.5]], T // 2, axis=0)
            )
        else:
            model = GaussianHMM(
                3, kind, n_classes=3, n_iter=4, tol=-np.inf, random_state=0, n_jobs=n_jobs
            )
            X = np.random.default_rng(7).normal(size=(T, 3))
            X[T // 2 :] += [2.0, -1.0, 0.5]
        model.fit(X, classes=classes)
        log_likelihood, posteriors = model.score_samples(X, classes=classes)
        fitted.append((model, log_likelihood, posteriors))
    (one, ll_one, post_one), (two, ll_two, post_two) = fitted
    np.testing.assert_allclose(one.monitor_.history, two.monitor_.history, rtol=1e-12)
    np.testing.assert_allclose(one.transmat_, two.transmat_, rtol=0, atol=1e-12)
    emission = "lambdas_" if kind == "poisson" else "_covars_"
    np.testing.assert_allclose(getattr(one, emission), getattr(two, emission), rtol=1e-11)
    assert ll_one == pytest.approx(ll_two, rel=1e-12)
    np.testing.assert_allclose(post_one, post_two, rtol=0, atol=1e-12)
