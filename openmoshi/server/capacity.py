"""`--max-sessions` by default: how many conversations fit, in memory and in real time, measured at start.

Memory: the streaming state of one row (`DuplexSession.state_bytes`, KV ring caches and all; it does not grow
with the conversation) against half the free memory of the device. Time: a few warm steps with 1 and with 2 rows
give a per-row cost; the rows that keep a step under 80% of a frame (80 ms) are what fits in real time. The
smaller of the two, at least 1 and at most `cap`, with the reasons in words for the log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Capacity:
    sessions: int
    reason: str


def _free_bytes(device) -> int | None:
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _step_seconds(mimi, lm, rows: int, steps: int) -> tuple[float, int]:
    """(median seconds per step of a `rows`-row session, its state bytes)."""
    import torch

    from ..inference.session import DuplexSession

    with DuplexSession(mimi, lm, rows) as session:
        pcm = torch.zeros(rows, 1, mimi.frame_size, device=session.device)
        times = []
        for i in range(steps + 2):
            if session.device.type == "cuda":
                torch.cuda.synchronize(session.device)
            start = time.perf_counter()
            session.step(pcm)
            if session.device.type == "cuda":
                torch.cuda.synchronize(session.device)
            if i >= 2:  # warm-up
                times.append(time.perf_counter() - start)
        state = session.state_bytes()
    times.sort()
    return times[len(times) // 2], state


def estimate(mimi, lm, cap: int = 64, steps: int = 4) -> Capacity:
    """How many conversations fit (see the module docstring)."""
    frame = mimi.frame_size / mimi.sample_rate
    t1, state1 = _step_seconds(mimi, lm, 1, steps)
    t2, state2 = _step_seconds(mimi, lm, 2, steps)
    per_row_state = max(1, state2 - state1)
    free = _free_bytes(lm.device)
    by_memory = cap if free is None else max(1, int(0.5 * free // per_row_state))
    per_row_time = max(t2 - t1, 1e-6)
    budget = 0.8 * frame
    by_time = 1 if t1 >= budget else 1 + int((budget - t1) // per_row_time)
    sessions = max(1, min(cap, by_memory, by_time))
    why = (f"a step takes {t1 * 1000:.1f} ms for 1 conversation, {t2 * 1000:.1f} ms for 2 "
           f"(real time allows {by_time}); {per_row_state / 2**20:.1f} MiB of state per conversation"
           + (f" (memory allows {by_memory})" if free is not None else "")
           + (f"; capped at {cap}" if sessions == cap else ""))
    if t1 >= frame:
        why += f"; WARNING: one conversation is already slower than real time ({frame * 1000:.0f} ms frames)"
    return Capacity(sessions, why)
