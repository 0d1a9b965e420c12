"""The chaos suite of kvstore: a real local cluster, a concurrent client
workload, a nemesis that kills, pauses and restarts processes on a seeded
schedule, and checkers that read the recorded history afterwards.

    python -m chaos [--duration S] [--seed N] [--nodes 5] [--replicas 3] [--r 2] [--w 2]
                    [--clients K] [--converge-timeout S] [--data-dir DIR] [--keep]

Modules, one job each: `cluster` (the processes), `workload` (the clients),
`nemesis` (the faults), `history` (what happened), `convergence` (the wait
for the replicas' Merkle roots to agree, and the final state), `checkers`
(pure checks of the history and the final state), `counters` (the
processes' hint and repair counters over their lifetimes), `summary` (the
report and the pass rule), `run` (the order of the steps). A failing seed
replays the same fault schedule and the same client choices; timing on a
real machine still varies.
"""
