"""The batcher without a network: bounded queues, visible degradation, recovery from a failed step, and memory
that stays flat however long a conversation lasts."""

from __future__ import annotations

import asyncio
import logging
import tracemalloc

import numpy as np
import pytest
from server_testutils import build_server_repo, load_server_models, user_audio

from openmoshi.inference.sampling import SamplingConfig
from openmoshi.server.config import EngineConfig
from openmoshi.server.conversation import sampling_with as _sampling
from openmoshi.server.engine import Engine, ServerFull
from openmoshi.server.protocol import SessionParams


@pytest.fixture(scope="module")
def short_context_models(tmp_path_factory):
    """The server's tiny model with an 8-step LM context (Mimi's transformer: 10 frames at 25 Hz, 5 steps)."""
    return load_server_models(build_server_repo(tmp_path_factory.mktemp("short_ctx"), context=8))


async def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _engine(models, **cfg) -> Engine:
    return Engine(models.mimi, models.lm, models.tokenizer, EngineConfig(**{"step_period": 0.0, **cfg}))


def test_memory_stays_flat_far_past_the_context(short_context_models):
    """40 steps = 5 LM contexts: the session's state bytes do not move, Python allocations do not grow."""
    engine = _engine(short_context_models, max_sessions=1, wait_for_input=30.0, max_input_backlog=100,
                     max_output_frames=100)
    frames = 40
    audio = user_audio(frames, 2)

    async def run():
        engine.start(asyncio.get_running_loop())
        try:
            conv = engine.open("test", SessionParams(text_seed=1))
            await conv.ready
            sizes, traced = {}, {}
            tracemalloc.start()
            for t in range(frames):
                engine.push_audio(conv, audio[t * 1920:(t + 1) * 1920])
                await _wait(lambda t=t: conv.steps > t)
                conv.outbox.clear()  # the connection's sender would take them
                if t in (10, frames - 1):
                    sizes[t] = engine.session.state_bytes()
                    traced[t] = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            engine.close(conv)
            return sizes, traced, conv
        finally:
            await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    sizes, traced, conv = asyncio.run(run())
    assert conv.steps == frames and conv.silence_fills == 0
    assert sizes[10] == sizes[frames - 1] > 0
    assert traced[frames - 1] - traced[10] < 256 * 1024, traced  # no per-step growth kept on the Python side


def test_backlog_and_outbox_are_bounded_and_counted(server_models, caplog):
    caplog.set_level(logging.WARNING, logger="openmoshi.server")
    engine = _engine(server_models, max_sessions=1, max_input_backlog=3, max_output_frames=2)

    async def run():
        engine.start(asyncio.get_running_loop())
        try:
            conv = engine.open("flood", SessionParams())
            await conv.ready
            engine.push_audio(conv, user_audio(10))  # 10 frames at once: 7 too many
            assert len(conv.inbox) <= 3
            await _wait(lambda: conv.steps >= 5)
            assert len(conv.outbox) <= 2  # nobody takes Moshi's frames here
            engine.close(conv)
            return conv
        finally:
            await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    conv = asyncio.run(run())
    assert conv.frames_in == 10 and conv.dropped_in == 7
    assert conv.silence_fills >= 1  # after its 3 frames, Moshi kept going on silence
    assert conv.dropped_out >= 3
    assert any("is behind: dropped 7 stale input frames" in r.message for r in caplog.records)


def test_full_engine_and_row_reuse(server_models):
    engine = _engine(server_models, max_sessions=2)

    async def run():
        engine.start(asyncio.get_running_loop())
        try:
            a = engine.open("a", SessionParams())
            b = engine.open("b", SessionParams())
            with pytest.raises(ServerFull, match="server full: all 2"):
                engine.open("c", SessionParams())
            await asyncio.gather(a.ready, b.ready)
            engine.close(a)
            c = engine.open("c", SessionParams())  # a's row, before the worker applied a's leave
            assert c.row == a.row
            await c.ready
            await _wait(lambda: c.steps >= 2)
            engine.close(b)
            engine.close(c)
            engine.close(c)  # idempotent
        finally:
            await asyncio.get_running_loop().run_in_executor(None, engine.stop)
        return engine.stats()

    stats = asyncio.run(run())
    assert stats["sessions_free"] == 2 and stats["conversations_opened"] == stats["conversations_closed"] == 3


def test_late_steps_are_logged_and_counted(server_models, caplog):
    """An injected clock that jumps a second per reading: every step is late; the schedule slips, never bursts."""
    caplog.set_level(logging.INFO, logger="openmoshi.server")
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    engine = Engine(server_models.mimi, server_models.lm, server_models.tokenizer,
                    EngineConfig(max_sessions=1, step_period=0.08), clock=clock)

    async def run():
        engine.start(asyncio.get_running_loop())
        try:
            conv = engine.open("slow", SessionParams())
            await conv.ready
            await _wait(lambda: conv.steps >= 3)
            engine.close(conv)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    asyncio.run(run())
    assert engine.late_steps >= 2
    assert sum("behind real time" in r.message for r in caplog.records) == 1  # once per episode


def test_a_failed_step_ends_the_conversations_not_the_server(server_models, caplog):
    caplog.set_level(logging.ERROR, logger="openmoshi.server")
    engine = _engine(server_models, max_sessions=1)

    async def run():
        engine.start(asyncio.get_running_loop())
        real_step = engine.session.step
        calls = []

        def failing(pcm):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("device lost")
            return real_step(pcm)

        engine.session.step = failing
        try:
            conv = engine.open("x", SessionParams())
            await conv.ready
            await conv.wake.wait()
            await _wait(lambda: conv.end_reason is not None)
            again = engine.open("y", SessionParams())  # the row came back; the server goes on
            await again.ready
            await _wait(lambda: again.steps >= 1)
            engine.close(again)
            return conv
        finally:
            await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    conv = asyncio.run(run())
    assert conv.end_reason == "server error: RuntimeError: device lost"
    assert engine.stats()["sessions_free"] == 1


def test_query_overrides_sampling():
    base = SamplingConfig(temperature=0.7, top_k=25, greedy=True)
    assert _sampling(base, None, None) is base
    hot = _sampling(base, 1.1, None)
    assert hot.temperature == 1.1 and not hot.greedy and hot.top_k == 25
    assert _sampling(base, None, 5).top_k == 5 and _sampling(base, None, 5).greedy


def test_push_audio_any_chunking(server_models):
    engine = _engine(server_models, max_sessions=1, max_input_backlog=100)

    async def run():  # the worker is not started: nothing consumes the inbox
        conv = engine.open("x", SessionParams())
        engine.close(conv)  # before it joined: its row comes back at once
        assert engine.stats()["sessions_free"] == 1
        conv = engine.open("y", SessionParams())
        audio = user_audio(3)
        for piece in np.array_split(audio, 7):
            engine.push_audio(conv, piece)
        frames = list(conv.inbox)
        engine.close(conv)
        return frames, audio

    frames, audio = asyncio.run(run())
    assert len(frames) == 3 and np.array_equal(np.concatenate(frames), audio)


@pytest.mark.parametrize("limit, most", [(1, 1), (0, 3)])
def test_joins_are_spread_over_steps(server_models, limit, most):
    """Conversations arriving together join one per step by default (a join runs a generator step: several at
    once would delay the step); joins_per_step=0 lets them all join at once."""
    events: list[int] = []  # joins applied between two steps, one entry per step

    class Counting(Engine):
        def _apply(self, joining, leaving) -> None:
            if joining:
                events[-1] += len(joining)
            super()._apply(joining, leaving)

        def _step(self, frames) -> None:
            events.append(0)
            super()._step(frames)

    events.append(0)
    engine = Counting(server_models.mimi, server_models.lm, server_models.tokenizer,
                      EngineConfig(max_sessions=3, step_period=0.0, joins_per_step=limit))

    async def run():
        convs = [engine.open(str(i), SessionParams()) for i in range(3)]  # all waiting before the worker starts
        engine.start(asyncio.get_running_loop())
        try:
            await asyncio.gather(*(c.ready for c in convs))
            await _wait(lambda: all(c.steps >= 2 for c in convs))
        finally:
            await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    asyncio.run(run())
    assert sum(events) == 3 and max(events) == most
    with pytest.raises(ValueError, match="joins_per_step must be >= 0"):
        EngineConfig(joins_per_step=-1)
