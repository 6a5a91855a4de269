"""Experiments: stable assignment (assignment.py) and the statistics of A/B tests (stats.py)."""
