"""openmoshi serve with a tiny model: handshake, audio and text come back; conversations are independent."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import aiohttp
from server_testutils import settle, talk, user_audio

from openmoshi.server.protocol import Kind, decode

FRAMES = 8


def _run(coro):
    return asyncio.run(coro)


async def _talk(url, frames=FRAMES, seed=0, **kw):
    async with aiohttp.ClientSession() as session:
        return await talk(session, url, user_audio(frames, seed), expect_samples=frames * 1920, **kw)


def test_handshake_audio_and_text_come_back(make_server):
    srv = make_server(wait_for_input=5.0)
    res = _run(_talk(srv.ws_url + "?text_seed=7&metadata=1&pad_mult=0.5"))
    assert res.error is None
    assert res.kinds[0] is Kind.HANDSHAKE and res.kinds[1] is Kind.METADATA
    assert res.metadata["text_seed"] == 7 and res.metadata["ignored"] == ["pad_mult"]
    assert res.metadata["sample_rate"] == 24000 and res.metadata["model"] == "tiny-test"
    assert res.samples >= FRAMES * 1920 and Kind.AUDIO in res.kinds
    assert res.text, "the tiny model's text pieces come back"
    settle(srv)
    stats = srv.engine.stats()
    assert stats["sessions_free"] == 2 and stats["conversations_closed"] == 1
    assert stats["steps"] >= FRAMES


def test_seeded_conversation_same_alone_and_beside_another(make_server):
    srv = make_server(wait_for_input=10.0)
    alone = _run(_talk(srv.ws_url + "?text_seed=11&audio_seed=12"))

    async def both():
        return await asyncio.gather(_talk(srv.ws_url + "?text_seed=11&audio_seed=12"),
                                    _talk(srv.ws_url + "?text_seed=99&text_temperature=1.2", seed=3))

    mine, other = _run(both())
    assert alone.text and mine.text == alone.text
    assert other.text != mine.text  # its own conversation, not a copy of the neighbour's
    settle(srv)
    assert srv.engine.stats()["sessions_free"] == 2


def test_health_status_and_page(make_server):
    srv = make_server()
    assert urllib.request.urlopen(srv.url + "/api/health", timeout=10).read() == b"ok\n"
    status = json.loads(urllib.request.urlopen(srv.url + "/api/status", timeout=10).read())
    assert status["model"] == "tiny-test" and status["sessions_free"] == 2 and status["sessions_max"] == 2
    assert set(status["step_time_ms"]) == {"p50", "p90", "p99"}
    page = urllib.request.urlopen(srv.url + "/", timeout=10)
    assert page.status == 200 and "html" in page.headers["Content-Type"]


def test_static_files_stay_inside_their_folder(make_server, tmp_path):
    (tmp_path / "index.html").write_text("<html>my page</html>")
    (tmp_path / "app.js").write_text("console.log(1)")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "x.css").write_text("body{}")
    (tmp_path.parent / "secret.txt").write_text("no")
    srv = make_server(server={"static_dir": tmp_path})
    assert urllib.request.urlopen(srv.url + "/", timeout=10).read() == b"<html>my page</html>"
    assert urllib.request.urlopen(srv.url + "/app.js", timeout=10).read() == b"console.log(1)"
    assert urllib.request.urlopen(srv.url + "/static/assets/x.css", timeout=10).read() == b"body{}"
    for path in ("/static/../secret.txt", "/static/%2e%2e/secret.txt", "/nothing.js", "/static/assets"):
        try:
            urllib.request.urlopen(srv.url + path, timeout=10)
        except urllib.error.HTTPError as err:
            assert err.code == 404, path
        else:
            raise AssertionError(f"{path} was served")


def test_shutdown_tells_the_clients(make_server):
    srv = make_server()

    async def scenario():
        async with aiohttp.ClientSession() as session, session.ws_connect(srv.ws_url) as ws:
            first = await asyncio.wait_for(ws.receive(), 30)
            assert first.data == b"\x00"
            await asyncio.get_running_loop().run_in_executor(None, srv.stop)
            texts = []
            while True:
                msg = await asyncio.wait_for(ws.receive(), 30)
                if msg.type != aiohttp.WSMsgType.BINARY:
                    return texts
                m = decode(msg.data)
                if m.kind is Kind.ERROR:
                    texts.append(m.data)

    assert asyncio.run(scenario()) == ["the server is shutting down"]
    assert not srv.engine.running
