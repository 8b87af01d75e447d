"""Hidden Markov models in Cython with hmmlearn's API and time-varying transitions."""

from hmm_core.hmm import CategoricalHMM, ConvergenceMonitor, GaussianHMM, PoissonHMM

__all__ = ["CategoricalHMM", "ConvergenceMonitor", "GaussianHMM", "PoissonHMM"]
