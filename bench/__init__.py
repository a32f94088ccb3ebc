"""A benchmark harness that trains the same models in PyTorch, Keras 3 and JAX/Flax.

This package is framework-neutral: importing it (or any module in it) imports no torch, jax,
tensorflow or keras. Frameworks are imported only by `backends/`, inside a run's own process.
"""

__version__ = "0.1.0"
