"""What every command shares: checked argument types, `--threads`, CPU threading defaults, error printing.

Importing this module must stay cheap (no torch): `openmoshi <command> --help` only parses flags.

Threads. With OpenMP's default wait policy an idle thread spins before it sleeps, and on a machine whose cores
are busy with another process a team of spinning threads waits for a member that is not running: a streaming
step with 2 threads on 2 busy cores took 7-13x longer than with 1 (bench/busy.py; docs/benchmarks.md, "Busy
machine"). So `configure_threading_env()`, called by the dispatcher before torch is imported, makes idle OpenMP
threads sleep instead (OMP_WAIT_POLICY=PASSIVE, KMP_BLOCKTIME=0, unless the user set a policy). With that policy
2 threads beat 1 on the same busy 2-core machine (2-4x on the tiny chat step), so `apply_threads(n)` gives torch
`default_threads()` intra-op threads, the cores this process may use but at most 4 (per-frame matrices are
small: more threads would mostly add synchronisation), and one inter-op thread.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

MAX_DEFAULT_THREADS = 4
_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu)(:\d+)?$")
SEED_MAX = 2**64 - 1  # torch.Generator seeds are 64-bit


def configure_threading_env() -> None:
    """Before torch is imported: OpenMP threads sleep when idle (a busy neighbour does not stall them)."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ.setdefault("KMP_BLOCKTIME", "0")  # the same for Intel's OpenMP runtime, when torch uses it


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity), at most MAX_DEFAULT_THREADS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cores))


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None: default_threads()) and one inter-op thread. Returns the count."""
    import torch

    n = default_threads() if threads is None else threads
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first inter-op work: already set in this process
        pass
    return n


def error(message: str, code: int = 1) -> int:
    """Print `error: message` on stderr; returns the exit status to return from `main`."""
    print(f"error: {message}", file=sys.stderr)
    return code


# ---- argparse types: a bad value is a usage error (exit 2) with a message naming the flag --------------------

def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def thread_count(text: str) -> int:
    value = positive_int(text)
    if value > 1024:
        raise argparse.ArgumentTypeError(f"{value} threads is not a sensible count (1..1024)")
    return value


def seed(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be in 0..2**64-1, got {value}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


def positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def probability(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value:g}")
    return value


def device(text: str) -> str:
    """cpu, cuda, cuda:N, mps, xpu: a device that runs models (not `meta`, which has no data)."""
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def add_threads_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--threads", type=thread_count, default=None, metavar="N",
                        help="torch CPU threads (default: the cores, at most 4; idle threads sleep, so a busy "
                             "machine slows a command gracefully)")
