"""Reproducible re-execution of sampled training steps (Numba kernels) and the verifier agent."""
