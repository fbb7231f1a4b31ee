"""How many torch threads a training or scoring call uses (`threads: 0` / `--threads auto`).

Torch's intra-op pool spin-waits between parallel regions. On tiny matrices (hidden <= 64, a few
thousand rows) the parallel regions are so short that the workers spend most of their time
spinning; when another process holds one of the cores, a spinning worker is descheduled in the
middle of a region and every operator waits for it: `shiftrec demo` on a 2-core machine with one
core busy went from 35 s to more than 10 minutes. `auto_threads` therefore picks

    min(cores we may run on, cores not busy with other work), and 1 for small work,

where the cores we may run on come from `os.sched_getaffinity` (containers, taskset), the busy
ones from the 1-minute load average (minus our own running thread), an explicit
OMP_NUM_THREADS caps it, and "small work" is hidden <= 64 with at most 4,096 rows per batch
(bench/threads.py measures the rule). `torch_threads(n)` sets the count for one call and puts
the previous one back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

#: work at or below both limits runs on one thread (the parallel regions are too short to pay)
SMALL_HIDDEN = 64
SMALL_ROWS = 4096


def available_cores() -> int:
    """Cores this process may run on (CPU affinity; the cgroup-limited count where exposed)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(n, 1)


def idle_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not busy with other processes: cores - (1-minute load average - our own 1), >= 1."""
    cores = available_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover
            load = 0.0
    others = max(0.0, load - 1.0)
    return max(1, min(cores, int(cores - others + 0.5)))


def auto_threads(hidden: int | None = None, batch_rows: int | None = None, *,
                 cores: int | None = None, load: float | None = None,
                 env: dict[str, str] | None = None) -> int:
    """The thread count for a call with this work size (see the module docstring)."""
    if hidden is not None and hidden <= SMALL_HIDDEN and (batch_rows or 0) <= SMALL_ROWS:
        return 1
    n = idle_cores(cores, load)
    omp = (os.environ if env is None else env).get("OMP_NUM_THREADS", "")
    if omp.strip().isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    return max(n, 1)


def resolve_threads(threads: int, hidden: int | None = None, batch_rows: int | None = None) -> int:
    """`threads` when > 0 (an explicit choice), else auto_threads for the work size."""
    if threads < 0:
        from shiftrec.errors import ConfigError

        raise ConfigError(f"threads must be >= 0 (0 = auto), got {threads}")
    return threads if threads > 0 else auto_threads(hidden, batch_rows)


@contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """torch.set_num_threads(n) for the block, then the previous count again."""
    import torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def module_hidden(module: object) -> int | None:
    """The model width of a torch module, read from its config (hidden) when it has one."""
    for holder in (module, getattr(module, "cfg", None), getattr(module, "config", None)):
        h = getattr(holder, "hidden", None)
        if isinstance(h, int):
            return h
    return None
