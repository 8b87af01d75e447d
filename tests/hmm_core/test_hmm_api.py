"""The hmmlearn-style API: hand-set parameters, init_params, tol, shapes, threads, sampling."""

from __future__ import annotations

import numpy as np
import pytest

from hmm_core import CategoricalHMM, ConvergenceMonitor, GaussianHMM, PoissonHMM


def two_state_poisson(**options: object) -> PoissonHMM:
    model = PoissonHMM(2, **options)  # type: ignore[arg-type]
    model.startprob_ = np.array([0.6, 0.4])
    model.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
    model.lambdas_ = np.array([[0.5, 3.0], [4.0, 0.5]])
    return model


def test_hand_set_parameters_work_without_fit() -> None:
    model = two_state_poisson()
    X, states = model.sample(500, random_state=0)
    assert X.shape == (500, 2) and states.shape == (500,)
    assert np.isfinite(model.score(X))
    assert model.predict_proba(X).shape == (500, 2)
    assert (model.predict(X) == states).mean() > 0.8
    log_prob, path = model.decode(X)
    assert log_prob < model.score(X)
    np.testing.assert_array_equal(path, model.predict(X))


def test_fit_keeps_parameters_left_out_of_init_params_and_params() -> None:
    X, _ = two_state_poisson().sample(2000, random_state=1)
    model = two_state_poisson(init_params="", params="st", n_iter=5)
    start_lambdas = model.lambdas_.copy()
    first = model.score(X)
    model.fit(X)
    np.testing.assert_array_equal(model.lambdas_, start_lambdas)
    assert model.monitor_.history[0] == pytest.approx(first, rel=1e-12)

    # init_params without 'l' keeps hand-set lambdas as the starting point of EM; start and
    # transitions are drawn from Dirichlet(1/K) with the model's random_state, as in hmmlearn.
    seeded = two_state_poisson(init_params="st", n_iter=1, random_state=7)
    seeded.lambdas_ = np.array([[0.5, 3.0], [4.0, 0.5]])
    seeded.fit(X)
    rng = np.random.RandomState(7)
    drawn = two_state_poisson(init_params="")
    drawn.startprob_ = rng.dirichlet([0.5, 0.5])
    drawn.transmat_ = rng.dirichlet([0.5, 0.5], size=2)
    assert seeded.monitor_.history[0] == pytest.approx(drawn.score(X), rel=1e-12)


def test_tol_minus_infinity_runs_exactly_n_iter() -> None:
    X, _ = two_state_poisson().sample(3000, random_state=2)
    model = PoissonHMM(2, n_iter=17, tol=-np.inf, random_state=0).fit(X)
    assert model.monitor_.iter == 17
    assert len(model.monitor_.history) == 17
    assert model.monitor_.converged

    loose = PoissonHMM(2, n_iter=100, tol=1e6, random_state=0).fit(X)
    assert loose.monitor_.iter == 2


def test_convergence_monitor() -> None:
    monitor = ConvergenceMonitor(tol=0.5, n_iter=10)
    monitor.report(-10.0)
    assert not monitor.converged
    monitor.report(-9.0)
    assert not monitor.converged
    monitor.report(-8.8)
    assert monitor.converged
    assert monitor.history == [-10.0, -9.0, -8.8]


def test_defaults_follow_hmmlearn_names() -> None:
    model = PoissonHMM()
    assert (model.n_components, model.n_iter, model.tol) == (1, 10, 1e-2)
    assert (model.implementation, model.algorithm, model.verbose) == ("log", "viterbi", False)
    assert (model.startprob_prior, model.transmat_prior) == (1.0, 1.0)
    assert (model.lambdas_prior, model.lambdas_weight) == (0.0, 0.0)
    gaussian = GaussianHMM()
    assert (gaussian.covariance_type, gaussian.min_covar) == ("diag", 1e-3)
    assert (gaussian.covars_prior, gaussian.covars_weight) == (1e-2, 1)
    assert (gaussian.means_prior, gaussian.means_weight) == (0, 0)
    assert CategoricalHMM().emissionprob_prior == 1.0
    assert (model.params, model.init_params, model.n_classes, model.n_jobs) == ("stl", "stl", 1, 1)
    assert CategoricalHMM().params == "ste"
    assert GaussianHMM().init_params == "stmc"


def test_transmat_shape_follows_n_classes() -> None:
    X, _ = two_state_poisson().sample(500, random_state=3)
    single = PoissonHMM(2, n_iter=3, random_state=0).fit(X)
    assert single.transmat_.shape == (2, 2)
    assert single.lambdas_.shape == (2, 2)
    classes = np.arange(500) % 4
    several = PoissonHMM(2, n_classes=4, n_iter=3, random_state=0).fit(X, classes=classes)
    assert several.transmat_.shape == (4, 2, 2)
    np.testing.assert_allclose(several.transmat_.sum(axis=2), 1.0)


def test_class_that_never_occurs_keeps_its_rows() -> None:
    model = two_state_poisson(n_classes=3, init_params="", n_iter=4)
    prior = np.array([[0.7, 0.3], [0.4, 0.6]])
    model.transmat_ = np.stack([prior, prior, prior])
    X, _ = two_state_poisson().sample(400, random_state=4)
    classes = np.where(np.arange(400) % 2 == 0, 0, 1)
    model.fit(X, classes=classes)
    assert np.all(np.isfinite(model.transmat_))
    np.testing.assert_array_equal(model.transmat_[2], prior)
    assert not np.allclose(model.transmat_[0], prior)


def test_zeros_in_startprob_and_transmat_are_allowed_and_kept() -> None:
    model = PoissonHMM(3, init_params="l", n_iter=10, random_state=0)
    model.startprob_ = np.array([1.0, 0.0, 0.0])
    model.transmat_ = np.array([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 1.0]])
    X = np.concatenate(
        [np.random.default_rng(0).poisson(lam, size=(100, 1)) for lam in (1.0, 6.0, 15.0)]
    )
    model.fit(X)
    assert model.startprob_[1] == 0.0 and model.startprob_[2] == 0.0
    assert model.transmat_[1, 0] == 0.0 and model.transmat_[2, 0] == 0.0
    assert model.transmat_[2, 1] == 0.0 and model.transmat_[0, 2] == 0.0
    assert np.all(np.diff(model.predict(X)) >= 0)


def test_n_jobs_two_gives_the_same_result_as_one() -> None:
    rng = np.random.default_rng(5)
    lengths = list(rng.integers(1, 400, size=300))
    classes = rng.integers(0, 3, size=sum(lengths))
    truth = two_state_poisson(n_classes=3)
    truth.transmat_ = np.stack(
        [[[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.5, 0.5]], [[0.99, 0.01], [0.6, 0.4]]]
    )
    X, _ = truth.sample(sum(lengths), random_state=6, classes=classes)
    results = []
    for n_jobs in (1, 2):
        model = PoissonHMM(2, n_classes=3, n_iter=8, tol=-np.inf, random_state=9, n_jobs=n_jobs)
        model.fit(X, lengths, classes)
        results.append(
            (
                model.monitor_.history,
                model.transmat_,
                model.lambdas_,
                model.predict_proba(X, lengths, classes),
                model.decode(X, lengths, classes=classes),
            )
        )
    serial, parallel = results
    assert serial[0] == parallel[0]
    for mine, theirs in zip(serial[1:4], parallel[1:4], strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert serial[4][0] == parallel[4][0]
    np.testing.assert_array_equal(serial[4][1], parallel[4][1])


def test_negative_n_jobs_uses_all_cores() -> None:
    X, _ = two_state_poisson().sample(300, random_state=8)
    model = PoissonHMM(2, n_iter=3, random_state=0, n_jobs=-1).fit(X, [100, 100, 100])
    assert np.isfinite(model.score(X, [100, 100, 100]))


def test_same_random_state_gives_the_same_fit() -> None:
    X, _ = two_state_poisson().sample(1000, random_state=10)
    first = PoissonHMM(3, n_iter=5, random_state=42).fit(X)
    second = PoissonHMM(3, n_iter=5, random_state=42).fit(X)
    np.testing.assert_array_equal(first.lambdas_, second.lambdas_)
    assert first.monitor_.history == second.monitor_.history


def test_sampling_with_classes_needs_classes() -> None:
    model = two_state_poisson(n_classes=2)
    model.transmat_ = np.stack([model.transmat_, model.transmat_[::-1]])
    with pytest.raises(ValueError, match="classes is required"):
        model.sample(10)
    X, states = model.sample(10, classes=np.zeros(10, dtype=int), random_state=0)
    assert X.shape == (10, 2) and states.shape == (10,)


def test_categorical_and_gaussian_samples_have_the_right_shape() -> None:
    categorical = CategoricalHMM(2)
    categorical.startprob_ = np.array([0.5, 0.5])
    categorical.transmat_ = np.array([[0.5, 0.5], [0.5, 0.5]])
    categorical.emissionprob_ = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    X, states = categorical.sample(200, random_state=0)
    assert X.shape == (200, 1)
    np.testing.assert_array_equal(X[:, 0], states * 2)

    gaussian = GaussianHMM(2)
    gaussian.startprob_ = np.array([1.0, 0.0])
    gaussian.transmat_ = np.eye(2)
    gaussian.means_ = np.array([[10.0, -10.0], [0.0, 0.0]])
    gaussian.covars_ = np.full((2, 2), 1e-4)
    X, states = gaussian.sample(50, random_state=0)
    assert np.all(states == 0)
    np.testing.assert_allclose(X, np.tile([10.0, -10.0], (50, 1)), atol=0.1)


def test_float_counts_and_lists_are_accepted() -> None:
    model = two_state_poisson()
    as_int = np.array([[0, 1], [2, 3], [4, 0]])
    assert model.score(as_int.astype(float)) == model.score(as_int.tolist())


def test_expected_statistics_match_one_em_step() -> None:
    model = two_state_poisson(n_classes=2, init_params="", n_iter=1)
    model.transmat_ = np.stack([model.transmat_, model.transmat_[::-1]])
    classes = np.arange(600) % 2
    X, _ = model.sample(600, random_state=12, classes=classes)
    log_likelihood, stats = model.expected_statistics(X, [250, 350], classes)
    assert log_likelihood == pytest.approx(model.score(X, [250, 350], classes))
    assert stats["trans"].shape == (2, 2, 2)
    assert stats["start"].sum() == pytest.approx(2.0)
    assert stats["post"].sum() == pytest.approx(600.0)
    assert stats["trans"].sum() == pytest.approx(598.0)
    np.testing.assert_allclose(stats["obs"].sum(axis=0), X.sum(axis=0))
    model.fit(X, [250, 350], classes)
    np.testing.assert_allclose(model.lambdas_, stats["obs"] / stats["post"][:, None])
    np.testing.assert_allclose(
        model.transmat_, stats["trans"] / stats["trans"].sum(axis=2, keepdims=True)
    )


def test_n_features_follows_the_emission_parameters() -> None:
    assert two_state_poisson().n_features == 2
    X = np.random.default_rng(0).normal(size=(50, 3))
    assert GaussianHMM(2, n_iter=2, random_state=0).fit(X).n_features == 3
    assert CategoricalHMM(2, n_features=4).n_features == 4
