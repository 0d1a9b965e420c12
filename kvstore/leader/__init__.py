"""Leader (Raft) replication: one Raft group per partition. Not built yet."""
