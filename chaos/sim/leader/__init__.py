"""Leader mode in the deterministic simulation: the real multi-Raft host,
Raft core, driver and request path of a leader-mode node on the virtual
loop and seeded network of `chaos.sim`, under a nemesis, judged by Raft's
safety properties and the linearizability of the client history.

- `node`: a leader-mode node wired from the production classes over an
  in-memory Raft store; crash (also between sending and persisting),
  restart, pause;
- `oracle`: Raft's safety properties, checked at every persist pass;
- `workload`: clients doing reads, writes, compare-and-set and deletes on
  a few hot keys;
- `faults`: the nemesis, aimed at leaders, with leader mode's own faults;
- `verdict`: the history judged against the apply order, the log, and
  linearizability;
- `run`: one seed from scenario to verdict;
- `bugs`: deliberately broken variants the checks must catch.

`python -m chaos.sim --mode leader --seed N` replays seed N exactly.
"""
