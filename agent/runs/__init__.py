"""Training runs: the run layout, executors that run it, and the orchestration that records it."""
