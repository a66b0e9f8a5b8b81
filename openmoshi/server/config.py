"""Settings of `openmoshi serve`: one dataclass for the engine (the batcher) and one for the HTTP side.

The command fills them from flags; tests build them directly (a short step period, small queues). Nothing here
imports torch, so the command's `--help` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..inference.sampling import SamplingConfig

TOKEN_ENV = "OPENMOSHI_TOKEN"


@dataclass
class EngineConfig:
    """How the one model instance serves its conversations.

    `max_sessions`: rows of the batch (conversations at once). `step_period`: seconds between steps (None: the
    model's frame, 80 ms, i.e. real time; 0: as fast as possible, for tests and benchmarks). `max_input_backlog`:
    frames of a conversation's user audio waiting for a step; beyond it the oldest are dropped (a client that
    sends faster than real time, or a server that fell behind, catches up instead of lagging forever).
    `max_output_frames`: frames of Moshi's audio waiting to be sent to a client; beyond it the oldest are
    dropped (a client that does not read cannot make the server buffer without bound). `wait_for_input`: seconds
    a step may wait for every conversation's next frame before feeding silence (0 in production: Moshi keeps
    talking whether or not the user's audio arrived; tests use it for frame-exact conversations).
    `text_sampling` / `audio_sampling`: defaults a conversation's query may override; `seed`: None gives each
    conversation a random seed, an int a reproducible sequence (seed + conversation number).
    """

    max_sessions: int = 1
    step_period: float | None = None
    max_input_backlog: int = 12
    max_output_frames: int = 25
    wait_for_input: float = 0.0
    text_sampling: SamplingConfig | None = None
    audio_sampling: SamplingConfig | None = None
    seed: int | None = None
    step_history: int = 2000  # steps kept for the step-time percentiles of /api/status
    compile: bool = False  # the step through torch.compile (DuplexSession(compile=True)), compiled at start
    model_process: bool = False  # the step in a child process (inference/session_process.py), apart from the GIL
    # at most this many conversations join between two steps (0: all waiting): a join runs the conversation's first
    # generator step (tens of ms on a CPU), so several at once would push the next step past its slot
    joins_per_step: int = 1

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.step_period is not None and self.step_period < 0:
            raise ValueError(f"step_period must be >= 0 (or None for real time), got {self.step_period}")
        if self.max_input_backlog < 1 or self.max_output_frames < 1:
            raise ValueError("max_input_backlog and max_output_frames must be >= 1")
        if self.joins_per_step < 0:
            raise ValueError(f"joins_per_step must be >= 0 (0: no limit), got {self.joins_per_step}")
        if self.wait_for_input < 0:
            raise ValueError(f"wait_for_input must be >= 0, got {self.wait_for_input}")


@dataclass
class ServerConfig:
    """The HTTP/websocket side. `token`: every websocket must present it (query `token=` or `Authorization:
    Bearer`); None: open. `static_dir`: the web page's folder (None: the package's openmoshi/server/static).
    `stall_timeout`: seconds a client may leave Moshi's audio unread before it is closed. `max_unsent_bytes`:
    bytes waiting in a connection's socket buffer above which audio is held back (and, past the queue bound,
    dropped) instead of written. `send_buffer_bytes`: the kernel send buffer of each websocket (None: the OS's
    autotuning); audio sitting there is stale by the time a slow client reads it. `handshake_timeout`: seconds a
    new conversation may wait for its slot to start.
    """

    host: str = "127.0.0.1"
    port: int = 8998
    token: str | None = None
    model_name: str = "moshi"
    static_dir: Path | None = None
    stall_timeout: float = 10.0
    max_unsent_bytes: int = 32 * 1024
    send_buffer_bytes: int | None = None
    handshake_timeout: float = 30.0
    heartbeat: float | None = 30.0
    codec_threads: int = 2
    engine: EngineConfig = field(default_factory=EngineConfig)
