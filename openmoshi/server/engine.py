"""The batcher: one model instance, one `DuplexSession` of `max_sessions` rows, one step for every active
conversation each frame (80 ms), on a worker thread so that the event loop keeps moving websockets.

A `Conversation` is one row. The event loop side (`open`, `push_audio`, `close`) only touches queues under the
engine's lock; the worker thread alone touches the model: it applies joins and leaves between steps, takes one
frame from each active conversation's inbox (silence when none arrived: Moshi keeps talking, and the gap is
counted), steps the batch, and hands each conversation its frame of Moshi's audio and its text token back on the
event loop (`Conversation.outbox`). Opus is not done here: the connection decodes before `push_audio` and encodes
what it takes from the outbox, in a thread pool, so codecs never stall the step.

Bounds (EngineConfig): a conversation holds at most `max_input_backlog` frames of user audio (older ones are
dropped: a conversation that fell behind catches up instead of lagging forever) and `max_output_frames` frames of
Moshi's audio for its client (older ones are dropped: a client that does not read cannot grow the server's
memory). Drops and silence fills are counted per conversation and logged, so degradation is visible.

Steps are paced on a clock (`step_period`; the model's frame by default): when a step takes longer than the
period the schedule slips instead of bursting to catch up, and the slip is logged once per episode.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable

import numpy as np

from .config import EngineConfig
from .conversation import Conversation, deliver, joined, percentiles, sampling_with, wake
from .protocol import SessionParams

log = logging.getLogger("openmoshi.server")


class ServerFull(RuntimeError):
    """Every row is taken."""


class Engine:
    """Serves up to `config.max_sessions` conversations over one Mimi + LM pair (see the module docstring).

    `start(loop)` starts the worker thread (it delivers outputs on `loop`); `stop()` ends every conversation and
    joins the thread. `clock` and `sleep` are injectable for tests.
    """

    def __init__(self, mimi, lm, tokenizer, config: EngineConfig, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        from ..inference.sampling import SamplingConfig

        self.mimi, self.lm, self.tokenizer, self.config = mimi, lm, tokenizer, config
        self.frame_size = mimi.frame_size
        self.sample_rate = mimi.sample_rate
        self.frame_seconds = self.frame_size / self.sample_rate
        self.period = self.frame_seconds if config.step_period is None else config.step_period
        self.clock = clock
        self.text_sampling = config.text_sampling or SamplingConfig.text_default()
        self.audio_sampling = config.audio_sampling or SamplingConfig.audio_default()
        self._cond = threading.Condition()
        self._free = list(range(config.max_sessions))  # rows no conversation holds (lock)
        self._joining: list[Conversation] = []  # opened, not joined yet (lock)
        self._leaving: list[Conversation] = []  # closed, row not left yet (lock)
        self.draining = False  # set by `drain()`: no new conversations, the open ones go on
        self._applying = False  # the worker holds joins/leaves taken from the lists above (lock)
        self._active: dict[int, Conversation] = {}  # row -> conversation (worker thread; copies under lock)
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.step_times: collections.deque[float] = collections.deque(maxlen=config.step_history)
        self.steps = 0
        self.opened = 0
        self.closed = 0
        self.late_steps = 0  # steps that started more than a period after their slot
        self.session = None
        self._live: weakref.WeakSet[Conversation] = weakref.WeakSet()  # leak checks in tests

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._thread is not None:
            raise RuntimeError("engine already started")
        self._loop = loop
        self.session = self._new_session()
        self._thread = threading.Thread(target=self._run, name="openmoshi-engine", daemon=True)
        self._thread.start()

    def _new_session(self):
        """The batch's session: a DuplexSession on this process's thread, or in a child process
        (`config.model_process`, inference/session_process.py: the step out of the event loop's GIL)."""
        kwargs = dict(text_sampling=self.text_sampling, audio_sampling=self.audio_sampling, start_all=False,
                      compile=self.config.compile)  # compiling logs its time
        if self.config.model_process:
            from ..inference.session_process import ProcessSession

            session = ProcessSession(self.mimi, self.lm, self.config.max_sessions, **kwargs)
            log.info("model step in its own process (pid %s)", session.pid)
            return session
        from ..inference.session import DuplexSession

        return DuplexSession(self.mimi, self.lm, self.config.max_sessions, **kwargs)

    def stop(self, timeout: float = 30.0) -> None:
        """End the worker (after its current step) and release the models' streaming state."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.session is not None:
            self.session.close()
            self.session = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- event-loop side ------------------------------------------------------------------------------------
    def open(self, peer: str, params: SessionParams) -> Conversation:
        """Reserve a row for a new conversation (ServerFull when none is free); it joins before the next step and
        then `conversation.ready` is set. Call on the event loop."""
        text = sampling_with(self.text_sampling, params.text_temperature, params.text_topk)
        audio = sampling_with(self.audio_sampling, params.audio_temperature, params.audio_topk)
        with self._cond:
            if self._stopping:
                raise ServerFull("the server is shutting down")
            if self.draining:
                raise ServerFull("server draining: it takes no new conversations (try another replica)")
            row = self._take_row()
            cid = next(self._ids)
            seed = params.text_seed
            if seed is None:
                seed = secrets.randbits(63) if self.config.seed is None else (self.config.seed + cid) % (1 << 64)
            conv = Conversation(cid, row, peer, text, audio, seed, params.audio_seed)
            loop = asyncio.get_running_loop()
            conv.ready, conv.wake = loop.create_future(), asyncio.Event()
            self._joining.append(conv)
            self._live.add(conv)
            self.opened += 1
            self._cond.notify_all()
        return conv

    def _take_row(self) -> int:
        """A free row, else the row of a conversation that closed but was not left yet (the worker applies leaves
        before joins, so the new conversation starts clean). Under the lock."""
        if self._free:
            return self._free.pop(0)
        for conv in self._leaving:
            if not conv._released:
                conv._released = True  # its row goes to the new conversation instead of the free list
                self.closed += 1
                return conv.row
        raise ServerFull(f"server full: all {self.config.max_sessions} conversations are taken")

    def wait_settled(self, timeout: float = 10.0) -> bool:
        """Block until no join or leave is pending (tests: after a client closed, before reading counters)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._joining or self._leaving or self._applying) and self.running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return not (self._joining or self._leaving or self._applying)

    def push_audio(self, conv: Conversation, pcm: np.ndarray) -> int:
        """Add the user's samples [N] (any length); whole frames go to the inbox, the oldest dropped past the
        bound. Returns how many frames were dropped (the connection slows its reading by as much)."""
        if pcm.size == 0:
            return 0
        buf = np.concatenate([conv._pending, pcm]) if conv._pending.size else pcm
        n = buf.size // self.frame_size
        frames = [buf[i * self.frame_size:(i + 1) * self.frame_size] for i in range(n)]
        conv._pending = buf[n * self.frame_size:].copy()
        if not frames:
            return 0
        with self._cond:
            conv.inbox.extend(frames)
            conv.frames_in += len(frames)
            over = len(conv.inbox) - self.config.max_input_backlog
            if over > 0:
                for _ in range(over):
                    conv.inbox.popleft()
                if conv.dropped_in == 0 or (conv.dropped_in // 50) != ((conv.dropped_in + over) // 50):
                    log.warning("conversation %d (%s) is behind: dropped %d stale input frames (%d so far)",
                                conv.id, conv.peer, over, conv.dropped_in + over)
                conv.dropped_in += over
            self._cond.notify_all()
        return max(0, over)

    def close(self, conv: Conversation) -> None:
        """End a conversation (idempotent); its row is freed by the worker before the next step."""
        with self._cond:
            if conv._closing:
                return
            conv._closing = True
            conv.inbox.clear()
            if conv in self._joining:
                self._joining.remove(conv)
                self._release(conv)
            else:
                self._leaving.append(conv)
            self._cond.notify_all()

    def _release(self, conv: Conversation) -> None:
        """Give the conversation's row back (once). Under the lock."""
        if not conv._released:
            conv._released = True
            self._free.append(conv.row)
            self._free.sort()
            self.closed += 1

    def drain(self) -> None:
        """Take no new conversations (they get "server draining"; /api/health says 503); the open ones go on."""
        with self._cond:
            self.draining = True

    def live_conversations(self) -> int:
        """Conversation objects still referenced anywhere (after gc.collect(): 0 once every client is gone)."""
        return len(self._live)

    def stats(self) -> dict:
        """Counters for /api/status and tests."""
        with self._cond:
            free = len(self._free)
            joining, leaving = len(self._joining), len(self._leaving)
            times = list(self.step_times)
        return {
            "sessions_max": self.config.max_sessions, "sessions_in_use": self.config.max_sessions - free,
            "sessions_free": free, "draining": self.draining, "joining": joining, "leaving": leaving,
            "conversations_opened": self.opened, "conversations_closed": self.closed,
            "steps": self.steps, "late_steps": self.late_steps,
            "step_period_ms": round(self.period * 1000, 3), "frame_ms": round(self.frame_seconds * 1000, 3),
            "step_time_ms": percentiles(times),
        }

    # ---- worker thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        next_tick = self.clock()
        behind = False
        limit = self.config.joins_per_step or None
        joined = 0  # conversations joined since the last step (at most `limit`)

        def can_join() -> bool:  # a waiting conversation may join before this step (under the lock)
            return bool(self._joining) and (limit is None or joined < limit)
        while True:
            with self._cond:
                while not self._stopping and not (self._active or self._joining or self._leaving):
                    self._cond.wait()
                if self._stopping:
                    break
                n = len(self._joining) if limit is None else max(0, limit - joined)
                joining, self._joining = self._joining[:n], self._joining[n:]
                leaving, self._leaving = self._leaving, []
                self._applying = bool(joining or leaving)
            was_idle = not self._active
            self._apply(joining, leaving)
            joined += len(joining)
            if was_idle:
                next_tick = self.clock()  # the schedule starts with the first step, after its join
            del joining, leaving  # no reference to a closed conversation outlives its leave
            with self._cond:
                self._applying = False
                self._cond.notify_all()  # wait_settled
            if not self._active:
                joined = 0  # nothing to step: the next joins go now
                continue
            # pace: wait for this step's slot (a join or a stop wakes the wait, not a step)
            with self._cond:
                while not self._stopping and (delay := next_tick - self.clock()) > 0:
                    self._cond.wait(delay)
                if self._stopping:
                    break
                if self.config.wait_for_input > 0:
                    deadline = self.clock() + self.config.wait_for_input
                    while (not self._stopping and not self._leaving and not can_join()
                           and any(not c.inbox for c in self._active.values())
                           and (left := deadline - self.clock()) > 0):
                        self._cond.wait(left)
                if self._leaving or can_join():
                    continue  # apply them first: a closed conversation is not stepped again, a new one starts now
                frames = {row: (c.inbox.popleft() if c.inbox else None) for row, c in self._active.items()}
            late = self.clock() - next_tick
            if late > self.period and self.period > 0:
                self.late_steps += 1
                if not behind:
                    log.warning("the server is behind real time: a step started %.0f ms late (%d conversations)",
                                late * 1000, len(self._active))
                behind = True
                next_tick = self.clock()
            elif behind and late <= 0:
                behind = False
                log.info("the server is back to real time")
            next_tick += self.period
            try:
                joined = 0
                self._step(frames)
            except Exception as err:  # a server bug or device failure, not a client's input: end every conversation
                log.exception("model step failed; ending the %d active conversations", len(self._active))
                self._fail_all(f"server error: {type(err).__name__}: {err}")
                if not self._restart_if_dead():
                    break
        self._fail_all("the server is shutting down")
        with self._cond:
            pending, self._joining = self._joining + self._leaving, []
            self._leaving = []
            for conv in pending:
                conv.end_reason = conv.end_reason or "the server is shutting down"
                conv._closing = True
                self._release(conv)
                self._post(wake, conv)

    def _restart_if_dead(self) -> bool:
        """After a failed step: a model process that died (or hung and was stopped) is started again, so the
        server goes on with new conversations. False when that fails too (the engine then stops: health 503)."""
        if not self.config.model_process or getattr(self.session, "alive", True):
            return True
        log.error("the model process is gone; ending its conversations and starting a new one")
        self._fail_all("server error: the model process stopped")
        try:
            self.session.close()
            self.session = self._new_session()
        except Exception:
            log.exception("could not restart the model process; the engine stops")
            with self._cond:
                self._stopping = True
            return False
        return True

    def _apply(self, joining: list[Conversation], leaving: list[Conversation]) -> None:
        for conv in leaving:
            if self._active.get(conv.row) is conv:
                try:
                    self.session.leave(conv.row)
                except Exception:  # the model process died: the row is free anyway in the new one
                    log.exception("could not end conversation %d in the model", conv.id)
                    self._restart_if_dead()
                self._active.pop(conv.row, None)
            with self._cond:
                self._release(conv)
        for conv in joining:
            try:
                self.session.join(conv.row, text_sampling=conv.text_sampling, audio_sampling=conv.audio_sampling,
                                  seed=conv.seed, audio_seed=conv.audio_seed)
            except Exception as err:
                log.exception("could not start conversation %d", conv.id)
                self._restart_if_dead()
                conv.end_reason = f"server error: {type(err).__name__}: {err}"
                with self._cond:
                    conv._closing = True
                    self._release(conv)
                self._post(wake, conv)
                continue
            self._active[conv.row] = conv
            self._post(joined, conv)

    def _step(self, frames: dict[int, np.ndarray | None]) -> None:
        import torch

        B, fs = self.config.max_sessions, self.frame_size
        pcm = np.zeros((B, 1, fs), dtype=np.float32)
        for row, frame in frames.items():
            if frame is not None:
                pcm[row, 0] = frame
        start = time.perf_counter()
        out = self.session.step(torch.from_numpy(pcm).to(self.session.device))
        out_pcm = out.pcm[:, 0].float().cpu().numpy()
        text = out.text.cpu().tolist()
        # the text of a conversation's first generator step (run by its join) comes with its first frame
        prime = out.prime.text.cpu().tolist() if out.prime is not None else None
        elapsed = time.perf_counter() - start
        with self._cond:
            self.step_times.append(elapsed)
        self.steps += 1
        deliveries = []
        for row, conv in self._active.items():
            tokens = [int(text[row])]
            if conv.steps == 0 and prime is not None:
                tokens.insert(0, int(prime[row]))
            conv.steps += 1
            if frames.get(row) is None:
                conv.silence_fills += 1
            deliveries.append((conv, out_pcm[row].copy(), tokens))
        self._post(deliver, deliveries, self.config.max_output_frames)

    def _fail_all(self, reason: str) -> None:
        for row, conv in list(self._active.items()):
            try:
                self.session.leave(row)
            except Exception:  # the session itself may be what failed
                pass
            del self._active[row]
            with self._cond:
                conv._closing = True
                self._release(conv)
            conv.end_reason = reason  # after the release: whoever sees it can open a new conversation at once
            self._post(wake, conv)

    def _post(self, fn, *args) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop closed meanwhile
                pass
