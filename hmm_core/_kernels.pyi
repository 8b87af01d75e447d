"""Type stubs of the Cython kernels in hmm_core/_kernels.pyx."""

import numpy as np
import numpy.typing as npt

_Float = npt.NDArray[np.float64]
_Int = npt.NDArray[np.int64]

class EmissionModel:
    def __init__(
        self,
        kind: int,
        n_states: int,
        n_features: int,
        n_obs_columns: int,
        counts: npt.ArrayLike,
        values: npt.ArrayLike,
        prob_table: npt.ArrayLike,
        log_table: npt.ArrayLike,
        rate: npt.ArrayLike,
        log_rate: npt.ArrayLike,
        state_constant: npt.ArrayLike,
        cholesky: npt.ArrayLike | None = None,
        inverse_diagonal: npt.ArrayLike | None = None,
        n_squared_columns: int = 0,
    ) -> None: ...

def forward_backward(
    model: EmissionModel,
    starts: _Int,
    ends: _Int,
    classes: _Int,
    startprob: _Float,
    transmat: _Float,
    transmat_t: _Float,
    alpha: _Float,
    scale: _Float,
    stats: _Float,
    logliks: _Float,
    lowest_log_factors: _Float,
    status: _Int,
    backward: bool,
    n_threads: int,
    split: bool = False,
) -> None: ...
def viterbi(
    model: EmissionModel,
    starts: _Int,
    ends: _Int,
    classes: _Int,
    log_startprob: _Float,
    log_transmat_t: _Float,
    backpointers: npt.NDArray[np.int32],
    path: _Int,
    logprobs: _Float,
    status: _Int,
    n_threads: int,
) -> None: ...
def cache_emissions(
    model: EmissionModel, out: _Float, log_factors: _Float, n_threads: int
) -> None: ...
def use_cached_emissions(model: EmissionModel, probs: _Float, log_factors: _Float) -> None: ...
def log_emission_matrix(model: EmissionModel, out: _Float) -> None: ...
def sample_states(
    cum_startprob: _Float,
    cum_transmat: _Float,
    classes: _Int,
    uniforms: _Float,
    states: _Int,
) -> None: ...
