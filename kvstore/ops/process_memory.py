"""The resident memory of a process on this machine, from Linux's /proc: now,
its peak, and how much of it is anonymous (the heap: what the process's
own limits bound) rather than mapped files (LMDB's pages, which the kernel
can drop).

`reset_peak` starts a new peak (writing 5 to /proc/PID/clear_refs resets
VmHWM to the current RSS), so that a benchmark phase reports its own peak,
not that of the phases before it.
"""

from dataclasses import dataclass

KIB = 1024


@dataclass(frozen=True)
class Resident:
    rss: int  # bytes resident now (VmRSS)
    peak: int  # the most resident since start or the last reset_peak (VmHWM)
    anonymous: int  # of rss, anonymous memory (RssAnon): heap, not mapped files


def resident(pid: int) -> Resident:
    """Resident memory of `pid`; OSError if it is gone (or not Linux)."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon"):
                fields[name] = int(value.split()[0]) * KIB  # "1234 kB"
    return Resident(fields["VmRSS"], fields["VmHWM"], fields.get("RssAnon", fields["VmRSS"]))


def reset_peak(pid: int) -> bool:
    """Start a new peak for `pid`; False if this kernel or user may not."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True
