"""A deterministic simulation of a cluster: the store's own code on virtual
time, a seeded network, in-memory disks, and a nemesis. The leaderless
mode here; leader mode (Raft) in `leader`, on the same loop and network.

- `loop`: asyncio's event loop on a virtual clock (no waiting, no I/O);
- `network`: delays, drops, duplicates, reordering, one-way and
  non-transitive cuts, paused processes;
- `store`, `node`: a storage node wired from the production classes
  (`LocalReplica`, `Coordinator` with the request machines, `HintReplayer`,
  `AntiEntropy`, `TombstoneCollector`, `Liveness`) over `SimPeers` and
  `kvstore.storage.memory_engine.MemoryEngine`; crash, restart, wipe, pause;
- `workload`: clients recording `chaos.history.Op`s;
- `faults`: the nemesis; `durability`: the oracle that counts the disks
  holding each acknowledged write;
- `run`: one seed from scenario to verdict, judged by `chaos.checkers`;
- `bugs`: deliberately broken variants the checks must catch (both modes');
- `trace`: what happened, at virtual time, and the store's log.

`python -m chaos.sim [--mode leader] --seed N` replays seed N exactly (see
`__main__`).
"""
