"""The server with its model step in a child process (`EngineConfig(model_process=True)`, serve --model-process):
the same conversation as in the server's thread, and a model process that dies ends its conversations, is
started again, and the server goes on."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import numpy as np
from server_testutils import settle, talk, user_audio

FRAMES = 8


async def _talk(url, frames=FRAMES, seed=0):
    async with aiohttp.ClientSession() as session:
        return await talk(session, url, user_audio(frames, seed), expect_samples=frames * 1920)


def test_same_conversation_in_the_thread_and_in_a_model_process(make_server):
    url = "?text_seed=7&audio_seed=8"
    thread = make_server(wait_for_input=5.0)
    in_thread = asyncio.run(_talk(thread.ws_url + url))
    thread.stop()  # one server at a time over a model pair (its session holds their streaming state)
    proc = make_server(wait_for_input=5.0, model_process=True)
    assert proc.engine.session.alive
    pid = proc.engine.session.pid
    in_process = asyncio.run(_talk(proc.ws_url + url))
    assert in_thread.error is None and in_process.error is None
    assert in_thread.text and in_process.text == in_thread.text
    n = FRAMES * 1920
    np.testing.assert_array_equal(np.concatenate(in_process.pcm)[:n], np.concatenate(in_thread.pcm)[:n])
    settle(proc)
    stats = proc.engine.stats()
    assert stats["sessions_free"] == 2 and stats["conversations_closed"] == 1 and stats["steps"] >= FRAMES
    proc.stop()
    assert not os.path.exists(f"/proc/{pid}"), "the model process is gone after the server stopped"


def test_a_dead_model_process_is_restarted(make_server, caplog):
    srv = make_server(wait_for_input=5.0, model_process=True)
    assert asyncio.run(_talk(srv.ws_url)).error is None
    settle(srv)
    first = srv.engine.session.pid
    os.kill(first, signal.SIGKILL)
    failed = asyncio.run(_talk(srv.ws_url))  # its join finds the process dead
    assert failed.error is not None and failed.error.startswith("server error: ModelProcessError: the model process")
    settle(srv)
    assert srv.engine.running and srv.engine.session.alive and srv.engine.session.pid != first
    again = asyncio.run(_talk(srv.ws_url + "?text_seed=3"))
    assert again.error is None and again.samples >= FRAMES * 1920
    assert "the model process is gone; ending its conversations and starting a new one" in caplog.text
    assert not os.path.exists(f"/proc/{first}")
