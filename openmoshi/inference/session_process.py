"""A `DuplexSession` in its own process: the model step runs apart from the caller's Python (and its GIL).

Why: a server steps the model on a worker thread while its event loop decodes and encodes Opus and moves
websockets. Both share one GIL, and inductor's CPU kernels (`compile=True`) hold it while they run, so on a
2-core machine the event loop's work (25-40 ms per step at 4 conversations) stops overlapping the step
(docs/nanomoshi_realtime.md). `ProcessSession` keeps the real session in a child process: the caller's thread
only waits on a pipe (the GIL released) while the child computes.

How:
- the child is started with torch.multiprocessing's "spawn" context (no fork of a threaded server). The models
  travel as arguments: their CPU tensors are moved to shared memory by torch's pickler, so the child reads the
  parent's weights without a copy or a second load, and any model the caller built (a LoRA merged, a test
  model) works, not only one loadable from files;
- per step, data goes through shared-memory tensors allocated once (user audio in [B, 1, F], Moshi's audio out
  [B, 1, F], text [B], audio codes [B, dep_q], user codes [B, n_user], the prime's text and audio); the pipe
  carries only a small command and an acknowledgement: one round trip per step;
- the child pins its torch threads (`threads`), compiles at start when asked, and ignores SIGINT and SIGTERM
  (Ctrl-C in a terminal, or a supervisor, signals the whole process group: the parent drains and shuts it down
  instead). It exits on `close()` and when the parent's end of the pipe closes (the parent died); `close()`
  kills it (SIGKILL) if it does not exit in time.

Errors: an exception in the child (e.g. a row out of range) is raised again in the parent, the same type with
the child's traceback as a note; the session stays usable (as an in-process session would). A child that dies
or does not answer within `timeout` seconds raises `ModelProcessError`, and the proxy is closed (the child
killed): a dead child is an error, never a hang.

A script that uses it needs the `if __name__ == "__main__":` guard (the spawned child imports the main module).
A session left open when the interpreter exits is killed at exit.

Outputs are the caller's own tensors (copied out of the shared buffers: ~30 KB at batch 4), so they stay valid
after the next step. `get_state` / `set_state` are not proxied.
"""

from __future__ import annotations

import atexit
import functools
import pickle
import threading
import time
import traceback
import weakref
from collections.abc import Iterable
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
import torch.multiprocessing as mp

from .compiled import log_done, log_start
from .generator import StepOutput
from .sampling import SamplingConfig
from .session import FrameOutput

__all__ = ["ModelProcessError", "ProcessSession"]


class ModelProcessError(RuntimeError):
    """The model process died, did not answer in time, could not start, or the session is closed."""


class _Buffers:
    """The shared-memory tensors of one session (allocated once by the parent, mapped by the child)."""

    def __init__(self, batch: int, frame_size: int, dep_q: int, n_user: int) -> None:
        def shared(*shape: int, dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros(*shape, dtype=dtype).share_memory_()

        self.pcm_in = shared(batch, 1, frame_size, dtype=torch.float32)
        self.pcm_out = shared(batch, 1, frame_size, dtype=torch.float32)
        self.text = shared(batch, dtype=torch.long)
        self.audio = shared(batch, dep_q, dtype=torch.long)
        self.user_codes = shared(batch, max(n_user, 1), dtype=torch.long)  # [B, 0] when n_user is 0
        self.n_user = n_user
        self.prime_text = shared(batch, dtype=torch.long)
        self.prime_audio = shared(batch, dep_q, dtype=torch.long)


def _pack_error(err: BaseException) -> tuple[bytes | None, str, str]:
    """An exception as (pickled exception or None, "Type: message", traceback text) for the pipe."""
    try:
        data = pickle.dumps(err)
        pickle.loads(data)  # some exceptions pickle but do not unpickle (required constructor arguments)
    except Exception:
        data = None
    return data, f"{type(err).__name__}: {err}", "".join(traceback.format_exception(err))


def _child(conn: Connection, mimi, lm, bufs: _Buffers, options: dict[str, Any], threads: int | None) -> None:
    """The child's main loop: build the session, then serve commands until "close" or the parent goes."""
    import signal

    # Ctrl-C (SIGINT) and a supervisor's SIGTERM reach the whole process group: the parent decides (it drains,
    # then closes us); a parent that died shows as the pipe's end of file.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if threads is not None:
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
    from .session import DuplexSession

    try:
        session = DuplexSession(mimi, lm, **options)
    except BaseException as err:
        conn.send(("error", _pack_error(err)))
        return
    conn.send(("ok", session.compile_seconds))
    try:
        while True:
            try:
                cmd, args, kwargs = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                break
            if cmd == "close":
                break
            try:
                if cmd == "step":
                    out = session.step(bufs.pcm_in if args[0] else None)
                    bufs.pcm_out.copy_(out.pcm)
                    bufs.text.copy_(out.text)
                    bufs.audio.copy_(out.audio)
                    if bufs.n_user:
                        bufs.user_codes.copy_(out.user_codes)
                    if out.prime is not None:
                        bufs.prime_text.copy_(out.prime.text)
                        bufs.prime_audio.copy_(out.prime.audio)
                    reply: Any = out.prime is not None
                elif cmd in ("join", "leave", "free_rows"):
                    reply = getattr(session, cmd)(*args, **kwargs)
                elif cmd == "active_rows":
                    reply = session.active_rows
                else:
                    raise ValueError(f"unknown command {cmd!r}")
            except Exception as err:
                conn.send(("error", _pack_error(err)))
                continue
            conn.send(("ok", reply))
    finally:
        session.close()
        conn.close()


class ProcessSession:
    """A `DuplexSession(mimi, lm, batch_size, ...)` run by a child process (see the module docstring).

    The same `join` / `leave` / `step` / `close` / context-manager API and the same results as the in-process
    session for the same seeds. `threads`: the child's torch intra-op threads (None: this process's count).
    `timeout`: seconds a command may take before the child is deemed hung (killed, `ModelProcessError`);
    `start_timeout`: the same for the start (None: as long as the child lives; compiling can take minutes).
    `device` is where `step` takes and returns tensors: the CPU (the shared buffers); the models stay on theirs.
    """

    def __init__(
        self,
        mimi,
        lm,
        batch_size: int = 1,
        text_sampling: SamplingConfig | None = None,
        audio_sampling: SamplingConfig | None = None,
        seed: int | None = None,
        start_all: bool = True,
        compile: bool = False,
        threads: int | None = None,
        timeout: float | None = 300.0,
        start_timeout: float | None = None,
    ) -> None:
        cfg = lm.cfg
        self.batch_size, self.frame_size = batch_size, mimi.frame_size
        self.model_device = lm.device
        self.device = torch.device("cpu")
        self.timeout = timeout
        self._bufs = _Buffers(batch_size, mimi.frame_size, cfg.dep_q, cfg.num_user_codebooks)
        self._lock = threading.Lock()
        self._closed = False
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        options = dict(batch_size=batch_size, text_sampling=text_sampling, audio_sampling=audio_sampling, seed=seed,
                       start_all=start_all, compile=compile)
        self._proc = ctx.Process(target=_child, name="openmoshi-model",
                                 args=(child_conn, mimi, lm, self._bufs, options,
                                       torch.get_num_threads() if threads is None else threads), daemon=True)
        self._proc.start()
        child_conn.close()  # ours is the parent's end only: the child's death then reads as EOF
        self._finalizer = weakref.finalize(self, _kill, self._proc, self._conn)
        self._finalizer.atexit = False  # at exit: `_at_exit`, registered after multiprocessing's own exit hook
        # (atexit runs last-registered first): multiprocessing's hook SIGTERMs daemonic children, which this one
        # ignores, then joins them, which would hang an interpreter that exits with the session still open
        self._at_exit = functools.partial(_kill, self._proc, None)
        atexit.register(self._at_exit)
        if compile:  # the child's own log lines go nowhere (its logging is not configured): said here
            log_start(batch_size)
        with self._lock:
            self.compile_seconds: float | None = self._receive(start_timeout, "start")
        if compile and self.compile_seconds is not None:
            log_done(batch_size, self.compile_seconds)

    # ---- lifecycle ---------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return not self._closed and self._proc.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child (it closes its session) and wait for it; killed if it does not exit in `timeout`.
        Idempotent; safe while another thread waits on a command (that command then fails)."""
        if self._closed:
            return
        self._closed = True
        got = self._lock.acquire(timeout=timeout)
        try:
            if got and self._proc.is_alive():
                try:
                    self._conn.send(("close", (), {}))
                except OSError:
                    pass
                self._proc.join(timeout)
        finally:
            _kill(self._proc, self._conn if got else None)
            self._finalizer.detach()
            atexit.unregister(self._at_exit)
            if got:
                self._lock.release()

    def __enter__(self) -> ProcessSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the session's API -----------------------------------------------------------------------------
    def join(
        self,
        rows: Iterable[int] | int,
        text_sampling: SamplingConfig | None = None,
        audio_sampling: SamplingConfig | None = None,
        seed: int | None = None,
        audio_seed: int | None = None,
    ) -> None:
        """`DuplexSession.join` in the child."""
        rows = [rows] if isinstance(rows, int) else list(rows)
        self._call("join", rows, text_sampling=text_sampling, audio_sampling=audio_sampling, seed=seed,
                   audio_seed=audio_seed)

    reset = join

    def leave(self, rows: Iterable[int] | int) -> None:
        """`DuplexSession.leave` in the child."""
        self._call("leave", [rows] if isinstance(rows, int) else list(rows))

    @property
    def active_rows(self) -> list[int]:
        return self._call("active_rows")

    def free_rows(self) -> list[int]:
        return self._call("free_rows")

    def step(self, pcm: torch.Tensor | None = None) -> FrameOutput:
        """One frame for every row: user audio [B, 1, frame_size] (None: silence) -> Moshi's frame (as
        `DuplexSession.step`; the outputs are fresh CPU tensors)."""
        B, fs, bufs = self.batch_size, self.frame_size, self._bufs
        if pcm is not None and tuple(pcm.shape) != (B, 1, fs):
            raise ValueError(f"user audio must have shape [{B}, 1, {fs}], got {list(pcm.shape)}")
        with self._lock:
            self._check_open()
            if pcm is not None:
                bufs.pcm_in.copy_(pcm)
            has_prime = self._roundtrip(("step", (pcm is not None,), {}))
            prime = StepOutput(bufs.prime_text.clone(), bufs.prime_audio.clone()) if has_prime else None
            codes = bufs.user_codes.clone() if bufs.n_user else bufs.user_codes[:, :0].clone()
            return FrameOutput(bufs.pcm_out.clone(), bufs.text.clone(), bufs.audio.clone(), codes, prime)

    # ---- the pipe ----------------------------------------------------------------------------------------
    def _call(self, cmd: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self._check_open()
            return self._roundtrip((cmd, args, kwargs))

    def _check_open(self) -> None:
        if self._closed:
            raise ModelProcessError("the model process session is closed")

    def _roundtrip(self, message: tuple) -> Any:
        try:
            self._conn.send(message)
        except OSError:
            self._fail(f"the model process is gone ({self._exit()})")
        return self._receive(self.timeout, message[0])

    def _receive(self, timeout: float | None, what: str) -> Any:
        """The child's answer to the last command (raising its error), or ModelProcessError when it died or
        took longer than `timeout`. Under the lock."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self._fail(f"the model process did not answer {what!r} within {timeout:g} s; stopped it")
            ready = wait([self._conn, self._proc.sentinel], left)
            if self._conn in ready:
                try:
                    status, payload = self._conn.recv()
                except (EOFError, OSError):
                    self._fail(f"the model process died during {what!r} ({self._exit()})")
                break
            if self._proc.sentinel in ready:
                self._fail(f"the model process died during {what!r} ({self._exit()})")
        if status == "ok":
            return payload
        data, summary, trace = payload
        if what == "start":  # nothing to keep alive: the child has returned
            self._closed = True
            _kill(self._proc, self._conn)
            self._finalizer.detach()
            atexit.unregister(self._at_exit)
            raise ModelProcessError(f"the model process could not start: {summary}\n{trace}")
        err = pickle.loads(data) if data is not None else ModelProcessError(summary)
        err.add_note(f"raised in the model process:\n{trace}")
        raise err

    def _exit(self) -> str:
        self._proc.join(1.0)
        code = self._proc.exitcode
        return "still running" if code is None else f"exit code {code}"

    def _fail(self, message: str) -> None:
        self._closed = True
        _kill(self._proc, self._conn)
        self._finalizer.detach()
        atexit.unregister(self._at_exit)
        raise ModelProcessError(message)


def _kill(proc, conn: Connection | None) -> None:
    """End the child for good (SIGKILL: it ignores SIGTERM) and reap it (no zombie)."""
    if proc.is_alive():
        proc.kill()
        proc.join(5.0)
    if conn is not None:
        conn.close()
