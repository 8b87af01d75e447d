# cython: language_level=3
"""Cython kernels of the HMM core: fused scaled forward-backward, Viterbi and path sampling."""

from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY, exp, lgamma, log
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport calloc, free, malloc

import numpy as np

# Emission kinds understood by the kernels.
cdef enum:
    POISSON = 0
    CATEGORICAL = 1
    GAUSSIAN = 2          # diagonal covariances (spherical ones are expanded to diagonal)
    GAUSSIAN_FULL = 3     # one full covariance per state, through its Cholesky factor
    GAUSSIAN_TIED = 4     # one full covariance shared by every state

# Below this largest per-state emission probability an observation is recomputed in log space
# and rescaled, so a very unlikely observation never underflows to zero.
cdef double TINY_PROBABILITY = 1e-200
# Scale factors are multiplied into a running product, which is folded into the log-likelihood
# once it falls below this value; a smaller factor goes to the log-likelihood directly. Both
# bounds keep the product above 1e-300, clear of underflow.
cdef double TINY_PRODUCT = 1e-150
# Cached emission probabilities below this fraction of their row's largest are set to zero.
cdef double TINY_RELATIVE = 1e-280
# Sequences are split into at most this many groups of consecutive sequences with about the
# same number of rows. Threads take whole groups; each group sums its statistics in sequence
# order and the groups are summed in group order, so the result does not depend on the number
# of threads.
cdef Py_ssize_t MAX_GROUPS = 64
# The Gaussian density cache is computed over this many chunks of rows (fewer when there are
# fewer rows), taken by the threads as they come free.
cdef Py_ssize_t SPLIT_CHUNKS = 64
# Rows whose log densities are exponentiated together by the density cache.
cdef Py_ssize_t CACHE_BLOCK = 256
# The largest state count with a specialised kernel.
cdef enum:
    SMALL_K = 8


cdef struct Emissions:
    int kind
    Py_ssize_t n_states            # K
    Py_ssize_t n_features          # D: columns of X (1 for categorical)
    Py_ssize_t n_obs_columns       # D for Poisson and Gaussian, number of symbols for categorical
    const int64_t* counts          # (T, D) Poisson counts or (T, 1) category symbols
    const double* values           # (T, D) Gaussian observations
    Py_ssize_t table_size          # Poisson counts below this are looked up in the tables
    const double* prob_table       # Poisson (D, table_size, K) pmf; categorical (n_symbols, K)
    const double* log_table        # log of prob_table
    const double* rate             # Poisson (D, K) lambdas; diagonal and full Gaussian (D, K)
                                   # means; tied (D, K) means multiplied by L^-1
    const double* log_rate         # Poisson (D, K) log lambdas; diagonal Gaussian (D, K) inverse
                                   # variances
    const double* state_constant   # Gaussian (K,) log normalising constant of each state
    const double* cholesky         # full (D, D, K) [row, column, state] / tied (D, D) lower
                                   # Cholesky factors
    const double* inverse_diagonal # full (D, K) / tied (D,) reciprocals of their diagonals
    Py_ssize_t n_squared_columns   # Gaussian second-moment statistics per state: D (diagonal),
                                   # D (D + 1) / 2 (full and tied: upper triangle, row by row)
    const double* cached_probs     # Gaussian (T, K) emission probabilities divided by the
                                   # largest of their row, or NULL (see cache_emissions)
    const double* cached_log_factor  # (T,) log of that divisor (-inf for an impossible row)


cdef class EmissionModel:
    """Emission parameters and observations in the layout the kernels read.

    Parameters
    ----------
    kind : int
        0 Poisson, 1 categorical, 2 Gaussian with diagonal covariance, 3 full, 4 tied.
    counts : ndarray of int64, shape (T, D)
        Poisson counts or category symbols (D = 1); empty for Gaussian.
    values : ndarray of float64, shape (T, D)
        Gaussian observations; empty otherwise.
    prob_table, log_table : ndarray of float64
        Poisson: (D, table_size, K) pmf and log pmf per count; categorical: (n_symbols, K).
    rate, log_rate : ndarray of float64
        Poisson (D, K): lambdas and their logs; diagonal Gaussian (D, K): means and inverse
        variances; full Gaussian: (D, K) means; tied: (D, K) means multiplied by L^-1.
    state_constant : ndarray of float64, shape (K,)
        Gaussian log normalising constants; empty otherwise.
    cholesky, inverse_diagonal : ndarray of float64
        Full: (D, D, K) lower Cholesky factors [row, column, state] and (D, K) reciprocals of
        their diagonals; tied: (D, D) and (D,). Empty otherwise.
    n_squared_columns : int
        Second-moment statistics per state (see the Emissions struct).
    """

    cdef Emissions c
    cdef list _arrays

    def __init__(self, int kind, Py_ssize_t n_states, Py_ssize_t n_features,
                 Py_ssize_t n_obs_columns, counts, values, prob_table, log_table, rate,
                 log_rate, state_constant, cholesky=None, inverse_diagonal=None,
                 Py_ssize_t n_squared_columns=0):
        self._arrays = []
        self.c.kind = kind
        self.c.n_states = n_states
        self.c.n_features = n_features
        self.c.n_obs_columns = n_obs_columns
        self.c.counts = <const int64_t*> self._int_pointer(counts)
        self.c.values = self._double_pointer(values)
        self.c.prob_table = self._double_pointer(prob_table)
        self.c.log_table = self._double_pointer(log_table)
        self.c.rate = self._double_pointer(rate)
        self.c.log_rate = self._double_pointer(log_rate)
        self.c.state_constant = self._double_pointer(state_constant)
        self.c.cholesky = self._double_pointer(np.zeros(0) if cholesky is None else cholesky)
        self.c.inverse_diagonal = self._double_pointer(
            np.zeros(0) if inverse_diagonal is None else inverse_diagonal)
        self.c.n_squared_columns = n_squared_columns
        self.c.cached_probs = NULL
        self.c.cached_log_factor = NULL
        self.c.table_size = prob_table.shape[1] if kind == POISSON else 0

    cdef const double* _double_pointer(self, array) except? NULL:
        flat = np.ascontiguousarray(array, dtype=np.float64).reshape(-1)
        self._arrays.append(flat)
        if flat.size == 0:
            return NULL
        cdef const double[::1] view = flat
        return &view[0]

    cdef const int64_t* _int_pointer(self, array) except? NULL:
        flat = np.ascontiguousarray(array, dtype=np.int64).reshape(-1)
        self._arrays.append(flat)
        if flat.size == 0:
            return NULL
        cdef const int64_t[::1] view = flat
        return &view[0]


# Every helper below takes the number of states K as its first argument. The sequence kernels
# are specialised through the fused type StateCount: for the common small models K is
# sizeof(tag), a compile-time constant, so the C compiler unrolls the loops over states after
# inlining the helpers; StatesAny reads K at run time.
ctypedef struct States2:
    char size[2]
ctypedef struct States3:
    char size[3]
ctypedef struct States4:
    char size[4]
ctypedef struct States8:
    char size[8]
ctypedef struct StatesAny:
    char size[1]

ctypedef fused StateCount:
    States2
    States3
    States4
    States8
    StatesAny


cdef inline void poisson_log_probs(Py_ssize_t K, const Emissions* em, Py_ssize_t t,
                                   double* out) noexcept nogil:
    """Log pmf of row t under each state, summed over the features."""
    cdef Py_ssize_t D = em.n_features, d, k
    cdef const int64_t* x = em.counts + t * D
    cdef const double* row
    cdef int64_t count
    cdef double log_factorial
    for k in range(K):
        out[k] = 0.0
    for d in range(D):
        count = x[d]
        if count < em.table_size:
            row = em.log_table + (d * em.table_size + count) * K
            for k in range(K):
                out[k] += row[k]
        else:
            log_factorial = lgamma(<double> count + 1.0)
            for k in range(K):
                out[k] += count * em.log_rate[d * K + k] - em.rate[d * K + k] - log_factorial


cdef inline void gaussian_log_probs(Py_ssize_t K, const Emissions* em, Py_ssize_t t,
                                    double* out) noexcept nogil:
    """Diagonal Gaussian log density of row t under each state."""
    cdef Py_ssize_t D = em.n_features, d, k
    cdef const double* x = em.values + t * D
    cdef double diff
    for k in range(K):
        out[k] = 0.0
    for d in range(D):
        for k in range(K):
            diff = x[d] - em.rate[d * K + k]
            out[k] += diff * diff * em.log_rate[d * K + k]
    for k in range(K):
        out[k] = em.state_constant[k] - 0.5 * out[k]


cdef inline void full_gaussian_log_probs(Py_ssize_t K, const Emissions* em, Py_ssize_t t,
                                         double* out, double* solved) noexcept nogil:
    """Full-covariance Gaussian log density of row t under each state: forward substitution
    L y = x - mean with each state's Cholesky factor L, then -0.5 |y|^2 plus the constant.
    All states advance together (the innermost loops run over states, so they vectorise).
    solved is scratch of D K doubles."""
    cdef Py_ssize_t D = em.n_features, d, j, k
    cdef const double* x = em.values + t * D
    cdef const double* factor_row
    cdef const double* factor
    cdef const double* inverse
    cdef const double* mean
    cdef const double* previous
    cdef double* current
    cdef double value
    for k in range(K):
        out[k] = 0.0
    for d in range(D):
        current = solved + d * K
        mean = em.rate + d * K
        value = x[d]
        for k in range(K):
            current[k] = value - mean[k]
        factor_row = em.cholesky + d * D * K
        for j in range(d):
            factor = factor_row + j * K
            previous = solved + j * K
            for k in range(K):
                current[k] -= factor[k] * previous[k]
        inverse = em.inverse_diagonal + d * K
        for k in range(K):
            current[k] *= inverse[k]
            out[k] += current[k] * current[k]
    for k in range(K):
        out[k] = em.state_constant[k] - 0.5 * out[k]


cdef inline void tied_gaussian_log_probs(Py_ssize_t K, const Emissions* em, Py_ssize_t t,
                                         double* out, double* solved) noexcept nogil:
    """Tied-covariance Gaussian log density of row t under each state: one forward
    substitution z = L^-1 x shared by all states, then -0.5 |z - L^-1 mean_k|^2 per state."""
    cdef Py_ssize_t D = em.n_features, d, j, k
    cdef const double* x = em.values + t * D
    cdef const double* shifted
    cdef double s, value
    for d in range(D):
        s = x[d]
        for j in range(d):
            s -= em.cholesky[d * D + j] * solved[j]
        solved[d] = s * em.inverse_diagonal[d]
    for k in range(K):
        out[k] = 0.0
    for d in range(D):
        shifted = em.rate + d * K
        value = solved[d]
        for k in range(K):
            s = value - shifted[k]
            out[k] += s * s
    for k in range(K):
        out[k] = em.state_constant[k] - 0.5 * out[k]


cdef inline void emission_log_probs(Py_ssize_t K, const Emissions* em, Py_ssize_t t,
                                    double* out, double* scratch) noexcept nogil:
    """Log emission probability of row t under each state (-inf where impossible).
    scratch holds D K doubles for the full and tied Gaussian kinds."""
    cdef Py_ssize_t k
    cdef const double* row
    if em.kind == POISSON:
        poisson_log_probs(K, em, t, out)
    elif em.kind == CATEGORICAL:
        row = em.log_table + em.counts[t] * K
        for k in range(K):
            out[k] = row[k]
    elif em.kind == GAUSSIAN:
        gaussian_log_probs(K, em, t, out)
    elif em.kind == GAUSSIAN_FULL:
        full_gaussian_log_probs(K, em, t, out, scratch)
    else:
        tied_gaussian_log_probs(K, em, t, out, scratch)


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__GNUC__)
    #define HMM_ALWAYS_INLINE inline __attribute__((always_inline))
    #elif defined(_MSC_VER)
    #define HMM_ALWAYS_INLINE __forceinline
    #else
    #define HMM_ALWAYS_INLINE inline
    #endif
    /* exp of every value in v[0..n), in place, for values <= 0 (log probabilities relative
       to their row's largest); values at or below floor become 0. The reduction and the
       polynomial are fdlibm's (error below 1 ulp); written without branches or calls so that
       the compiler vectorises the loop (GCC does so only when it may assume that floating
       point operations do not trap, which changes no result). On x86-64 GCC also builds it
       for AVX-512 and AVX2 and picks the widest the processor has when the module loads;
       the steps are single IEEE operations (no fused multiply-add, no reordering), so every
       version gives the same bits. */
    #if defined(__GNUC__) && !defined(__clang__)
    __attribute__((optimize("no-trapping-math")))
    #if defined(__x86_64__) && defined(__linux__)
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
    #endif
    #endif
    static void hmm_exp_relative(double* v, Py_ssize_t n, double floor) {
        const double log2e = 1.44269504088896338700e+00;
        const double ln2_hi = 6.93147180369123816490e-01;
        const double ln2_lo = 1.90821492927058770002e-10;
        const double shift = 6755399441055744.0;   /* 1.5 * 2^52: rounds to an integer */
        const double p1 = 1.66666666666666019037e-01;
        const double p2 = -2.77777777770155933842e-03;
        const double p3 = 6.61375632143793436117e-05;
        const double p4 = -1.65339022054652515390e-06;
        const double p5 = 4.13813679705723846039e-08;
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            /* keep is 1 where v[i] > floor (not for NaN or -inf), else 0; the others are
               computed from 0 and multiplied by 0 (selects, not branches, so it vectorises) */
            double x = v[i];
            double keep = (double)(x > floor);
            double xc = x > floor ? x : 0.0;
            double shifted = xc * log2e + shift;
            double k = shifted - shift;
            double hi = xc - k * ln2_hi;
            double lo = k * ln2_lo;
            double r = hi - lo;
            double z = r * r;
            double c = r - z * (p1 + z * (p2 + z * (p3 + z * (p4 + z * p5))));
            double y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
            double power;
            int64_t bits;
            memcpy(&bits, &shifted, sizeof bits);
            bits = (int64_t)((uint64_t)(bits + 1023) << 52);
            memcpy(&power, &bits, sizeof power);
            v[i] = y * power * keep;
        }
    }

    /* Diagonal Gaussian log densities of n rows of x (n, D) minus each row's largest, into
       out (n, K), and that largest into log_factors (n,). For each state the sum runs over
       the features in order, so the values are those of gaussian_log_probs. Feature by
       feature over the whole block, with the number of states a constant for the common
       ones, so the loops over rows and states vectorise; built for AVX-512, AVX2 and the
       baseline like hmm_exp_relative (single IEEE operations: every version gives the same
       bits). */
    static HMM_ALWAYS_INLINE void hmm_diagonal_rows(
            const double* x, Py_ssize_t n, Py_ssize_t D, const Py_ssize_t K,
            const double* mean, const double* inverse, const double* constant,
            double* out, double* log_factors) {
        Py_ssize_t d, r, k;
        for (r = 0; r < n * K; r++)
            out[r] = 0.0;
        for (d = 0; d < D; d++) {
            const double* m = mean + d * K;
            const double* v = inverse + d * K;
            for (r = 0; r < n; r++) {
                const double value = x[r * D + d];
                double* target = out + r * K;
                for (k = 0; k < K; k++) {
                    const double diff = value - m[k];
                    target[k] += diff * diff * v[k];
                }
            }
        }
        for (r = 0; r < n; r++) {
            double* target = out + r * K;
            double peak = -INFINITY;
            for (k = 0; k < K; k++) {
                target[k] = constant[k] - 0.5 * target[k];
                peak = target[k] > peak ? target[k] : peak;
            }
            log_factors[r] = peak;
            for (k = 0; k < K; k++)
                target[k] = target[k] - peak;
        }
    }
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
    #endif
    static void hmm_diagonal_block(const double* x, Py_ssize_t n, Py_ssize_t D,
                                   Py_ssize_t K, const double* mean, const double* inverse,
                                   const double* constant, double* out,
                                   double* log_factors) {
        if (K == 2)
            hmm_diagonal_rows(x, n, D, 2, mean, inverse, constant, out, log_factors);
        else if (K == 3)
            hmm_diagonal_rows(x, n, D, 3, mean, inverse, constant, out, log_factors);
        else if (K == 4)
            hmm_diagonal_rows(x, n, D, 4, mean, inverse, constant, out, log_factors);
        else if (K == 8)
            hmm_diagonal_rows(x, n, D, 8, mean, inverse, constant, out, log_factors);
        else
            hmm_diagonal_rows(x, n, D, K, mean, inverse, constant, out, log_factors);
    }

    /* Posterior-weighted sums of x and x^2 over n rows, per feature and state, added to
       obs and obs_squared (D, K). Each of the D K sums runs over the rows in order, as in
       block_statistics, but the rows go outermost so the sums are independent chains the
       processor overlaps. Needs D K <= HMM_MAX_SUMS. Built like hmm_diagonal_block, but
       without loop vectorisation: across rows GCC vectorises it badly (shuffles and spills),
       while within a row the loop over states vectorises as straight-line code. */
    #define HMM_MAX_SUMS 64
    static HMM_ALWAYS_INLINE void hmm_diagonal_sums(
            const double* x, Py_ssize_t n, const Py_ssize_t D, const Py_ssize_t K,
            const double* gammas, double* obs, double* obs_squared) {
        double sums[HMM_MAX_SUMS], squares[HMM_MAX_SUMS];
        Py_ssize_t r, d, k;
        for (k = 0; k < D * K; k++) {
            sums[k] = 0.0;
            squares[k] = 0.0;
        }
        for (r = 0; r < n; r++) {
            const double* gamma = gammas + r * K;
            const double* row = x + r * D;
            for (d = 0; d < D; d++) {
                const double value = row[d];
                for (k = 0; k < K; k++) {
                    const double g = gamma[k] * value;
                    sums[d * K + k] += g;
                    squares[d * K + k] += g * value;
                }
            }
        }
        for (k = 0; k < D * K; k++) {
            obs[k] += sums[k];
            obs_squared[k] += squares[k];
        }
    }
    #if defined(__GNUC__) && !defined(__clang__)
    __attribute__((optimize("no-tree-loop-vectorize")))
    #if defined(__x86_64__) && defined(__linux__)
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
    #endif
    #endif
    static void hmm_diagonal_statistics(const double* x, Py_ssize_t n, Py_ssize_t D,
                                        Py_ssize_t K, const double* gammas, double* obs,
                                        double* obs_squared) {
        /* constant K and, up to four features, constant D: the sums then stay in registers */
        #define HMM_SUMS_FOR_K(KK) \
            if (D == 1) hmm_diagonal_sums(x, n, 1, KK, gammas, obs, obs_squared); \
            else if (D == 2) hmm_diagonal_sums(x, n, 2, KK, gammas, obs, obs_squared); \
            else if (D == 3) hmm_diagonal_sums(x, n, 3, KK, gammas, obs, obs_squared); \
            else if (D == 4) hmm_diagonal_sums(x, n, 4, KK, gammas, obs, obs_squared); \
            else hmm_diagonal_sums(x, n, D, KK, gammas, obs, obs_squared);
        if (K == 2) { HMM_SUMS_FOR_K(2) }
        else if (K == 3) { HMM_SUMS_FOR_K(3) }
        else if (K == 4) { HMM_SUMS_FOR_K(4) }
        else if (K == 8) { HMM_SUMS_FOR_K(8) }
        else hmm_diagonal_sums(x, n, D, K, gammas, obs, obs_squared);
        #undef HMM_SUMS_FOR_K
    }
    """
    Py_ssize_t HMM_MAX_SUMS
    void hmm_diagonal_statistics(const double* x, Py_ssize_t n, Py_ssize_t D, Py_ssize_t K,
                                 const double* gammas, double* obs,
                                 double* obs_squared) noexcept nogil
    void hmm_exp_relative(double* v, Py_ssize_t n, double floor) noexcept nogil
    void hmm_diagonal_block(const double* x, Py_ssize_t n, Py_ssize_t D, Py_ssize_t K,
                            const double* mean, const double* inverse,
                            const double* constant, double* out,
                            double* log_factors) noexcept nogil


cdef inline bint rescale_from_logs(Py_ssize_t K, double* out,
                                   double* log_factor) noexcept nogil:
    """Turn log probabilities into probabilities divided by the largest; False if all -inf."""
    cdef Py_ssize_t k
    cdef double peak = -INFINITY
    for k in range(K):
        peak = out[k] if out[k] > peak else peak
    if peak == -INFINITY:
        return False
    for k in range(K):
        out[k] = exp(out[k] - peak)
    log_factor[0] = peak
    return True


cdef inline bint table_emission_probs(Py_ssize_t K, const Emissions* em, Py_ssize_t t,
                                      double* out) noexcept nogil:
    """Emission probabilities of row t from the lookup tables.

    Returns False when row t needs the log-space path: Gaussian emissions, or a Poisson count
    beyond the table.
    """
    cdef Py_ssize_t D = em.n_features, d, k
    cdef const int64_t* x
    cdef const double* row
    cdef int64_t count
    if em.kind == POISSON:
        x = em.counts + t * D
        count = x[0]
        if count >= em.table_size:
            return False
        row = em.prob_table + count * K
        for k in range(K):
            out[k] = row[k]
        for d in range(1, D):
            count = x[d]
            if count >= em.table_size:
                return False
            row = em.prob_table + (d * em.table_size + count) * K
            for k in range(K):
                out[k] *= row[k]
        return True
    if em.kind == CATEGORICAL:
        row = em.prob_table + em.counts[t] * K
        for k in range(K):
            out[k] = row[k]
        return True
    return False


cdef inline bint log_space_emission_probs(Py_ssize_t K, const Emissions* em, Py_ssize_t t,
                                          double* out, double* log_factor,
                                          double* scratch) noexcept nogil:
    """Emission probabilities of row t divided by the largest, computed in log space.

    The log of the divisor goes to log_factor. Returns False when row t is impossible under
    every state.
    """
    cdef Py_ssize_t k
    cdef const double* row
    if em.cached_probs != NULL:
        row = em.cached_probs + t * K
        for k in range(K):
            out[k] = row[k]
        log_factor[0] = em.cached_log_factor[t]
        return em.cached_log_factor[t] > -INFINITY
    emission_log_probs(K, em, t, out, scratch)
    return rescale_from_logs(K, out, log_factor)


cdef inline void accumulate_emission_stats(Py_ssize_t K, const Emissions* em, Py_ssize_t t,
                                           const double* gamma, double* post,
                                           double* obs, double* obs_squared) noexcept nogil:
    """Add the posterior-weighted sufficient statistics of row t."""
    cdef Py_ssize_t D = em.n_features, d, e, k
    cdef double value, g
    cdef double* out
    cdef const double* x
    # A private copy of the posteriors for small K: the stores into the statistics cannot
    # alias it, so the compiler keeps it in registers instead of reloading it after each.
    cdef double local_gamma[SMALL_K]
    if K <= SMALL_K:
        for k in range(K):
            local_gamma[k] = gamma[k]
        gamma = &local_gamma[0]
    for k in range(K):
        post[k] += gamma[k]
    if em.kind == POISSON:
        for d in range(D):
            value = <double> em.counts[t * D + d]
            out = obs + d * K
            for k in range(K):
                out[k] += gamma[k] * value
    elif em.kind == CATEGORICAL:
        out = obs + em.counts[t] * K
        for k in range(K):
            out[k] += gamma[k]
    elif em.kind == GAUSSIAN:
        for d in range(D):
            value = em.values[t * D + d]
            for k in range(K):
                g = gamma[k] * value
                obs[d * K + k] += g
                obs_squared[d * K + k] += g * value
    else:
        x = em.values + t * D
        for d in range(D):
            value = x[d]
            for k in range(K):
                obs[d * K + k] += gamma[k] * value
        if em.n_squared_columns > 0:
            # Full and tied: upper triangle of x x^T, row by row, weighted by each state's
            # posterior.
            out = obs_squared
            for d in range(D):
                for e in range(d, D):
                    value = x[d] * x[e]
                    for k in range(K):
                        out[k] += gamma[k] * value
                    out += K


cdef inline Py_ssize_t padded(Py_ssize_t size) noexcept nogil:
    """size rounded up to whole 64-byte cache lines of doubles, plus one line: statistics
    blocks of different threads laid out at this stride never share a cache line (writes to a
    shared line would bounce it between the cores on every row)."""
    return (size + 7) // 8 * 8 + 8


cdef Py_ssize_t stats_size(const Emissions* em, Py_ssize_t n_classes) noexcept nogil:
    """Length of the flat statistics vector: start, transitions, post, obs, obs squared."""
    cdef Py_ssize_t K = em.n_states
    return K + n_classes * K * K + K + em.n_obs_columns * K + em.n_squared_columns * K


cdef inline double predict_and_weigh(Py_ssize_t K, const double* startprob,
                                     const double* prev, double prev_inverse,
                                     const double* trans, const double* trans_t,
                                     double* predicted, double* out) noexcept nogil:
    """out[j] *= P(state j | past), from startprob or from prev * prev_inverse times the
    transition matrix; returns the sum of out. predicted is scratch of K doubles.

    Up to four states the prediction is a dot product with each column (rows of trans_t);
    beyond, it is accumulated row by row of trans, which the compiler vectorises.
    """
    cdef Py_ssize_t i, j
    cdef const double* row
    cdef double a_i, s, total = 0.0
    if prev == NULL:
        for j in range(K):
            out[j] *= startprob[j]
            total += out[j]
        return total
    if K <= 4:
        for j in range(K):
            row = trans_t + j * K
            s = 0.0
            for i in range(K):
                s += prev[i] * row[i]
            predicted[j] = s
    else:
        for j in range(K):
            predicted[j] = 0.0
        for i in range(K):
            a_i = prev[i]
            row = trans + i * K
            for j in range(K):
                predicted[j] += a_i * row[j]
    for j in range(K):
        s = predicted[j] * out[j] * prev_inverse
        out[j] = s
        total += s
    return total


cdef struct ForwardBackwardJob:
    const Emissions* em             # IN emission parameters and observations
    Py_ssize_t t0                   # IN first row of the sequence
    Py_ssize_t t1                   # IN one past its last row
    const int64_t* classes          # IN (T,) transition class of the step into t, or NULL
    const double* startprob         # IN (K,)
    const double* transmat          # IN (C, K, K) [class, from, to]
    const double* transmat_t        # IN (C, K, K) transposed: [class, to, from]
    Py_ssize_t n_classes            # IN C
    double* alpha                   # OUT (T, K) scaled alphas, then posteriors
    double* scale                   # OUT (T,) scale factors, negated where log space was used
    double* stats                   # OUT flat statistics of this sequence, or NULL
    bint backward                   # IN run the backward pass
    double* work                    # scratch of 5 K + D K doubles
    double* loglik                  # OUT log-likelihood of the sequence
    double* lowest_log_factor       # OUT smallest log divisor of a row redone in log space


cdef struct ViterbiJob:
    const Emissions* em             # IN emission parameters and observations
    Py_ssize_t t0                   # IN first row
    Py_ssize_t t1                   # IN one past the last row
    const int64_t* classes          # IN (T,) or NULL
    const double* log_startprob     # IN (K,)
    const double* log_transmat_t    # IN (C, K, K) transposed: [c, to, from]
    int32_t* backpointers           # OUT (T, K)
    int64_t* path                   # OUT (T,)
    double* work                    # scratch of 3 K + D K doubles
    double* logprob                 # OUT log probability of the best path


cdef struct MeetingPoint:
    # Shared by the two threads of one split sequence (see meet_forward and meet_backward).
    Py_ssize_t forward_done         # rows below this have alpha and scale written
    Py_ssize_t backward_done        # rows from this up (and >= mid) have beta written
    Py_ssize_t failed               # set when the forward pass stops at an impossible row


cdef struct MeetForwardJob:
    const Emissions* em             # IN emission parameters and observations
    Py_ssize_t t0                   # IN first row of the sequence
    Py_ssize_t mid                  # IN first row whose statistics this pass accumulates
    Py_ssize_t t1                   # IN one past its last row
    const int64_t* classes          # IN (T,) or NULL
    const double* startprob         # IN (K,)
    const double* transmat          # IN (C, K, K) [class, from, to]
    const double* transmat_t        # IN (C, K, K) transposed: [class, to, from]
    Py_ssize_t n_classes            # IN C
    double* alpha                   # IN/OUT (T, K): alpha below mid; beta from mid up,
                                    #        replaced by the posteriors when posteriors is set
    double* scale                   # OUT (T,) scale factors, negated where log space was used
    double* stats                   # OUT statistics of rows mid..t1 - 1, or NULL
    bint posteriors                 # IN write the posteriors of rows mid..t1 - 1
    MeetingPoint* meeting           # IN/OUT progress of both passes
    double* work                    # scratch of D K + 1 doubles
    double* vectors                 # scratch of 5 K doubles
    double* block_alpha             # scratch of (MEET_BLOCK + 1) K doubles
    double* block_emission          # scratch of MEET_BLOCK K doubles
    double* block_gamma             # scratch of MEET_BLOCK K doubles
    double* loglik                  # OUT log-likelihood of the sequence
    double* lowest_log_factor       # OUT smallest log divisor of a row redone in log space


cdef struct MeetBackwardJob:
    const Emissions* em             # IN emission parameters and observations
    Py_ssize_t t0                   # IN first row of the sequence
    Py_ssize_t mid                  # IN rows below this get their statistics here
    Py_ssize_t t1                   # IN one past its last row
    const int64_t* classes          # IN (T,) or NULL
    const double* transmat_t        # IN (C, K, K) transposed: [class, to, from]
    Py_ssize_t n_classes            # IN C
    double* alpha                   # IN/OUT as in MeetForwardJob
    const double* scale             # IN (T,) scale factors of the forward pass
    double* stats                   # OUT statistics of rows t0..mid - 1, or NULL
    double* block_buffer            # scratch of 2 MEET_BLOCK K doubles
    MeetingPoint* meeting           # IN/OUT progress of both passes
    double* work                    # scratch of 3 K + D K + 1 doubles


cdef struct CacheJob:
    const Emissions* em             # IN emission parameters and observations
    Py_ssize_t first                # IN first row
    Py_ssize_t last                 # IN one past the last row
    double* out                     # OUT (T, K) emissions divided by the row's largest
    double* log_factors             # OUT (T,) log of that divisor
    double* work                    # scratch of D K doubles


ctypedef fused SequenceJob:
    ForwardBackwardJob
    ViterbiJob
    MeetForwardJob
    MeetBackwardJob
    CacheJob


cdef int64_t forward_backward_sequence(const StateCount* tag,
                                       const ForwardBackwardJob* job) noexcept nogil:
    """Scaled forward-backward over one sequence with the statistics accumulated on the way back.

    tag only selects the specialisation (it is NULL). Returns -1 on success, t when row t is
    impossible under every state, and -(t + 2) when row t is impossible given the states the
    transitions allow.
    """
    cdef const Emissions* em = job.em
    cdef Py_ssize_t t0 = job.t0, t1 = job.t1, n_classes = job.n_classes
    cdef const int64_t* classes = job.classes
    cdef const double* startprob = job.startprob
    cdef const double* transmat = job.transmat
    cdef const double* transmat_t = job.transmat_t
    cdef double* alpha = job.alpha
    cdef double* scale = job.scale
    cdef double* stats = job.stats
    cdef double* work = job.work
    cdef double* scratch = job.work + 5 * em.n_states
    cdef Py_ssize_t K = em.n_states if StateCount is StatesAny else sizeof(StateCount)
    cdef Py_ssize_t KK = K * K, t, i, j, cls = 0
    # The specialised kernels keep their K-vectors in local arrays, which nothing else can
    # alias, so the compiler may hold them in registers.
    cdef double local_vectors[5 * SMALL_K]
    cdef double* vectors = work if StateCount is StatesAny else &local_vectors[0]
    cdef double* predicted = vectors + 4 * K
    cdef double* current = vectors          # unnormalised alpha_t = c_t * scaled alpha_t
    cdef double* previous = vectors + K
    cdef double* beta = vectors + 2 * K
    cdef double* weighted = vectors + 3 * K
    cdef double* swap
    cdef double* row_alpha
    cdef const double* trans
    cdef const double* trans_t
    cdef const double* trans_row
    cdef double* acc
    cdef double* start_stats = NULL
    cdef double* trans_stats = NULL
    cdef double* post = NULL
    cdef double* obs = NULL
    cdef double* obs_squared = NULL
    cdef double log_factor, total, inverse = 1.0, running = 1.0, ll = 0.0, a_i, s
    cdef double lowest = 0.0
    cdef bint in_log_space

    # Forward pass: alpha_t = (alpha_{t-1} A) * b_t / c_t. The unnormalised vector is carried
    # to the next step, and 1 / c_t is applied there, so the division stays off the critical
    # path. Emissions come from tables; a row beyond the tables, or one so unlikely that c_t
    # could underflow, is redone in log space with the emissions divided by their largest value
    # (its scale is then stored negated so the backward pass recomputes it the same way).
    for t in range(t0, t1):
        cls = classes[t] if classes != NULL else 0
        trans = transmat + cls * KK
        trans_t = transmat_t + cls * KK
        in_log_space = not table_emission_probs(K, em, t, current)
        if not in_log_space:
            total = predict_and_weigh(K, startprob, previous if t > t0 else NULL, inverse,
                                      trans, trans_t, predicted, current)
            in_log_space = not total > TINY_PROBABILITY
        if in_log_space:
            if not log_space_emission_probs(K, em, t, current, &log_factor, scratch):
                return t
            ll += log_factor
            lowest = log_factor if log_factor < lowest else lowest
            total = predict_and_weigh(K, startprob, previous if t > t0 else NULL, inverse,
                                      trans, trans_t, predicted, current)
            if not total > 0.0:
                return -(t + 2)
        inverse = 1.0 / total
        row_alpha = alpha + t * K
        for j in range(K):
            row_alpha[j] = current[j] * inverse
        scale[t] = -total if in_log_space else total
        if total < TINY_PRODUCT:
            ll += log(total)
        else:
            running *= total
            if running < TINY_PRODUCT:
                ll += log(running)
                running = 1.0
        swap = previous
        previous = current
        current = swap
    ll += log(running)
    job.loglik[0] = ll
    job.lowest_log_factor[0] = lowest
    if not job.backward:
        return -1

    if stats != NULL:
        start_stats = stats
        trans_stats = stats + K
        post = trans_stats + n_classes * KK
        obs = post + K
        obs_squared = obs + em.n_obs_columns * K

    # Backward pass: beta_t = A (b_{t+1} beta_{t+1} / c_{t+1}), accumulated column by column of
    # A (rows of the transposed matrix); gamma_t = alpha_t beta_t replaces alpha_t, and
    # xi_t = alpha_t (x) weighted_{t+1}, times A, is summed per class (the product with A is
    # applied once by the caller).
    for i in range(K):
        beta[i] = 1.0
    if stats != NULL:
        accumulate_emission_stats(K, em, t1 - 1, alpha + (t1 - 1) * K, post, obs, obs_squared)
    for t in range(t1 - 2, t0 - 1, -1):
        total = scale[t + 1]
        if total > 0.0:
            table_emission_probs(K, em, t + 1, weighted)
            inverse = 1.0 / total
        else:
            log_space_emission_probs(K, em, t + 1, weighted, &log_factor, scratch)
            inverse = -1.0 / total
        for j in range(K):
            weighted[j] *= inverse * beta[j]
        cls = classes[t + 1] if classes != NULL else 0
        trans = transmat_t + cls * KK
        row_alpha = alpha + t * K
        if stats != NULL:
            acc = trans_stats + cls * KK
            for i in range(K):
                a_i = row_alpha[i]
                for j in range(K):
                    acc[i * K + j] += a_i * weighted[j]
        for i in range(K):
            beta[i] = 0.0
        for j in range(K):
            s = weighted[j]
            trans_row = trans + j * K
            for i in range(K):
                beta[i] += trans_row[i] * s
        for i in range(K):
            row_alpha[i] *= beta[i]
        if stats != NULL:
            accumulate_emission_stats(K, em, t, row_alpha, post, obs, obs_squared)
    if stats != NULL:
        row_alpha = alpha + t0 * K
        for i in range(K):
            start_stats[i] += row_alpha[i]
    return -1


# A long single sequence is split across two threads that meet in the middle: one runs the
# forward pass from the first row, the other a backward pass, normalising each beta_t to sum
# to 1, from the last. Each stores its vectors for the half the other will need (alpha below
# the middle row mid, beta from mid up, both in the one (T, K) array) and, on reaching the
# other half, accumulates that half's statistics on the way, reading the vectors the other
# stored there. Every row's emissions and vectors are so computed once, and no pass is
# repeated. With alpha_t scaled to sum to 1 and beta_t any positive multiple of the backward
# vector (its scale drifts and is reset only when it nears the ends of the double range), gamma_t = alpha_t beta_t / s_t and xi_t(i, j) = alpha_t(i) A_ij b_{t+1}(j)
# beta_{t+1}(j) / (c_{t+1} s_{t+1}), where s_t = sum_k alpha_t(k) beta_t(k). The halves'
# statistics are summed in a fixed order, so the result does not depend on timing.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #endif
    #include <sched.h>
    static int hmm_team_size(void) {
    #ifdef _OPENMP
        return omp_get_num_threads();
    #else
        return 1;
    #endif
    }
    static Py_ssize_t hmm_load(const Py_ssize_t* where) {
        return __atomic_load_n(where, __ATOMIC_ACQUIRE);
    }
    static void hmm_store(Py_ssize_t* where, Py_ssize_t value) {
        __atomic_store_n(where, value, __ATOMIC_RELEASE);
    }
    static void hmm_pause(int spins) {
        if (spins > 100) sched_yield();
    }
    """
    int hmm_team_size() noexcept nogil
    Py_ssize_t hmm_load(const Py_ssize_t* where) noexcept nogil
    void hmm_store(Py_ssize_t* where, Py_ssize_t value) noexcept nogil
    void hmm_pause(int spins) noexcept nogil

# The backward pass of a split sequence lets the scale of beta drift between these bounds.
cdef double RESCALE_BELOW = 1e-100
cdef double RESCALE_ABOVE = 1e100
# Progress is published every this many rows (a power of two), so the other thread rarely
# has to read the shared line.
cdef Py_ssize_t PUBLISH_MASK = 1023
# The forward pass of a split sequence over cached emissions normalises its vector only when
# the vector's sum leaves these bounds (see cached_forward_range).
cdef double FORWARD_RESCALE_BELOW = 1e-30
cdef double FORWARD_RESCALE_ABOVE = 1e30
# Where a split sequence over cached emissions is cut: the fraction of its rows whose
# statistics the backward thread accumulates.
cdef double SPLIT_CACHED_FRACTION = 0.54
# Rows per block of the forward pass's statistics (see meet_forward).
cdef Py_ssize_t MEET_BLOCK = 256


cdef inline Py_ssize_t wait_until_at_most(const Py_ssize_t* progress, Py_ssize_t row,
                                          const Py_ssize_t* failed) noexcept nogil:
    """Wait until *progress <= row; returns the value seen, or -1 when *failed is set."""
    cdef Py_ssize_t seen = hmm_load(progress)
    cdef int spins = 0
    while seen > row:
        if hmm_load(failed):
            return -1
        spins += 1
        hmm_pause(spins)
        seen = hmm_load(progress)
    return seen


cdef inline Py_ssize_t wait_until_at_least(const Py_ssize_t* progress, Py_ssize_t row,
                                           const Py_ssize_t* failed) noexcept nogil:
    """Wait until *progress >= row; returns the value seen, or -1 when *failed is set."""
    cdef Py_ssize_t seen = hmm_load(progress)
    cdef int spins = 0
    while seen < row:
        if hmm_load(failed):
            return -1
        spins += 1
        hmm_pause(spins)
        seen = hmm_load(progress)
    return seen


cdef struct ForwardTotals:
    double loglik                   # log-likelihood so far, without running
    double running                  # product of recent scale factors
    double lowest                   # smallest log divisor of a row redone in log space


cdef int64_t cached_forward_range(
        const StateCount* tag, const Emissions* em, Py_ssize_t t0, Py_ssize_t first,
        Py_ssize_t last, const int64_t* classes, const double* startprob,
        const double* transmat, const double* transmat_t, const double* prev_alpha,
        double* alpha_rows, double* emission_rows, double* scale, ForwardTotals* totals,
        double* vectors) noexcept nogil:
    """forward_range for emissions read from the density cache (every row then counts as
    done in log space, so its scale factor is stored negated).

    The vector carried from row to row is alpha_t times an unknown positive number: it is
    normalised only when its sum leaves [FORWARD_RESCALE_BELOW, FORWARD_RESCALE_ABOVE], so no
    division lies on the path from one row to the next (the stored alphas and scale factors
    are those of the normalised recursion, up to rounding). A row whose scale factor is not
    above TINY_PROBABILITY is redone from the normalised alpha of the row before, as
    forward_range does it."""
    cdef Py_ssize_t K = em.n_states if StateCount is StatesAny else sizeof(StateCount)
    cdef Py_ssize_t KK = K * K, t, i, j, cls
    cdef double* carried = vectors
    cdef double* current = vectors + K
    cdef double* predicted = vectors + 2 * K
    cdef double* swap
    cdef double* row
    cdef double* emission
    cdef const double* probs
    cdef const double* previous_alpha
    cdef const double* trans
    cdef const double* trans_t
    cdef const double* column
    cdef double log_factor, total, inverse, a_i, s
    cdef double carried_sum = 1.0
    cdef double carried_inverse = 1.0
    cdef double running = totals.running, ll = totals.loglik, lowest = totals.lowest
    cdef int64_t failure = -1
    if first > t0:
        for j in range(K):
            carried[j] = prev_alpha[j]
    for t in range(first, last):
        cls = classes[t] if classes != NULL else 0
        trans = transmat + cls * KK
        trans_t = transmat_t + cls * KK
        probs = em.cached_probs + t * K
        log_factor = em.cached_log_factor[t]
        if not log_factor > -INFINITY:
            failure = t
            break
        if emission_rows != NULL:
            emission = emission_rows + (t - first) * K
            for j in range(K):
                emission[j] = probs[j]
        ll += log_factor
        lowest = log_factor if log_factor < lowest else lowest
        total = 0.0
        if t > t0:
            # predicted = carried A, as predict_and_weigh computes it
            if K <= 4:
                for j in range(K):
                    column = trans_t + j * K
                    s = 0.0
                    for i in range(K):
                        s += carried[i] * column[i]
                    predicted[j] = s
            else:
                for j in range(K):
                    predicted[j] = 0.0
                for i in range(K):
                    a_i = carried[i]
                    column = trans + i * K
                    for j in range(K):
                        predicted[j] += a_i * column[j]
            carried_sum = 0.0
            for j in range(K):
                current[j] = predicted[j] * probs[j]
                carried_sum += current[j]
            total = carried_sum * carried_inverse
        if not total > TINY_PROBABILITY:
            # the first row, or a step so unlikely that the unnormalised vector could lose
            # precision: from the normalised alpha of the row before
            previous_alpha = NULL
            if t > t0:
                previous_alpha = prev_alpha if t == first else alpha_rows + (t - 1 - first) * K
            for j in range(K):
                current[j] = probs[j]
            total = predict_and_weigh(K, startprob, previous_alpha, 1.0, trans, trans_t,
                                      predicted, current)
            if not total > 0.0:
                failure = -(t + 2)
                break
            carried_sum = total
        inverse = 1.0 / carried_sum
        row = alpha_rows + (t - first) * K
        for j in range(K):
            row[j] = current[j] * inverse
        scale[t] = -total
        if total < TINY_PRODUCT:
            ll += log(total)
        else:
            running *= total
            if running < TINY_PRODUCT:
                ll += log(running)
                running = 1.0
        if carried_sum < FORWARD_RESCALE_BELOW or carried_sum > FORWARD_RESCALE_ABOVE:
            for j in range(K):
                carried[j] = row[j]
            carried_inverse = 1.0
        else:
            swap = carried
            carried = current
            current = swap
            carried_inverse = inverse
    totals.loglik = ll
    totals.running = running
    totals.lowest = lowest
    return failure


cdef int64_t forward_range(
        const StateCount* tag, const Emissions* em, Py_ssize_t t0, Py_ssize_t first, Py_ssize_t last,
        const int64_t* classes, const double* startprob, const double* transmat,
        const double* transmat_t, const double* prev_alpha, double* alpha_rows,
        double* emission_rows, double* scale, ForwardTotals* totals, double* vectors,
        double* scratch) noexcept nogil:
    """Forward steps of rows first..last - 1 of the sequence that starts at t0.

    prev_alpha is alpha_{first-1} (scaled to sum to 1; unused when first == t0). Scaled alphas
    go to alpha_rows (the row of first, then consecutive rows), the emissions each row was
    weighed with to emission_rows (or nowhere when NULL), the scale factors to scale[t]
    (negated where log space was used); totals carries the log-likelihood across calls.
    vectors is scratch of 3 K doubles. Returns -1 or the failing row as
    forward_backward_sequence does. tag selects the specialisation for the number of states,
    as in the sequence kernels."""
    cdef Py_ssize_t K = em.n_states if StateCount is StatesAny else sizeof(StateCount)
    cdef Py_ssize_t KK = K * K, t, j, cls
    cdef double* current = vectors
    cdef double* previous = vectors + K
    cdef double* predicted = vectors + 2 * K
    cdef double* swap
    cdef double* row
    cdef double* emission
    cdef double log_factor, total, inverse = 1.0, running = totals.running, ll = totals.loglik
    cdef double lowest = totals.lowest
    cdef bint in_log_space
    cdef int64_t failure = -1
    if em.cached_probs != NULL:
        return cached_forward_range(tag, em, t0, first, last, classes, startprob, transmat,
                                    transmat_t, prev_alpha, alpha_rows, emission_rows, scale,
                                    totals, vectors)
    if first > t0:
        for j in range(K):
            previous[j] = prev_alpha[j]
    for t in range(first, last):
        cls = classes[t] if classes != NULL else 0
        in_log_space = not table_emission_probs(K, em, t, current)
        if emission_rows != NULL and not in_log_space:
            emission = emission_rows + (t - first) * K
            for j in range(K):
                emission[j] = current[j]
        if not in_log_space:
            total = predict_and_weigh(K, startprob, previous if t > t0 else NULL, inverse,
                                      transmat + cls * KK, transmat_t + cls * KK, predicted,
                                      current)
            in_log_space = not total > TINY_PROBABILITY
        if in_log_space:
            if not log_space_emission_probs(K, em, t, current, &log_factor, scratch):
                failure = t
                break
            if emission_rows != NULL:
                emission = emission_rows + (t - first) * K
                for j in range(K):
                    emission[j] = current[j]
            ll += log_factor
            lowest = log_factor if log_factor < lowest else lowest
            total = predict_and_weigh(K, startprob, previous if t > t0 else NULL, inverse,
                                      transmat + cls * KK, transmat_t + cls * KK, predicted,
                                      current)
            if not total > 0.0:
                failure = -(t + 2)
                break
        inverse = 1.0 / total
        row = alpha_rows + (t - first) * K
        for j in range(K):
            row[j] = current[j] * inverse
        scale[t] = -total if in_log_space else total
        if total < TINY_PRODUCT:
            ll += log(total)
        else:
            running *= total
            if running < TINY_PRODUCT:
                ll += log(running)
                running = 1.0
        swap = previous
        previous = current
        current = swap
    totals.loglik = ll
    totals.running = running
    totals.lowest = lowest
    return failure


cdef void block_statistics(
        const StateCount* tag, const Emissions* em, Py_ssize_t n_classes, double* stats,
        const double* gammas, Py_ssize_t first, Py_ssize_t n_rows,
        const double* lefts, const double* rights, Py_ssize_t n_transitions,
        const int64_t* classes, Py_ssize_t class_row, Py_ssize_t class_step) noexcept nogil:
    """Add the statistics of a block of rows to stats (laid out as forward_backward says).

    gammas holds the posteriors of rows first..first + n_rows - 1, one after another.
    Transition r adds the outer product of lefts[r] and rights[r] (K each) to the counts of
    class classes[class_row + r class_step] (class 0 without classes). The sums run over the
    block in local accumulators, which the compiler keeps in registers, instead of updating
    stats in memory row by row. tag selects the specialisation for the number of states."""
    cdef Py_ssize_t K = em.n_states if StateCount is StatesAny else sizeof(StateCount)
    cdef Py_ssize_t KK = K * K, D = em.n_features, r, i, j, k, d, e
    cdef double* trans_stats = stats + K
    cdef double* post = trans_stats + n_classes * KK
    cdef double* obs = post + K
    cdef double* obs_squared = obs + em.n_obs_columns * K
    cdef double local_transitions[SMALL_K * SMALL_K]
    cdef double sums[SMALL_K]
    cdef double squares[SMALL_K]
    cdef const double* left
    cdef const double* right
    cdef const double* gamma
    cdef const double* x
    cdef double* acc
    cdef double a_i, value, g
    if K > SMALL_K or em.kind == CATEGORICAL:
        for r in range(n_rows):
            accumulate_emission_stats(K, em, first + r, gammas + r * K, post, obs, obs_squared)
    else:
        for k in range(K):
            sums[k] = 0.0
        for r in range(n_rows):
            gamma = gammas + r * K
            for k in range(K):
                sums[k] += gamma[k]
        for k in range(K):
            post[k] += sums[k]
        if em.kind == GAUSSIAN and D * K <= HMM_MAX_SUMS:
            # the same sums, with every feature's and state's sum a chain of its own
            hmm_diagonal_statistics(em.values + first * D, n_rows, D, K, gammas, obs,
                                    obs_squared)
        else:
            for d in range(D):
                for k in range(K):
                    sums[k] = 0.0
                    squares[k] = 0.0
                if em.kind == POISSON:
                    for r in range(n_rows):
                        value = <double> em.counts[(first + r) * D + d]
                        gamma = gammas + r * K
                        for k in range(K):
                            sums[k] += gamma[k] * value
                elif em.kind == GAUSSIAN:
                    for r in range(n_rows):
                        value = em.values[(first + r) * D + d]
                        gamma = gammas + r * K
                        for k in range(K):
                            g = gamma[k] * value
                            sums[k] += g
                            squares[k] += g * value
                    for k in range(K):
                        obs_squared[d * K + k] += squares[k]
                else:
                    for r in range(n_rows):
                        value = em.values[(first + r) * D + d]
                        gamma = gammas + r * K
                        for k in range(K):
                            sums[k] += gamma[k] * value
                for k in range(K):
                    obs[d * K + k] += sums[k]
        if em.n_squared_columns > 0 and em.kind != GAUSSIAN:
            # Full and tied: upper triangle of x x^T, row by row.
            acc = obs_squared
            for d in range(D):
                for e in range(d, D):
                    for k in range(K):
                        squares[k] = 0.0
                    for r in range(n_rows):
                        x = em.values + (first + r) * D
                        value = x[d] * x[e]
                        gamma = gammas + r * K
                        for k in range(K):
                            squares[k] += gamma[k] * value
                    for k in range(K):
                        acc[k] += squares[k]
                    acc += K
    if classes == NULL and K <= SMALL_K:
        for i in range(KK):
            local_transitions[i] = 0.0
        for r in range(n_transitions):
            left = lefts + r * K
            right = rights + r * K
            for i in range(K):
                a_i = left[i]
                for j in range(K):
                    local_transitions[i * K + j] += a_i * right[j]
        for i in range(KK):
            trans_stats[i] += local_transitions[i]
    else:
        for r in range(n_transitions):
            left = lefts + r * K
            right = rights + r * K
            acc = trans_stats + (classes[class_row + r * class_step] if classes != NULL else 0) * KK
            for i in range(K):
                a_i = left[i]
                for j in range(K):
                    acc[i * K + j] += a_i * right[j]


cdef int64_t meet_forward(const StateCount* tag, const MeetForwardJob* job) noexcept nogil:
    """The forward pass of a split sequence: alpha below mid, statistics from mid up.

    From mid up the rows go in blocks: the forward steps of a block keep their alphas and
    emissions in a small buffer, then a second loop over the block adds its statistics (two
    short loops keep the vectors in registers better than one long one). Returns -1 or the
    failing row as forward_backward_sequence does (and then sets meeting.failed)."""
    cdef const Emissions* em = job.em
    cdef Py_ssize_t t0 = job.t0, t1 = job.t1, mid = job.mid
    cdef const int64_t* classes = job.classes
    cdef MeetingPoint* meeting = job.meeting
    cdef Py_ssize_t K = em.n_states if StateCount is StatesAny else sizeof(StateCount)
    cdef Py_ssize_t t, j, first, last, seen = t1
    cdef double local_vectors[3 * SMALL_K]
    cdef double* vectors = job.vectors if StateCount is StatesAny else &local_vectors[0]
    cdef double* gamma
    cdef double* weighted
    cdef double* block_alpha = job.block_alpha
    cdef double* block_emission = job.block_emission
    cdef double* block_gamma = job.block_gamma
    cdef double* scale_factors = job.scale
    cdef double* stats = job.stats
    cdef double* alpha = job.alpha
    cdef double* row
    cdef const double* current
    cdef const double* previous
    cdef const double* emission
    cdef double s, factor, c_t
    cdef bint posteriors = job.posteriors
    cdef int64_t failure = -1
    cdef ForwardTotals totals
    totals.loglik = 0.0
    totals.running = 1.0
    totals.lowest = 0.0
    first = t0
    while first < mid and failure == -1:
        last = min(mid, (first | PUBLISH_MASK) + 1)
        failure = forward_range(tag, em, t0, first, last, classes, job.startprob, job.transmat,
                                job.transmat_t, alpha + (first - 1) * K if first > t0 else alpha,
                                alpha + first * K,
                                NULL, scale_factors, &totals, vectors, job.work)
        if failure != -1:
            break
        if last == mid:
            # block_alpha row 0 holds alpha of the row before the block; copied before the
            # other thread may replace that row with its posteriors
            for j in range(K):
                block_alpha[j] = alpha[(mid - 1) * K + j]
        hmm_store(&meeting.forward_done, last)
        first = last
    while first < t1 and failure == -1:
        last = min(t1, first + MEET_BLOCK)
        failure = forward_range(tag, em, t0, first, last, classes, job.startprob, job.transmat,
                                job.transmat_t, block_alpha, block_alpha + K, block_emission,
                                scale_factors, &totals, vectors, job.work)
        if failure != -1:
            break
        if seen > first:
            seen = wait_until_at_most(&meeting.backward_done, first, &meeting.failed)
        for t in range(first, last):
            row = alpha + t * K         # beta_t (any positive multiple)
            previous = block_alpha + (t - first) * K
            current = previous + K
            emission = block_emission + (t - first) * K
            c_t = scale_factors[t]
            c_t = -c_t if c_t < 0.0 else c_t
            gamma = block_gamma + (t - first) * K
            weighted = block_emission + (t - first) * K     # replaces the emissions
            s = 0.0
            for j in range(K):
                gamma[j] = current[j] * row[j]
                s += gamma[j]
            factor = 1.0 / s
            for j in range(K):
                weighted[j] = emission[j] * row[j] * (factor / c_t)
                gamma[j] *= factor
            if posteriors:
                for j in range(K):
                    row[j] = gamma[j]
        if stats != NULL:
            block_statistics(tag, em, job.n_classes, stats, block_gamma, first, last - first,
                             block_alpha, block_emission, last - first, classes, first, 1)
        for j in range(K):
            block_alpha[j] = block_alpha[(last - first) * K + j]
        first = last
    if failure != -1:
        hmm_store(&meeting.failed, 1)
        return failure
    job.loglik[0] = totals.loglik + log(totals.running)
    job.lowest_log_factor[0] = totals.lowest
    return -1


cdef int64_t meet_backward(const StateCount* tag, const MeetBackwardJob* job) noexcept nogil:
    """The backward pass of a split sequence: beta from mid up, statistics below mid."""
    cdef const Emissions* em = job.em
    cdef Py_ssize_t t0 = job.t0, t1 = job.t1, mid = job.mid
    cdef const int64_t* classes = job.classes
    cdef MeetingPoint* meeting = job.meeting
    cdef Py_ssize_t K = em.n_states if StateCount is StatesAny else sizeof(StateCount)
    cdef Py_ssize_t KK = K * K, t, i, j, seen = t0
    cdef double local_vectors[2 * SMALL_K]
    cdef double* vectors = job.work if StateCount is StatesAny else &local_vectors[0]
    cdef double* beta = vectors
    cdef double* weighted = vectors + K
    cdef double* scratch = job.work + 3 * em.n_states
    cdef double* row
    cdef const double* trans
    cdef const double* trans_row
    cdef double total, peak, log_factor, w, s, s_next = 1.0, factor, c_next = 1.0
    cdef bint use_table
    cdef double* stats = job.stats
    cdef double* start_stats = job.stats
    cdef double* lefts = job.block_buffer
    cdef double* rights = job.block_buffer + MEET_BLOCK * K
    cdef double* left
    cdef double* right
    cdef Py_ssize_t block_rows = 0, n_transitions = 0, class_row = 0
    for i in range(K):
        beta[i] = 1.0 / K
    row = job.alpha + (t1 - 1) * K
    for i in range(K):
        row[i] = beta[i]
    for t in range(t1 - 2, t0 - 1, -1):
        if t < mid and seen < t + 2 and seen < mid:
            # alpha_t and the scale factor c_{t+1} must be written
            seen = wait_until_at_least(&meeting.forward_done, min(t + 2, mid), &meeting.failed)
            if seen == -1:
                return -1
        # weighted = b_{t+1} beta_{t+1}: below mid - 1 the emissions are taken as the forward
        # pass took them (its scale factor matches them), above as it suits this pass.
        if t + 1 < mid:
            c_next = job.scale[t + 1]
            use_table = c_next > 0.0
            if use_table:
                table_emission_probs(K, em, t + 1, weighted)
            else:
                log_space_emission_probs(K, em, t + 1, weighted, &log_factor, scratch)
                c_next = -c_next
        else:
            peak = 0.0
            if table_emission_probs(K, em, t + 1, weighted):
                for j in range(K):
                    peak = weighted[j] if weighted[j] > peak else peak
            if not peak > TINY_PROBABILITY:
                log_space_emission_probs(K, em, t + 1, weighted, &log_factor, scratch)
        for j in range(K):
            weighted[j] *= beta[j]
        trans = job.transmat_t + (classes[t + 1] if classes != NULL else 0) * KK
        for i in range(K):
            beta[i] = 0.0
        for j in range(K):
            w = weighted[j]
            trans_row = trans + j * K
            for i in range(K):
                beta[i] += trans_row[i] * w
        # Rescaled only when far from 1, so that no division waits on every step.
        total = 0.0
        for i in range(K):
            total += beta[i]
        if (total < RESCALE_BELOW or total > RESCALE_ABOVE) and total > 0.0:
            total = 1.0 / total
            for i in range(K):
                beta[i] *= total
        row = job.alpha + t * K
        if t >= mid:
            for i in range(K):
                row[i] = beta[i]
            if t == mid or (t & PUBLISH_MASK) == 0:
                hmm_store(&meeting.backward_done, t)
        else:
            # row holds alpha_t; it gets the posteriors, and the statistics of the rows go
            # in blocks (see block_statistics)
            s = 0.0
            for i in range(K):
                s += row[i] * beta[i]
            if stats != NULL and t + 1 < mid:
                if n_transitions == 0:
                    class_row = t + 1
                factor = 1.0 / (c_next * s_next)
                left = lefts + n_transitions * K
                right = rights + n_transitions * K
                for j in range(K):
                    right[j] = weighted[j] * factor
                for i in range(K):
                    left[i] = row[i]
                n_transitions += 1
            s_next = s
            factor = 1.0 / s
            for i in range(K):
                row[i] = row[i] * beta[i] * factor
            if stats != NULL:
                if t == t0:
                    for i in range(K):
                        start_stats[i] += row[i]
                block_rows += 1
                if block_rows == MEET_BLOCK or t == t0:
                    block_statistics(tag, em, job.n_classes, stats, row, t, block_rows, lefts,
                                     rights, n_transitions, classes, class_row, -1)
                    block_rows = 0
                    n_transitions = 0
    return -1


cdef int split_forward_backward(
        const Emissions* em, Py_ssize_t t0, Py_ssize_t t1, const int64_t* classes,
        const double* startprob, const double* transmat, const double* transmat_t,
        Py_ssize_t n_classes, double* alpha, double* scale, double* stats,
        Py_ssize_t size, double* loglik, double* lowest_log_factor, int64_t* status) except -1:
    """forward_backward for one sequence split across two threads (see above). When only one
    thread is granted, it runs the sequential kernel instead."""
    cdef Py_ssize_t K = em.n_states, D = em.n_features, i
    cdef double* halves = NULL
    cdef double* work = NULL
    cdef MeetingPoint* meeting = NULL
    cdef ForwardBackwardJob* sequential_job = NULL
    cdef MeetForwardJob* forward_job = NULL
    cdef MeetBackwardJob* backward_job = NULL
    cdef int thread
    halves = <double*> calloc(2 * padded(size), sizeof(double))
    meeting = <MeetingPoint*> calloc(1, sizeof(MeetingPoint))
    if halves == NULL or meeting == NULL:
        free(halves)
        free(meeting)
        raise MemoryError()
    # With cached emissions the forward thread's rows of statistics cost more than the
    # backward thread's (measured for Gaussian emissions), so it takes fewer of them.
    cdef Py_ssize_t mid = t0 + (t1 - t0) // 2
    if em.cached_probs != NULL:
        mid = t0 + <Py_ssize_t> ((t1 - t0) * SPLIT_CACHED_FRACTION)
        mid = max(t0 + 1, min(t1 - 1, mid))
    meeting.forward_done = t0
    meeting.backward_done = t1
    status[0] = -1
    try:
        with nogil, parallel(num_threads=2):
            thread = threadid()
            work = <double*> malloc((7 * K + D * K + 1) * sizeof(double))
            if hmm_team_size() < 2:
                if thread == 0:
                    sequential_job = <ForwardBackwardJob*> calloc(1, sizeof(ForwardBackwardJob))
                    sequential_job.em = em
                    sequential_job.t0 = t0
                    sequential_job.t1 = t1
                    sequential_job.classes = classes
                    sequential_job.startprob = startprob
                    sequential_job.transmat = transmat
                    sequential_job.transmat_t = transmat_t
                    sequential_job.n_classes = n_classes
                    sequential_job.alpha = alpha
                    sequential_job.scale = scale
                    sequential_job.stats = halves if stats != NULL else NULL
                    sequential_job.backward = True
                    sequential_job.work = work
                    sequential_job.loglik = loglik
                    sequential_job.lowest_log_factor = lowest_log_factor
                    status[0] = run_specialised(sequential_job)
                    free(sequential_job)
            elif thread == 0:
                forward_job = <MeetForwardJob*> calloc(1, sizeof(MeetForwardJob))
                forward_job.em = em
                forward_job.t0 = t0
                forward_job.mid = mid
                forward_job.t1 = t1
                forward_job.classes = classes
                forward_job.startprob = startprob
                forward_job.transmat = transmat
                forward_job.transmat_t = transmat_t
                forward_job.n_classes = n_classes
                forward_job.alpha = alpha
                forward_job.scale = scale
                forward_job.stats = halves + padded(size) if stats != NULL else NULL
                forward_job.posteriors = stats == NULL
                forward_job.meeting = meeting
                forward_job.work = work
                forward_job.vectors = work + D * K + 1
                forward_job.block_alpha = <double*> malloc(
                    (3 * MEET_BLOCK + 1) * K * sizeof(double))
                forward_job.block_emission = forward_job.block_alpha + (MEET_BLOCK + 1) * K
                forward_job.block_gamma = forward_job.block_emission + MEET_BLOCK * K
                forward_job.loglik = loglik
                forward_job.lowest_log_factor = lowest_log_factor
                status[0] = run_specialised(forward_job)
                free(forward_job.block_alpha)
                free(forward_job)
            elif thread == 1:
                backward_job = <MeetBackwardJob*> calloc(1, sizeof(MeetBackwardJob))
                backward_job.em = em
                backward_job.t0 = t0
                backward_job.mid = mid
                backward_job.t1 = t1
                backward_job.classes = classes
                backward_job.transmat_t = transmat_t
                backward_job.n_classes = n_classes
                backward_job.alpha = alpha
                backward_job.scale = scale
                backward_job.stats = halves if stats != NULL else NULL
                backward_job.meeting = meeting
                backward_job.work = work
                backward_job.block_buffer = <double*> malloc(2 * MEET_BLOCK * K * sizeof(double))
                run_specialised(backward_job)
                free(backward_job.block_buffer)
                free(backward_job)
            free(work)
        if stats != NULL and status[0] == -1:
            for i in range(size):
                stats[i] += halves[i] + halves[padded(size) + i]
    finally:
        free(halves)
        free(meeting)
    return 0



def forward_backward(
        EmissionModel model,
        const int64_t[::1] starts,          # IN (S,) first row of each sequence
        const int64_t[::1] ends,            # IN (S,) one past the last row of each sequence
        const int64_t[::1] classes,         # IN (T,) transition classes, or empty
        const double[::1] startprob,        # IN (K,)
        const double[:, :, ::1] transmat,   # IN (C, K, K)
        const double[:, :, ::1] transmat_t, # IN (C, K, K) transmat transposed per class
        double[:, ::1] alpha,               # OUT (T, K) posteriors when backward is set
        double[::1] scale,                  # OUT (T,) scale factors
        double[::1] stats,                  # OUT flat summed statistics, or empty
        double[::1] logliks,                # OUT (S,) log-likelihood per sequence
        double[::1] lowest_log_factors,     # OUT (S,) smallest log divisor of a row redone
                                            #     in log space (0 when none was)
        int64_t[::1] status,                # OUT (S,) -1, or the failing row (see above)
        bint backward,                      # IN run the backward pass
        int n_threads,                      # IN threads over sequences
        bint split=False,                   # IN split the one sequence across two threads
):
    """Run the fused forward-backward over every sequence.

    With ``split`` (one sequence of at least two rows, backward set) the forward and backward
    passes run at the same time on two threads, each accumulating the statistics of the half
    it reaches second; for a fit (``stats`` given) ``alpha`` then holds no posteriors.

    With a non-empty ``stats`` the sufficient statistics are accumulated: start (K), per-class
    transition products (C*K*K, still to be multiplied by transmat), post (K), obs
    (n_obs_columns*K, feature-major) and, for Gaussian, second moments (n_squared_columns*K).
    """
    cdef const Emissions* em = &model.c
    cdef Py_ssize_t K = em.n_states, n_sequences = starts.shape[0]
    cdef Py_ssize_t n_rows = alpha.shape[0]
    cdef Py_ssize_t n_classes = transmat_t.shape[0]
    cdef Py_ssize_t size = stats_size(em, n_classes)
    cdef bint want_stats = stats.shape[0] > 0
    cdef const int64_t* class_ptr = &classes[0] if classes.shape[0] > 0 else NULL
    cdef Py_ssize_t n_groups = min(n_sequences, MAX_GROUPS)
    cdef Py_ssize_t g, s, i
    cdef double* group_stats = NULL
    cdef double* my_stats
    cdef double* work = NULL
    # Each thread fills its own job (a pointer assigned in the parallel block is private).
    cdef ForwardBackwardJob* job = NULL
    if want_stats and stats.shape[0] != size:
        raise ValueError(f"stats has length {stats.shape[0]}, expected {size}")
    if split and backward and n_threads > 1:
        if n_sequences != 1 or ends[0] - starts[0] < 2:
            raise ValueError("split is only for a single sequence of at least two rows")
        split_forward_backward(em, starts[0], ends[0], class_ptr, &startprob[0],
                               &transmat[0, 0, 0], &transmat_t[0, 0, 0], n_classes,
                               &alpha[0, 0], &scale[0], &stats[0] if want_stats else NULL,
                               size, &logliks[0], &lowest_log_factors[0], &status[0])
        return
    # group_first[g] is the first sequence of group g; a sequence belongs to the group its first
    # row falls in when the rows are cut into n_groups equal parts.
    cdef Py_ssize_t[::1] group_first = np.empty(n_groups + 1, dtype=np.intp)
    g = 0
    for s in range(n_sequences):
        while g <= n_groups - 1 and starts[s] * n_groups >= g * n_rows:
            group_first[g] = s
            g += 1
    while g <= n_groups:
        group_first[g] = n_sequences
        g += 1
    if want_stats:
        group_stats = <double*> calloc(n_groups * padded(size), sizeof(double))
        if group_stats == NULL:
            raise MemoryError()
    try:
        with nogil, parallel(num_threads=max(1, min(n_threads, n_groups))):
            work = <double*> malloc((5 * K + em.n_features * K) * sizeof(double))
            job = <ForwardBackwardJob*> malloc(sizeof(ForwardBackwardJob))
            job.em = em
            job.classes = class_ptr
            job.startprob = &startprob[0]
            job.transmat = &transmat[0, 0, 0]
            job.transmat_t = &transmat_t[0, 0, 0]
            job.n_classes = n_classes
            job.alpha = &alpha[0, 0]
            job.scale = &scale[0]
            job.backward = backward
            job.work = work
            for g in prange(n_groups, schedule="dynamic"):
                job.stats = group_stats + g * padded(size) if want_stats else NULL
                for s in range(group_first[g], group_first[g + 1]):
                    job.t0 = starts[s]
                    job.t1 = ends[s]
                    job.loglik = &logliks[s]
                    job.lowest_log_factor = &lowest_log_factors[s]
                    status[s] = run_specialised(job)
            free(job)
            free(work)
        if want_stats:
            for g in range(n_groups):
                my_stats = group_stats + g * padded(size)
                for i in range(size):
                    stats[i] += my_stats[i]
    finally:
        free(group_stats)


cdef int64_t viterbi_sequence(const StateCount* tag, const ViterbiJob* job) noexcept nogil:
    """Viterbi in log space over one sequence; returns -1 or the failing row as above."""
    cdef const Emissions* em = job.em
    cdef Py_ssize_t t0 = job.t0, t1 = job.t1
    cdef const int64_t* classes = job.classes
    cdef const double* log_startprob = job.log_startprob
    cdef const double* log_transmat_t = job.log_transmat_t
    cdef int32_t* backpointers = job.backpointers
    cdef int64_t* path = job.path
    cdef double* work = job.work
    cdef double* scratch = job.work + 3 * em.n_states
    cdef double* logprob = job.logprob
    cdef Py_ssize_t K = em.n_states if StateCount is StatesAny else sizeof(StateCount)
    cdef Py_ssize_t KK = K * K, t, i, j, best_state
    cdef double* delta = work
    cdef double* new_delta = work + K
    cdef double* log_emission = work + 2 * K
    cdef double* swap
    cdef const double* column
    cdef double best, value, peak
    cdef bint better
    cdef int32_t* pointers
    # Poisson densities by a direct call, which the compiler inlines (it may not inline
    # emission_log_probs in this loop).
    if em.kind == POISSON:
        poisson_log_probs(K, em, t0, log_emission)
    else:
        emission_log_probs(K, em, t0, log_emission, scratch)
    peak = -INFINITY
    for j in range(K):
        delta[j] = log_startprob[j] + log_emission[j]
        peak = delta[j] if delta[j] > peak else peak
    if peak == -INFINITY:
        for j in range(K):
            if log_emission[j] > -INFINITY:
                return -(t0 + 2)
        return t0
    for t in range(t0 + 1, t1):
        if em.kind == POISSON:
            poisson_log_probs(K, em, t, log_emission)
        else:
            emission_log_probs(K, em, t, log_emission, scratch)
        column = log_transmat_t + (classes[t] if classes != NULL else 0) * KK
        pointers = backpointers + t * K
        peak = -INFINITY
        for j in range(K):
            best = delta[0] + column[0]
            best_state = 0
            for i in range(1, K):
                value = delta[i] + column[i]
                better = value > best
                best = value if better else best
                best_state = i if better else best_state
            column += K
            pointers[j] = <int32_t> best_state
            new_delta[j] = best + log_emission[j]
            peak = new_delta[j] if new_delta[j] > peak else peak
        if peak == -INFINITY:
            for j in range(K):
                if log_emission[j] > -INFINITY:
                    return -(t + 2)
            return t
        swap = delta
        delta = new_delta
        new_delta = swap
    best = -INFINITY
    best_state = 0
    for j in range(K):
        if delta[j] > best:
            best = delta[j]
            best_state = j
    logprob[0] = best
    path[t1 - 1] = best_state
    for t in range(t1 - 1, t0, -1):
        path[t - 1] = backpointers[t * K + path[t]]
    return -1


cdef int64_t run_for_states(const StateCount* tag, const SequenceJob* job) noexcept nogil:
    """The kernel of the job's kind for the state count tag stands for."""
    if SequenceJob is ForwardBackwardJob:
        return forward_backward_sequence(tag, job)
    elif SequenceJob is ViterbiJob:
        return viterbi_sequence(tag, job)
    elif SequenceJob is MeetForwardJob:
        return meet_forward(tag, job)
    elif SequenceJob is MeetBackwardJob:
        return meet_backward(tag, job)
    else:
        return cache_rows(tag, job)


cdef int64_t run_specialised(const SequenceJob* job) noexcept nogil:
    """Run one sequence job with the kernel specialised for its number of states: a constant
    K of 2, 3, 4 or 8 lets the compiler unroll the loops over states; other K run generic."""
    cdef Py_ssize_t K = job.em.n_states
    if K == 2:
        return run_for_states(<States2*> NULL, job)
    if K == 3:
        return run_for_states(<States3*> NULL, job)
    if K == 4:
        return run_for_states(<States4*> NULL, job)
    if K == 8:
        return run_for_states(<States8*> NULL, job)
    return run_for_states(<StatesAny*> NULL, job)


def viterbi(
        EmissionModel model,
        const int64_t[::1] starts,              # IN (S,)
        const int64_t[::1] ends,                # IN (S,)
        const int64_t[::1] classes,             # IN (T,) or empty
        const double[::1] log_startprob,        # IN (K,)
        const double[:, :, ::1] log_transmat_t, # IN (C, K, K) transposed: [c, to, from]
        int32_t[:, ::1] backpointers,           # OUT (T, K) scratch
        int64_t[::1] path,                      # OUT (T,) most likely states
        double[::1] logprobs,                   # OUT (S,) log probability of each best path
        int64_t[::1] status,                    # OUT (S,) -1 or the failing row
        int n_threads,                          # IN threads over sequences
):
    """Most likely state path of every sequence (Viterbi in log space)."""
    cdef const Emissions* em = &model.c
    cdef Py_ssize_t K = em.n_states, n_sequences = starts.shape[0], s
    cdef const int64_t* class_ptr = &classes[0] if classes.shape[0] > 0 else NULL
    cdef double* work = NULL
    cdef ViterbiJob* job = NULL
    with nogil, parallel(num_threads=max(1, min(n_threads, n_sequences))):
        work = <double*> malloc((3 * K + em.n_features * K) * sizeof(double))
        job = <ViterbiJob*> malloc(sizeof(ViterbiJob))
        job.em = em
        job.classes = class_ptr
        job.log_startprob = &log_startprob[0]
        job.log_transmat_t = &log_transmat_t[0, 0, 0]
        job.backpointers = &backpointers[0, 0]
        job.path = &path[0]
        job.work = work
        for s in prange(n_sequences, schedule="guided"):
            job.t0 = starts[s]
            job.t1 = ends[s]
            job.logprob = &logprobs[s]
            status[s] = run_specialised(job)
        free(job)
        free(work)


cdef int64_t cache_rows(const StateCount* tag, const CacheJob* job) noexcept nogil:
    """Emission probabilities of rows first..last - 1 divided by each row's largest, and the
    log of that divisor. The log densities of a block of rows go to out, then one vectorised
    loop exponentiates the block while it is still in the cache."""
    cdef const Emissions* em = job.em
    cdef Py_ssize_t K = em.n_states if StateCount is StatesAny else sizeof(StateCount)
    cdef Py_ssize_t t, k, block_first
    cdef double* out = job.out
    cdef double* log_factors = job.log_factors
    # The densities go to a local array first: stores into out could alias the parameters,
    # which the compiler would then reload after every one.
    cdef double local_row[SMALL_K]
    cdef double* row = job.work + em.n_features * em.n_states + 1 \
        if StateCount is StatesAny else &local_row[0]
    cdef double* target
    cdef double peak
    # Relative to the row's largest, probabilities below TINY_RELATIVE add nothing a double
    # can hold to any sum; as zeros they keep slow subnormal numbers out of the passes.
    cdef double floor = log(TINY_RELATIVE)
    block_first = job.first
    while block_first < job.last:
        if em.kind == GAUSSIAN:
            t = min(job.last, block_first + CACHE_BLOCK)
            hmm_diagonal_block(em.values + block_first * em.n_features, t - block_first,
                               em.n_features, K, em.rate, em.log_rate, em.state_constant,
                               out + block_first * K, log_factors + block_first)
            hmm_exp_relative(out + block_first * K, (t - block_first) * K, floor)
            block_first = t
            continue
        for t in range(block_first, min(job.last, block_first + CACHE_BLOCK)):
            # One call per kind, each small enough for the compiler to inline.
            if em.kind == GAUSSIAN:
                gaussian_log_probs(K, em, t, row)
            elif em.kind == GAUSSIAN_FULL:
                full_gaussian_log_probs(K, em, t, row, job.work)
            elif em.kind == GAUSSIAN_TIED:
                tied_gaussian_log_probs(K, em, t, row, job.work)
            else:
                emission_log_probs(K, em, t, row, job.work)
            peak = -INFINITY
            for k in range(K):
                peak = row[k] if row[k] > peak else peak
            log_factors[t] = peak
            target = out + t * K
            for k in range(K):
                target[k] = row[k] - peak
        t = min(job.last, block_first + CACHE_BLOCK)
        hmm_exp_relative(out + block_first * K, (t - block_first) * K, floor)
        block_first = t
    return -1


def cache_emissions(
        EmissionModel model,
        double[:, ::1] out,                 # OUT (T, K) emission probabilities divided by the
                                            #     row's largest (0 below TINY_RELATIVE)
        double[::1] log_factors,            # OUT (T,) log of that divisor (-inf if impossible)
        int n_threads,                      # IN threads over rows
):
    """Compute every row's emission probabilities relative to the row's largest, in parallel
    over chunks of rows, and let the forward-backward kernels of this model read them from
    ``out`` and ``log_factors`` instead of recomputing the densities in every pass."""
    cdef Emissions* em = &model.c
    cdef Py_ssize_t K = em.n_states, n_rows = out.shape[0], c
    cdef Py_ssize_t n_chunks = max(1, min(SPLIT_CHUNKS, n_rows))
    cdef CacheJob* job = NULL
    if out.shape[1] != K or log_factors.shape[0] != n_rows:
        raise ValueError("out must be (T, K) and log_factors (T,)")
    em.cached_probs = NULL
    em.cached_log_factor = NULL
    with nogil, parallel(num_threads=max(1, min(n_threads, n_chunks))):
        job = <CacheJob*> calloc(1, sizeof(CacheJob))
        job.em = em
        job.out = &out[0, 0]
        job.log_factors = &log_factors[0]
        job.work = <double*> malloc((em.n_features * K + K + 1) * sizeof(double))
        for c in prange(n_chunks, schedule="dynamic"):
            job.first = c * n_rows // n_chunks
            job.last = (c + 1) * n_rows // n_chunks
            run_specialised(job)
        free(job.work)
        free(job)
    use_cached_emissions(model, out, log_factors)


def use_cached_emissions(EmissionModel model, double[:, ::1] probs, double[::1] log_factors):
    """Let the forward-backward kernels of this model read the emission probabilities (divided
    by their row's largest) and the log divisors from probs and log_factors instead of
    recomputing the densities in every pass. Impossible rows have log factor -inf."""
    cdef Emissions* em = &model.c
    if probs.shape[1] != em.n_states or log_factors.shape[0] != probs.shape[0]:
        raise ValueError("probs must be (T, K) and log_factors (T,)")
    model._arrays.append(probs.base)
    model._arrays.append(log_factors.base)
    em.cached_probs = &probs[0, 0]
    em.cached_log_factor = &log_factors[0]


def log_emission_matrix(EmissionModel model, double[:, ::1] out):
    """Fill out (T, K) with the log emission probability of every row under every state."""
    cdef const Emissions* em = &model.c
    cdef Py_ssize_t t
    cdef double* scratch = <double*> malloc((em.n_features * em.n_states + 1) * sizeof(double))
    if scratch == NULL:
        raise MemoryError()
    with nogil:
        for t in range(out.shape[0]):
            emission_log_probs(em.n_states, em, t, &out[t, 0], scratch)
    free(scratch)


def sample_states(
        const double[::1] cum_startprob,        # IN (K,) cumulative start probabilities
        const double[:, :, ::1] cum_transmat,   # IN (C, K, K) cumulative over the last axis
        const int64_t[::1] classes,             # IN (n,) or empty
        const double[::1] uniforms,             # IN (n,) draws in [0, 1)
        int64_t[::1] states,                    # OUT (n,)
):
    """Draw a state path by inverse-CDF sampling from the uniforms."""
    cdef Py_ssize_t K = cum_startprob.shape[0], n = uniforms.shape[0], t, k, cls
    cdef const double* cum
    if n == 0:
        return
    with nogil:
        for t in range(n):
            if t == 0:
                cum = &cum_startprob[0]
            else:
                cls = classes[t] if classes.shape[0] > 0 else 0
                cum = &cum_transmat[cls, states[t - 1], 0]
            k = 0
            while k < K - 1 and uniforms[t] >= cum[k]:
                k += 1
            states[t] = k
