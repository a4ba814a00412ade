"""Benchmarks (`python -m hybrid_jax.bench`, `make bench`); PyTorch only for the peer."""
