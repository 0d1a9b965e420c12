"""What the cluster did to heal itself during a chaos run, from the processes'
own counters: hints written and replayed, anti-entropy exchanges and the
keys they repaired, read repairs, tombstones purged, added up over every
process and every lifetime of it.

The counters live in each process's memory (its Prometheus /metrics) and
start again from zero when it restarts. So the run reads a process's
counters just before the nemesis SIGKILLs it, and every process's once more
when the Merkle roots have agreed or the wait for them gave up (before the
checker's own final reads), and adds up the lifetimes. Not counted: what a
process counted between that last reading and the kill (a few
milliseconds), the lifetime of a process that crashed on its own, and a
lifetime whose counters could not be read (listed).
A SIGSTOP pause resets nothing.

`RunCounters` is the arithmetic, pure; `end_lifetime` reads one process.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from chaos.cluster import Server

# Summary name -> Prometheus sample. Nodes have them all; coordinators only
# read repairs.
COUNTERS = {
    "hints_written": "kvstore_hints_written_total",
    "hints_replayed": "kvstore_hints_replayed_total",
    "anti_entropy_exchanges": "kvstore_anti_entropy_exchanges_total",
    "anti_entropy_keys_repaired": "kvstore_anti_entropy_keys_repaired_total",
    "read_repairs": "kvstore_read_repairs_total",
    "tombstones_purged": "kvstore_tombstones_purged_total",
}
SCRAPE_TIMEOUT = 1.0


@dataclass
class RunCounters:
    by_process: dict[str, Counter[str]] = field(default_factory=dict)  # id -> name -> sum
    lifetimes: int = 0  # process lifetimes whose counters were added
    unread: list[str] = field(default_factory=list)  # lifetimes whose counters were not read

    def end_lifetime(self, process: str, sample: Mapping[str, float] | None,
                     label: str = "") -> None:
        """Add the last reading of one lifetime of `process` (Prometheus sample
        -> value); None: it could not be read (`label` names that lifetime)."""
        if sample is None:
            self.unread.append(label or process)
            return
        self.lifetimes += 1
        totals = self.by_process.setdefault(process, Counter())
        for name, metric in COUNTERS.items():
            if metric in sample:
                totals[name] += int(sample[metric])

    def totals(self) -> dict[str, int]:
        """Summary name -> sum over every process and lifetime (0 if none counted)."""
        summed: Counter[str] = Counter()
        for totals in self.by_process.values():
            summed.update(totals)
        return {name: summed[name] for name in COUNTERS}


def scrape(metrics: str, names: tuple[str, ...], timeout: float) -> dict[str, float]:
    """The unlabelled samples `names` from http://METRICS/metrics; {} if unreachable."""
    try:
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except (OSError, ValueError):
        return {}
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name in names and not sample.labels}


async def end_lifetime(counters: RunCounters, server: Server) -> None:
    """Read `server`'s counters into `counters`: call it just before the
    process is killed (which resets them) and, for every process, at the end."""
    sample = await asyncio.to_thread(scrape, server.metrics, tuple(COUNTERS.values()),
                                     SCRAPE_TIMEOUT)
    # Every process serves at least kvstore_read_repairs_total: {} means unreachable.
    counters.end_lifetime(server.server_id, sample or None,
                          f"{server.server_id} (pid {server.pid})")
