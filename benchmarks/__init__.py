"""Benchmarks (`python -m benchmarks`, `make bench`); PyTorch only for the peer."""
