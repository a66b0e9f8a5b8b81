"""The client library and `openmoshi client` against a small protocol-following server (no model).

`FakeMoshi` speaks the wire protocol as Kyutai's server does (handshake = the kind byte alone, text before the
audio of a step): it decodes the user's Ogg/Opus, answers every 80 ms frame with that frame at half volume
(an echo, so what comes back can be checked sample by sample against what was sent) and spells a word every four
frames. It records the query and headers of each connection, and can refuse a token, be full, or hang up.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from contextlib import contextmanager

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web

from openmoshi import cli
from openmoshi.client import ClientError, Options, Recording, ServerError, chat_url, run_file, session_query
from openmoshi.client.recording import words_from_pieces
from openmoshi.server import protocol
from openmoshi.server.opus import OpusDecoder, OpusEncoder
from openmoshi.server.protocol import Kind, ProtocolError, SessionParams

FS = 1920
FAST = Options(pace=False, window=4, timeout=10.0, drain_timeout=5.0, tail_seconds=0.16)


class FakeMoshi:
    """A stand-in server (see the module docstring). `mode`: echo, versioned (a handshake with version and model
    bytes), full, close (hangs up after 3 frames), garbage
    (a non-Ogg audio message after 2 frames), silent (handshake, then nothing)."""

    def __init__(self, token: str | None = None, mode: str = "echo") -> None:
        self.token, self.mode = token, mode
        self.queries: list[dict[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.frames_in = 0

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.queries.append(dict(request.query))
        self.headers.append(dict(request.headers))
        ws = web.WebSocketResponse(max_msg_size=protocol.MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        if self.token is not None and request.query.get("token") != self.token:
            await ws.send_bytes(protocol.error("invalid or missing token"))
            await ws.close()
            return ws
        if self.mode == "full":
            await ws.send_bytes(protocol.error("server full (2 of 2 sessions in use)"))
            await ws.close()
            return ws
        # Kyutai's Python server (and ours) sends the kind byte alone; their client encoder adds version and model
        await ws.send_bytes(b"\x00\x00\x00" if self.mode == "versioned" else protocol.handshake())
        dec, enc = OpusDecoder(), OpusEncoder()
        buf, t = np.zeros(0, np.float32), 0
        async for msg in ws:
            message = protocol.decode(msg.data)
            if message.kind is not Kind.AUDIO or self.mode == "silent":
                continue
            buf = np.concatenate([buf, dec.decode(message.data)])
            while buf.size >= FS:
                frame, buf = buf[:FS], buf[FS:]
                self.frames_in += 1
                if t % 4 == 0:
                    await ws.send_bytes(protocol.text(f" w{t}"))
                elif t % 4 == 1:
                    await ws.send_bytes(protocol.text("x"))
                await ws.send_bytes(protocol.audio(enc.encode(0.5 * frame)))
                t += 1
                if self.mode == "close" and t == 3:
                    await ws.close()
                    return ws
                if self.mode == "garbage" and t == 2:
                    await ws.send_bytes(protocol.audio(b"not an ogg page at all"))
        return ws


@contextmanager
def serve(app: web.Application):
    """Run `app` on a free port in a thread; yields its websocket URL."""
    loop = asyncio.new_event_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    runner = web.AppRunner(app)

    async def start() -> None:
        await runner.setup()
        await web.SockSite(runner, sock).start()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"ws://127.0.0.1:{port}/api/chat"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def fake():
    server = FakeMoshi()
    app = web.Application()
    app.router.add_get("/api/chat", server.handle)
    with serve(app) as url:
        server.url = url
        yield server


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-sounding test signal: a few harmonics with a slow envelope (Opus keeps it well)."""
    t = np.arange(int(seconds * 24000)) / 24000
    rng = np.random.default_rng(seed)
    f0 = 140 + 20 * rng.random()
    sig = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5))
    return (0.3 * sig * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t))).astype(np.float32)


# ---- the URL ----------------------------------------------------------------------------------------------------
def test_url_takes_kyutai_parameter_names_and_the_token():
    params = SessionParams(text_temperature=0.5, text_topk=20, audio_temperature=0.0, audio_topk=100,
                           text_seed=7, audio_seed=2**64 - 1)
    query = session_query(params, {"pad_mult": "0"})
    assert query == {"text_temperature": "0.5", "text_topk": "20", "audio_temperature": "0.0", "audio_topk": "100",
                     "text_seed": "7", "audio_seed": str(2**64 - 1), "pad_mult": "0"}
    assert protocol.parse_query(query) == (params, ["pad_mult"])  # what the server reads back
    url = chat_url("http://example.org:8998", query, token="s3cret&x")
    assert url.startswith("ws://example.org:8998/api/chat?text_temperature=0.5&")
    assert url.endswith("token=s3cret%26x")
    assert chat_url("https://h/custom/path?a=1", {}, None) == "wss://h/custom/path?a=1"
    assert session_query(SessionParams()) == {}


@pytest.mark.parametrize("url, words", [("ftp://h/api/chat", "must start with ws://"), ("ws:///api/chat", "no host"),
                                        ("h:8998", "must start with"), ("ws://h:99999/", "bad port")])
def test_bad_urls_are_named(url, words):
    with pytest.raises(ClientError, match=words):
        chat_url(url)


def test_bad_parameters_are_refused_before_connecting():
    with pytest.raises(ProtocolError, match="text_temperature"):
        session_query(SessionParams(text_temperature=float("nan")))
    with pytest.raises(ProtocolError, match="twice"):
        session_query(SessionParams(text_seed=1), {"text_seed": "2"})


def test_words_from_pieces_join_and_time():
    pieces = [(0, " Hel"), (1, "lo"), (3, " there"), (3, "!"), (5, "  "), (9, " bye")]
    words = [(w.text, w.start, w.end) for w in words_from_pieces(pieces, 0.08)]
    assert words == [("Hello", 0.0, 0.16), ("there!", 0.24, 0.32), ("bye", 0.72, 0.8)]
    assert words_from_pieces([(2, "mid")], 0.08)[0].start == 0.16  # a first piece without a space is a word


# ---- conversations --------------------------------------------------------------------------------------------
def test_file_conversation_gets_audio_text_and_timing(fake):
    user = speech(1.2)
    query = session_query(SessionParams(text_temperature=0.3, audio_seed=11), {"repetition_penalty": "1.1"})
    rec = run_file(chat_url(fake.url, query), user, FAST)
    n = 15 + 2  # 1.2 s = 15 frames, then 0.16 s of tail
    assert rec.frames_sent == n and rec.frames_received == n and fake.frames_in == n
    assert fake.queries == [{"text_temperature": "0.3", "audio_seed": "11", "repetition_penalty": "1.1"}]
    stereo = rec.stereo()
    assert stereo.shape == (n * FS, 2)
    np.testing.assert_array_equal(stereo[: user.size, 1], user)  # right: exactly what was sent
    assert not stereo[user.size:, 1].any()  # the tail is silence
    # left: Moshi's frame t is the server's answer to frame t (the echo at half volume, through Opus twice)
    left, right = stereo[:, 0], stereo[:, 1]
    lag = int(np.argmax(np.correlate(left[:FS * 8], right[:FS * 4], "valid")))
    assert lag < FS // 2, f"Moshi's audio is {lag} samples late on the grid"  # Opus adds ~30 ms, not a frame
    ratio = np.abs(left[FS:user.size]).mean() / np.abs(right[FS:user.size]).mean()
    assert 0.4 < ratio < 0.6, ratio
    assert [w.text for w in rec.words()] == ["w0x", "w4x", "w8x", "w12x", "w16"]  # frame 16 is the last
    assert [w.start for w in rec.words()] == [round(t * 0.08, 3) for t in range(0, n, 4)]
    timing = rec.timing()
    assert len(timing["sent_at"]) == len(timing["received_at"]) == n
    lat = rec.latencies()
    assert (lat > 0).all() and timing["latency_ms"]["median"] > 0  # each answer came after its question


def test_real_time_pacing_never_sends_early(fake):
    rec = run_file(fake.url, speech(0.4), Options(timeout=10.0, tail_seconds=0.0))
    sent = np.asarray(rec.sent_at)
    assert rec.frames_sent == 5 and rec.frames_received == 5
    assert (sent >= np.arange(5) * 0.08 - 1e-3).all(), sent  # frame t leaves no earlier than t * 80 ms
    assert (np.diff(sent) > 0).all()


def test_handshake_with_version_bytes_is_accepted(fake):
    fake.mode = "versioned"
    rec = run_file(fake.url, speech(0.3), FAST)
    assert rec.frames_received == rec.frames_sent == 4 + 2


def test_server_full_is_a_server_error_with_its_reason(fake):
    fake.mode = "full"
    with pytest.raises(ServerError, match="server full") as exc:
        run_file(fake.url, speech(0.3), FAST)
    assert exc.value.reason == "server full (2 of 2 sessions in use)"


def test_token_travels_as_query_and_header(fake):
    fake.token = "abc"
    with pytest.raises(ServerError, match="invalid or missing token"):
        run_file(fake.url, speech(0.2), FAST)
    rec = run_file(chat_url(fake.url, {}, "abc"), speech(0.2), Options(**{**FAST.__dict__, "token": "abc"}))
    assert rec.frames_received == rec.frames_sent > 0
    assert fake.headers[-1]["Authorization"] == "Bearer abc" and fake.queries[-1] == {"token": "abc"}


@pytest.mark.parametrize("mode, words", [("close", "closed the conversation before it ended"),
                                         ("garbage", "not valid Ogg/Opus")])
def test_a_server_that_breaks_off_is_a_client_error(fake, mode, words):
    fake.mode = mode
    with pytest.raises(ClientError, match=words):
        run_file(fake.url, speech(1.0), FAST)


def test_a_silent_server_times_out(fake):
    fake.mode = "silent"
    with pytest.raises(ClientError, match="no message from the server for 0.5 s"):
        run_file(fake.url, speech(0.5), Options(pace=False, window=2, timeout=0.5))


def test_nobody_listening_is_a_clear_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ClientError, match=f"cannot connect to ws://127.0.0.1:{port}/api/chat"):
        run_file(f"ws://127.0.0.1:{port}/api/chat", speech(0.2), FAST)


def test_not_a_websocket_is_a_clear_error():
    app = web.Application()
    with serve(app) as url, pytest.raises(ClientError, match="refused the websocket: HTTP 404"):
        run_file(url, speech(0.2), FAST)


def test_a_server_that_skips_the_handshake_is_refused():
    async def handle(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_bytes(protocol.text(" hi"))
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/api/chat", handle)
    with serve(app) as url, pytest.raises(ClientError, match="did not start with the handshake"):
        run_file(url, speech(0.2), FAST)


def test_recording_keeps_partial_answers():
    rec = Recording()
    rec.user = [np.ones(FS, np.float32)] * 3
    rec.sent_at = [0.0, 0.08, 0.16]
    rec.add_moshi(np.full(FS + 100, 0.25, np.float32), 0.2)
    assert rec.frames_received == 1 and rec.received_at == [0.2]
    stereo = rec.stereo()
    assert stereo.shape == (3 * FS, 2) and (stereo[: FS + 100, 0] == 0.25).all() and not stereo[FS + 100:, 0].any()
    np.testing.assert_allclose(rec.latencies(), [0.2])


# ---- the command ----------------------------------------------------------------------------------------------
def test_command_writes_what_chat_writes(fake, tmp_path, capsys):
    wav = tmp_path / "in.wav"
    sf.write(wav, np.stack([speech(0.8), speech(0.8, 1)], 1), 16000)  # 1.2 s, stereo 16 kHz: read as mono 24 kHz
    out = tmp_path / "out" / "conv.wav"
    rc = cli.main(["client", "--url", fake.url.replace("ws://", "http://").removesuffix("/api/chat"), "--input",
                   str(wav), "--output", str(out), "--fast", "--tail", "0.24", "--seed", "5", "--text-topk", "3",
                   "--param", "pad_mult=0", "--timing", str(tmp_path / "t.json")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert fake.queries == [{"text_topk": "3", "text_seed": "5", "audio_seed": "5", "pad_mult": "0"}]
    data, rate = sf.read(out)
    assert rate == 24000 and data.shape == ((15 + 3) * FS, 2)
    words = json.loads(out.with_suffix(".json").read_text())
    assert [a[0] for a in words["alignments"]] == ["w0x", "w4x", "w8x", "w12x", "w16x"]
    assert all(a[2] == "SPEAKER_MAIN" for a in words["alignments"])
    assert "w4x" in out.with_suffix(".srt").read_text()
    timing = json.loads((tmp_path / "t.json").read_text())
    assert timing["frames_received"] == 18 and len(timing["received_at"]) == 18
    assert "w0x w4x w8x w12x w16x" in captured.out  # printed as they came
    assert "round trip per frame" in captured.err


def test_command_prints_the_servers_reason(fake, tmp_path, capsys):
    fake.mode = "full"
    wav = tmp_path / "in.wav"
    sf.write(wav, speech(0.3), 24000)
    rc = cli.main(["client", "--url", fake.url, "-i", str(wav), "-o", str(tmp_path / "o.wav"), "--fast"])
    err = capsys.readouterr().err
    assert rc == 1 and "error: the server ended the conversation: server full" in err and "Traceback" not in err
    assert not (tmp_path / "o.wav").exists()


def test_command_keeps_what_was_said_before_the_server_hung_up(fake, tmp_path, capsys):
    fake.mode = "close"  # hangs up after 3 frames
    wav = tmp_path / "in.wav"
    sf.write(wav, speech(1.0), 24000)
    out = tmp_path / "o.wav"
    rc = cli.main(["client", "--url", fake.url, "-i", str(wav), "-o", str(out), "--fast", "--window", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "closed the conversation before it ended" in err and "up to the error" in err
    data, _ = sf.read(out)
    assert data.shape[1] == 2 and 3 * FS <= data.shape[0] < 13 * FS
    assert abs(data[: 3 * FS, 0]).max() > 0.01  # Moshi's three frames are in it


@pytest.mark.parametrize("argv, code, words", [
    (["-i", "in.wav"], 2, "--input needs --output"),
    (["--fast"], 2, "--fast needs --input"),
    (["--seed", "1", "--text-seed", "2", "-i", "in.wav", "-o", "o.wav"], 2, "--seed sets both"),
    (["--url", "ftp://x", "-i", "in.wav", "-o", "o.wav"], 2, "must start with ws://"),
    (["--param", "pad_mult=1", "--param", "pad_mult=2", "-i", "in.wav", "-o", "o.wav"], 2, "given twice"),
    (["--param", "text_seed=x", "-i", "in.wav", "-o", "o.wav"], 2, "text_seed must be an integer"),
    (["--insecure", "--ca-cert", "c.pem", "-i", "in.wav", "-o", "o.wav"], 2, "contradict"),
    (["--url", "ws://h/api/chat?text_topk=many", "-i", "in.wav", "-o", "o.wav"], 2, "--url: text_topk must be"),
    (["--duration", "3", "-i", "in.wav", "-o", "o.wav"], 2, "--duration is for the microphone"),
    (["-i", "missing.wav", "-o", "o.wav"], 1, "not found"),
    (["-i", "in.wav", "-o", "in.wav"], 1, "--input"),
    (["-i", "in.wav", "-o", "o.mp3"], 1, ".wav"),
])
def test_command_refuses_bad_flags_before_connecting(argv, code, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sf.write(tmp_path / "in.wav", speech(0.2), 24000)
    rc = cli.main(["client", "--url", "ws://127.0.0.1:9/api/chat", *argv])  # port 9: nobody; never reached
    err = capsys.readouterr().err
    assert rc == code and words in err and "cannot connect" not in err, err


def test_microphone_mode_without_sounddevice_says_what_to_install(monkeypatch, capsys):
    from openmoshi.client import live

    monkeypatch.setattr(live, "unavailable", lambda: "microphone mode needs the sounddevice package; install")
    assert cli.main(["client", "--url", "ws://127.0.0.1:9/api/chat"]) == 2
    assert "error: microphone mode needs the sounddevice package" in capsys.readouterr().err


def test_unavailable_names_the_missing_piece(monkeypatch):
    import sys

    from openmoshi.client import live

    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if not installed
    assert "pip install 'openmoshi[audio]'" in live.unavailable()
