"""The Raft core: one group member's consensus as a pure state machine, in
the shape of etcd-io/raft (see `node` for the API and the Ready cycle).

- `node`: `RawNode` (tick, step, propose, read_index, transfer_leadership,
  ready, advance) and the `Ready` it hands out;
- `raft`: roles, terms, elections (PreVote, CheckQuorum's lease), the
  follower's side of replication;
- `leadership`: the leader's side: replication with flow control, commit,
  reads, quorum checks, snapshots to send, leadership transfer;
- `log`, `storage`: the log over the `LogStorage` seam (and its in-memory form);
- `progress`, `reads`: the leader's bookkeeping per follower and per read;
- `messages`, `config`: the values and settings.

Pure: no asyncio, gRPC, LMDB, protobuf, clock or threads; the multi-Raft
host that drives it is `kvstore.leader.host`.
"""
