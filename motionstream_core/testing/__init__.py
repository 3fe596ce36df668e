"""Helpers for tests and benchmarks: random-weight models and the replay of recorded rollouts. Not used at run time."""
