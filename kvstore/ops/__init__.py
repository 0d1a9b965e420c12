"""Operator tooling: the command line, local clusters, status, the benchmark,
starting processes and choosing ports."""
