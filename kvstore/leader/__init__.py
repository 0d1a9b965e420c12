"""Leader (Raft) replication: one Raft group per partition. `raft/` is the
pure Raft core; the multi-Raft host that drives it is to come."""
