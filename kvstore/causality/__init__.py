"""Causal order of writes: dotted version vector sets and the hybrid logical clock."""
