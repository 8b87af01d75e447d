"""Benchmark hmm_core against hmmlearn (scaling): Poisson and Gaussian fits, Viterbi, peak memory.

Run with ``.venv/bin/python benchmarks/bench_hmm.py`` (``--quick`` for a smaller run).

Both libraries get the same data and the same initial parameters (``init_params=""``) in this
process. Fit runs a fixed number of EM iterations (``tol=-inf``) and reports wall-clock and
process CPU time per iteration (best of ``--repeats`` fits); decode runs Viterbi over the
whole sequence (best of three). hmm_core runs with ``n_jobs=--jobs`` (both cores by default:
one long sequence is split across them); hmmlearn uses one thread. The Gaussian cases fit
T x D=4 observations with K=4 for each covariance type.
Peak memory is measured the same way for both: each case runs in a fresh child process that
loads the data from a ``.npy`` file, imports only its own library, builds the model and warms
it up on a small slice. The child resets the kernel's peak-RSS mark (``/proc/self/clear_refs``;
``ru_maxrss`` where that is unavailable) and reports how far the peak resident set size rose
above the RSS before the call, and the peak of ``tracemalloc``-traced allocations (NumPy
buffers) during the call.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

N_FEATURES = 2
GAUSSIAN_FEATURES = 4
GAUSSIAN_STATES = 4
COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")
JOBS = 2


def initial_parameters(n_states: int) -> dict[str, np.ndarray]:
    """Shared starting point: sticky transitions and spread-out rates."""
    transmat = np.full((n_states, n_states), 0.1 / max(n_states - 1, 1))
    np.fill_diagonal(transmat, 0.9 if n_states > 1 else 1.0)
    return {
        "startprob_": np.full(n_states, 1.0 / n_states),
        "transmat_": transmat,
        "lambdas_": np.column_stack(
            [np.linspace(0.5, 8.0, n_states), np.linspace(6.0, 0.3, n_states)]
        ),
    }


def make_data(n_states: int, n_samples: int) -> np.ndarray:
    """Counts sampled from a K-state Poisson HMM (D = 2)."""
    from hmm_core import PoissonHMM

    truth = PoissonHMM(n_states)
    for name, value in initial_parameters(n_states).items():
        setattr(truth, name, value)
    truth.lambdas_ = truth.lambdas_ * 1.2 + 0.1
    X, _ = truth.sample(n_samples, random_state=n_states)
    return np.ascontiguousarray(X, dtype=np.int64)


def gaussian_parameters(covariance_type: str) -> dict[str, np.ndarray]:
    """Shared starting point of the Gaussian cases: sticky transitions, spread-out means."""
    K, D = GAUSSIAN_STATES, GAUSSIAN_FEATURES
    transmat = np.full((K, K), 0.1 / (K - 1))
    np.fill_diagonal(transmat, 0.9)
    rng = np.random.default_rng(0)
    mixing = np.eye(D) + 0.3 * rng.normal(size=(D, D))
    full = np.stack([mixing @ mixing.T * (0.5 + k / K) for k in range(K)])
    covars = {
        "spherical": np.linspace(0.5, 1.5, K),
        "diag": np.stack([np.diag(matrix) for matrix in full]),
        "full": full,
        "tied": full[0],
    }[covariance_type]
    return {
        "startprob_": np.full(K, 1.0 / K),
        "transmat_": transmat,
        "means_": 3.0 * rng.normal(size=(K, D)),
        "covars_": covars,
    }


def make_gaussian_data(n_samples: int) -> np.ndarray:
    """Observations sampled from a K=4, D=4 full-covariance Gaussian HMM."""
    from hmm_core import GaussianHMM

    truth = GaussianHMM(GAUSSIAN_STATES, "full")
    for name, value in gaussian_parameters("full").items():
        setattr(truth, name, value)
    truth.means_ = truth.means_ * 1.2
    X, _ = truth.sample(n_samples, random_state=3)
    return np.ascontiguousarray(X, dtype=np.float64)


def build_gaussian(library: str, covariance_type: str, n_iter: int, jobs: int) -> Any:
    """A GaussianHMM of either library with the shared initial parameters."""
    if library == "hmm_core":
        from hmm_core import GaussianHMM

        model: Any = GaussianHMM(
            GAUSSIAN_STATES,
            covariance_type,
            n_iter=n_iter,
            tol=-np.inf,
            init_params="",
            n_jobs=jobs,
        )
    else:
        from hmmlearn.hmm import GaussianHMM as HmmlearnGaussianHMM

        model = HmmlearnGaussianHMM(
            GAUSSIAN_STATES,
            covariance_type,
            n_iter=n_iter,
            tol=-np.inf,
            init_params="",
            implementation="scaling",
        )
    for name, value in gaussian_parameters(covariance_type).items():
        setattr(model, name, value.copy())
    return model


def build_model(library: str, n_states: int, n_iter: int, jobs: int = JOBS) -> Any:
    """A PoissonHMM of either library with the shared initial parameters."""
    if library == "hmm_core":
        from hmm_core import PoissonHMM

        model: Any = PoissonHMM(n_states, n_iter=n_iter, tol=-np.inf, init_params="", n_jobs=jobs)
    else:
        from hmmlearn.hmm import PoissonHMM as HmmlearnPoissonHMM

        model = HmmlearnPoissonHMM(
            n_states, n_iter=n_iter, tol=-np.inf, init_params="", implementation="scaling"
        )
    for name, value in initial_parameters(n_states).items():
        setattr(model, name, value.copy())
    return model


def time_fit(
    library: str,
    X: np.ndarray,
    n_states: int,
    n_iter: int,
    repeats: int,
    jobs: int = JOBS,
    covariance_type: str | None = None,
) -> dict[str, float]:
    """Per-iteration time of a full fit, best of `repeats` fits from the same start."""
    best_wall, best_cpu = np.inf, np.inf
    for _ in range(repeats):
        model = (
            build_model(library, n_states, n_iter, jobs)
            if covariance_type is None
            else build_gaussian(library, covariance_type, n_iter, jobs)
        )
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(X)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        assert model.monitor_.iter == n_iter
    return {
        "wall_ms": 1000 * best_wall / n_iter,
        "cpu_ms": 1000 * best_cpu / n_iter,
        "log_likelihood": float(model.monitor_.history[-1]),
    }


def time_decode(
    library: str, X: np.ndarray, n_states: int, repeats: int, jobs: int = JOBS
) -> dict[str, Any]:
    model = build_model(library, n_states, 1, jobs)
    best_wall, best_cpu = np.inf, np.inf
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        log_prob, path = model.decode(X)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return {
        "wall_ms": 1000 * best_wall,
        "cpu_ms": 1000 * best_cpu,
        "log_prob": float(log_prob),
        "path": path,
    }


def _status_kib(field: str) -> int | None:
    """A memory figure of this process from /proc/self/status (Linux), in KiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def memory_child(library: str, task: str, n_states: int, data_path: str, jobs: int) -> None:
    """Entry point of a child process: print the peak memory of one call as JSON.

    A task of the form ``fit-<covariance type>`` fits the Gaussian model."""
    X = np.load(data_path)
    if task.startswith("fit-"):
        covariance_type = task.split("-", 1)[1]
        model = build_gaussian(library, covariance_type, 2, jobs)
        model.fit(X[:1000])
        parameters = gaussian_parameters(covariance_type)
    else:
        model = build_model(library, n_states, 2, jobs)
        model.fit(X[:1000])  # warm imports and code paths on a tiny slice
        parameters = initial_parameters(n_states)
    for name, value in parameters.items():
        setattr(model, name, value.copy())
    if _reset_peak_rss():
        method = "VmHWM after resetting it"
        baseline_kib = _status_kib("VmRSS") or 0
    else:
        method = "ru_maxrss"
        baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    if task.startswith("fit"):
        model.fit(X)
    else:
        model.decode(X)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if method == "ru_maxrss":
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    else:
        peak_kib = _status_kib("VmHWM") or 0
    result = {
        "rss_mib": (peak_kib - baseline_kib) / 1024,
        "traced_mib": traced_peak / 2**20,
        "method": method,
    }
    print(json.dumps(result))


def measure_memory(
    library: str, task: str, n_states: int, data_path: Path, jobs: int = JOBS
) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--memory-child",
        library,
        task,
        str(n_states),
        str(data_path),
        str(jobs),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def ratio(peer: float, ours: float) -> str:
    return f"{peer / ours:6.1f}x" if ours > 0 else "   inf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--states", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="fits per case; the best counts")
    parser.add_argument("--gaussian-iterations", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=JOBS, help="hmm_core n_jobs (default 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory children")
    parser.add_argument("--no-gaussian", action="store_true", help="skip the Gaussian cases")
    parser.add_argument("--no-poisson", action="store_true", help="skip the Poisson cases")
    parser.add_argument("--no-decode", action="store_true", help="skip the Viterbi cases")
    parser.add_argument(
        "--covariance-types",
        nargs="+",
        choices=COVARIANCE_TYPES,
        default=list(COVARIANCE_TYPES),
        help="Gaussian covariance types to run (default all four)",
    )
    parser.add_argument("--quick", action="store_true", help="100,000 samples, 3 iterations")
    parser.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        library, task, n_states, data_path, jobs = args.memory_child
        memory_child(library, task, int(n_states), data_path, int(jobs))
        return
    if args.quick:
        args.samples, args.iterations, args.gaussian_iterations = 100_000, 3, 2

    import hmmlearn

    # Both log a warning whenever round-off lowers the log-likelihood near convergence.
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    logging.getLogger("hmm_core").setLevel(logging.ERROR)
    print(
        f"PoissonHMM, T={args.samples:,}, D={N_FEATURES}, fit {args.iterations} iterations "
        f"(tol=-inf), hmmlearn {hmmlearn.__version__} implementation='scaling', "
        f"hmm_core n_jobs={args.jobs}"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    fit_rows, decode_rows, memory_rows = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n_states in [] if args.no_poisson else args.states:
            X = make_data(n_states, args.samples)
            ours = time_fit("hmm_core", X, n_states, args.iterations, args.repeats, args.jobs)
            peer = time_fit("hmmlearn", X, n_states, args.iterations, args.repeats)
            relative = abs(ours["log_likelihood"] - peer["log_likelihood"]) / abs(
                peer["log_likelihood"]
            )
            fit_rows.append((n_states, ours, peer, relative))
            if not args.no_decode:
                ours_decode = time_decode("hmm_core", X, n_states, 3, args.jobs)
                peer_decode = time_decode("hmmlearn", X, n_states, 3)
                same_path = bool(np.array_equal(ours_decode["path"], peer_decode["path"]))
                decode_rows.append((n_states, ours_decode, peer_decode, same_path))
            if not args.no_memory:
                data_path = Path(tmp) / f"counts_{n_states}.npy"
                np.save(data_path, X)
                for task in ("fit", "decode"):
                    memory_rows.append(
                        (
                            n_states,
                            task,
                            measure_memory("hmm_core", task, n_states, data_path, args.jobs),
                            measure_memory("hmmlearn", task, n_states, data_path),
                        )
                    )
        gaussian_rows = []
        if not args.no_gaussian:
            X = make_gaussian_data(args.samples)
            data_path = Path(tmp) / "gaussian.npy"
            np.save(data_path, X)
            for covariance_type in args.covariance_types:
                timings = [
                    time_fit(
                        library,
                        X,
                        GAUSSIAN_STATES,
                        args.gaussian_iterations,
                        args.repeats,
                        args.jobs,
                        covariance_type,
                    )
                    for library in ("hmm_core", "hmmlearn")
                ]
                ours, peer = timings
                relative = abs(ours["log_likelihood"] - peer["log_likelihood"]) / abs(
                    peer["log_likelihood"]
                )
                memory = (
                    (
                        measure_memory(
                            "hmm_core",
                            f"fit-{covariance_type}",
                            GAUSSIAN_STATES,
                            data_path,
                            args.jobs,
                        ),
                        measure_memory(
                            "hmmlearn", f"fit-{covariance_type}", GAUSSIAN_STATES, data_path
                        ),
                    )
                    if not args.no_memory
                    else None
                )
                gaussian_rows.append((covariance_type, ours, peer, relative, memory))

    if fit_rows:
        print(f"\nFit, per EM iteration (ms, best of {args.repeats} fits)")
        print(
            "   K | hmm_core wall   cpu | hmmlearn wall    cpu | ratio wall   cpu | "
            "loglik rel. diff"
        )
        for n_states, ours, peer, relative in fit_rows:
            print(
                f"{n_states:4d} | {ours['wall_ms']:13.1f} {ours['cpu_ms']:5.1f} | "
                f"{peer['wall_ms']:13.1f} {peer['cpu_ms']:6.1f} | "
                f"{ratio(peer['wall_ms'], ours['wall_ms'])} "
                f"{ratio(peer['cpu_ms'], ours['cpu_ms'])} | {relative:.1e}"
            )
    if decode_rows:
        print("\nViterbi decode of the whole sequence (ms, best of 3)")
        print("   K | hmm_core wall   cpu | hmmlearn wall    cpu | ratio wall   cpu | same path")
        for n_states, ours, peer, same_path in decode_rows:
            print(
                f"{n_states:4d} | {ours['wall_ms']:13.1f} {ours['cpu_ms']:5.1f} | "
                f"{peer['wall_ms']:13.1f} {peer['cpu_ms']:6.1f} | "
                f"{ratio(peer['wall_ms'], ours['wall_ms'])} "
                f"{ratio(peer['cpu_ms'], ours['cpu_ms'])} | {same_path}"
            )
    if memory_rows:
        method = memory_rows[0][2]["method"]
        print(f"\nPeak memory of one call beyond the loaded data (MiB; child per case, {method})")
        print("   K | call   | hmm_core rss traced | hmmlearn rss traced | ratio (rss)")
        for n_states, task, ours, peer in memory_rows:
            print(
                f"{n_states:4d} | {task:6s} | {ours['rss_mib']:12.1f} {ours['traced_mib']:6.1f} | "
                f"{peer['rss_mib']:12.1f} {peer['traced_mib']:6.1f} | "
                f"{ratio(peer['rss_mib'], ours['rss_mib'])}"
            )
    if gaussian_rows:
        print(
            f"\nGaussianHMM fit, T={args.samples:,}, D={GAUSSIAN_FEATURES}, K={GAUSSIAN_STATES}, "
            f"per EM iteration (ms, best of {args.repeats} fits of {args.gaussian_iterations})"
        )
        print(
            "covariance | hmm_core wall   cpu | hmmlearn wall    cpu | ratio wall   cpu | "
            "loglik rel. diff | peak MiB ours / hmmlearn"
        )
        for covariance_type, ours, peer, relative, memory in gaussian_rows:
            peak = f"{memory[0]['rss_mib']:.1f} / {memory[1]['rss_mib']:.1f}" if memory else "-"
            print(
                f"{covariance_type:>10s} | {ours['wall_ms']:13.1f} {ours['cpu_ms']:5.1f} | "
                f"{peer['wall_ms']:13.1f} {peer['cpu_ms']:6.1f} | "
                f"{ratio(peer['wall_ms'], ours['wall_ms'])} "
                f"{ratio(peer['cpu_ms'], ours['cpu_ms'])} | {relative:.1e}          | {peak}"
            )
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
