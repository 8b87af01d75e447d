"""One long sequence split across two threads: same answers as one thread, on every path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from hmm_core import GaussianHMM, PoissonHMM
from hmm_core.hmm import MAX_POISSON_TABLE, SPLIT_MIN_ROWS

T = SPLIT_MIN_ROWS + 5_001  # split by n_jobs=2, odd so the halves differ in length


def poisson_model(n_states: int, n_jobs: int) -> PoissonHMM:
    model = PoissonHMM(n_states, init_params="", n_jobs=n_jobs)
    model.startprob_ = np.full(n_states, 1.0 / n_states)
    transmat = np.full((n_states, n_states), 0.2 / (n_states - 1))
    np.fill_diagonal(transmat, 0.8)
    model.transmat_ = transmat
    model.lambdas_ = np.column_stack(
        [np.linspace(0.5, 9.0, n_states), np.linspace(7.0, 0.4, n_states)]
    )
    return model


def poisson_counts(n_states: int) -> np.ndarray:
    X, _ = poisson_model(n_states, 1).sample(T, random_state=n_states)
    return X


@pytest.mark.parametrize("n_states", [2, 5, 8])
def test_posteriors_and_statistics_match_one_thread(n_states: int) -> None:
    # 5 states run the generic kernel, 2 and 8 the specialised ones.
    X = poisson_counts(n_states)
    one = poisson_model(n_states, 1)
    two = poisson_model(n_states, 2)
    ll_one, post_one = one.score_samples(X)
    ll_two, post_two = two.score_samples(X)
    assert ll_two == pytest.approx(ll_one, rel=1e-13)
    np.testing.assert_allclose(post_two, post_one, rtol=0, atol=1e-12)
    _, stats_one = one.expected_statistics(X)
    _, stats_two = two.expected_statistics(X)
    for name in ("start", "trans", "post", "obs"):
        np.testing.assert_allclose(stats_two[name], stats_one[name], rtol=1e-11, atol=1e-9)


def test_rows_beyond_the_tables_and_very_unlikely_rows_match_one_thread() -> None:
    # Counts beyond the lookup tables go to log space in the forward pass; so does a row too
    # unlikely for the scaled pass, on both sides of the middle row.
    X = poisson_counts(3)
    X[[10, T // 2 - 1, T // 2, T // 2 + 1, T - 3], 0] = MAX_POISSON_TABLE + 500
    X[[T // 4, 3 * T // 4], 1] = 900
    one, two = poisson_model(3, 1), poisson_model(3, 2)
    ll_one, post_one = one.score_samples(X)
    ll_two, post_two = two.score_samples(X)
    assert ll_two == pytest.approx(ll_one, rel=1e-13)
    np.testing.assert_allclose(post_two, post_one, rtol=0, atol=1e-12)
    _, stats_one = one.expected_statistics(X)
    _, stats_two = two.expected_statistics(X)
    for name in ("start", "trans", "post", "obs"):
        np.testing.assert_allclose(stats_two[name], stats_one[name], rtol=1e-11, atol=1e-9)


@pytest.mark.parametrize("row", [5, T // 2 - 1, T // 2, T - 2])
def test_an_impossible_row_is_reported_without_waiting_forever(row: int) -> None:
    # Rate 0 in every state for feature 1 makes any positive count there impossible; the
    # forward thread stops, and the backward thread must stop waiting for it.
    X = poisson_counts(2)
    X[:, 1] = 0
    X[row, 1] = 3
    model = poisson_model(2, 2)
    model.lambdas_ = np.array([[1.0, 0.0], [6.0, 0.0]])
    with pytest.raises(ValueError, match="impossible"):
        model.score_samples(X)
    with pytest.raises(ValueError, match="impossible"):
        model.expected_statistics(X)


def test_one_thread_granted_runs_the_sequential_kernel() -> None:
    # With OpenMP limited to one thread the two halves cannot run side by side; the split
    # must then not wait for a second thread that never comes.
    script = textwrap.dedent(
        """
        import numpy as np
        from hmm_core import PoissonHMM
        rng = np.random.default_rng(0)
        X = rng.poisson([2.0, 5.0], size=(N_ROWS, 2))
        results = []
        for n_jobs in (1, 2):
            model = PoissonHMM(3, n_iter=3, tol=-np.inf, random_state=0, n_jobs=n_jobs)
            model.fit(X)
            results.append(model.score(X))
        assert results[0] == results[1], results
        print("ok")
        """
    ).replace("N_ROWS", str(T))
    environment = dict(os.environ, OMP_THREAD_LIMIT="1")
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("covariance_type", ["diag", "full", "tied"])
def test_gaussian_fit_matches_one_thread(covariance_type: str) -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(T, 3))
    X[: T // 3] += [3.0, 0.0, -2.0]
    fitted: list[Any] = []
    for n_jobs in (1, 2):
        model = GaussianHMM(
            4, covariance_type, n_iter=3, tol=-np.inf, random_state=1, n_jobs=n_jobs
        )
        model.fit(X)
        fitted.append(model)
    one, two = fitted
    np.testing.assert_allclose(two.monitor_.history, one.monitor_.history, rtol=1e-12)
    np.testing.assert_allclose(two.means_, one.means_, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(two._covars_, one._covars_, rtol=1e-11)
