"""Leader (Raft) replication: one Raft group per partition. `raft/` is the
pure Raft core; the multi-Raft host over it (`host`, driven by `driver`)
runs every group of a node with one persist pass and one envelope per peer
at a time, over `lmdb_store`, with the KV state machine of
`state_machine`."""
