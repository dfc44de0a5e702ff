"""Metrics, each matching its official implementation (see the module docstrings), plus evaluators."""
