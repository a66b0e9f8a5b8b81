"""End to end: `openmoshi serve` (a separate process, a tiny model with 80 ms frames) and `openmoshi client`.

The server runs as a user runs it (its command, its default real-time pacing); the client sends a recording and
writes the conversation. Audio and text come back; the client's per-frame timing is recorded and reported (the
test prints it; speed is never asserted). `Replica` starts and stops one server process; test_nginx.py uses it too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from openmoshi import cli

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class Replica:
    """`openmoshi serve --model REPO` on a free port, in its own process (stopped with SIGINT, as Ctrl-C)."""

    def __init__(self, repo: Path, log: Path, max_sessions: int = 2, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.log_path = log
        cmd = [sys.executable, "-m", "openmoshi.cli", "serve", "--model", str(repo), "--port", str(self.port),
               "--max-sessions", str(max_sessions), "--threads", "1", "--device", "cpu", *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_TORCH_COMPILE": "1"}
        self._log = open(log, "wb")
        self._interrupted = False
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/chat"

    def wait_ready(self, timeout: float = 180.0) -> Replica:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if http_get(self.url + "/api/health", 2.0)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve not healthy after {timeout} s:\n{self.log()}")

    def status(self) -> dict:
        code, body = http_get(self.url + "/api/status")
        assert code == 200, body
        return json.loads(body)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def interrupt(self) -> None:
        """Ctrl-C, once (a second one would interrupt the shutdown itself)."""
        if self.proc.poll() is None and not self._interrupted:
            self.proc.send_signal(signal.SIGINT)
            self._interrupted = True

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.interrupt()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def user_recording(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 24000)) / 24000
    return (0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


TOKEN = "sesame"


@pytest.fixture(scope="module")
def replica(server_repo, tmp_path_factory):
    """One `openmoshi serve --token` for this module's tests (a process start costs seconds)."""
    server = Replica(server_repo, tmp_path_factory.mktemp("serve") / "serve.log", extra=("--token", TOKEN))
    try:
        yield server.wait_ready()
    finally:
        code = server.stop()
    assert code == 0, server.log()  # Ctrl-C: a clean exit
    assert "Traceback" not in server.log()


def test_serve_and_client_end_to_end(replica, tmp_path, capsys):
    opened = replica.status()["conversations_opened"]
    wav = tmp_path / "me.wav"
    sf.write(wav, user_recording(2.0), 24000)
    out = tmp_path / "conv.wav"
    rc = cli.main(["client", "--url", replica.ws_url, "--token", TOKEN, "-i", str(wav), "-o", str(out), "--seed",
                   "3", "--text-temperature", "1.0", "--timing", str(tmp_path / "timing.json")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err + replica.log()
    deadline = time.monotonic() + 30  # the engine frees the row between steps, after the close arrived
    while (status := replica.status())["sessions_in_use"] and time.monotonic() < deadline:
        time.sleep(0.1)
    data, rate = sf.read(out, dtype="float32")
    frames = 25 + 12  # 2 s, then the default 1 s of tail
    assert rate == 24000 and data.shape == (frames * 1920, 2)
    assert np.abs(data[:, 0]).max() > 1e-3, "Moshi's channel is silent"
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["frames_sent"] == frames and timing["frames_received"] >= frames - 2
    assert len(timing["received_at"]) == timing["frames_received"]
    words = json.loads(out.with_suffix(".json").read_text())
    assert words["alignments"] and words["text"], "no text came back"
    assert words["text"].split()[0] in captured.out  # printed as it came
    assert status["conversations_opened"] == opened + 1 and status["sessions_in_use"] == 0  # its slot was freed
    assert "closed after" in replica.log()
    lat = timing["latency_ms"]
    with capsys.disabled():  # reported, not asserted: the machine may be busy
        print(f"\n[e2e] {timing['frames_received']} frames; client round trip per frame: median {lat['median']} "
              f"ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms; server step p50/p99 "
              f"{status['step_time_ms']['p50']}/{status['step_time_ms']['p99']} ms")


def test_client_token_against_serve(replica, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENMOSHI_TOKEN", raising=False)
    wav = tmp_path / "me.wav"
    sf.write(wav, user_recording(0.3), 24000)
    argv = ["client", "--url", replica.ws_url, "-i", str(wav), "-o", str(tmp_path / "o.wav"), "--tail", "0"]
    for token, rc, words in ((None, 1, "unauthorized"), ("wrong", 1, "unauthorized"), (TOKEN, 0, "")):
        got = cli.main(argv + (["--token", token] if token else []))
        err = capsys.readouterr().err
        assert got == rc and words in err, (token, err)
    monkeypatch.setenv("OPENMOSHI_TOKEN", TOKEN)  # the same variable as the server's
    assert cli.main(argv) == 0


def test_client_over_tls_to_a_self_signed_server(server_models, tmp_path, capsys):
    """serve --ssl-self-signed's certificate: refused by default (the reason names the way out), accepted with
    --ca-cert (authenticated) or --insecure (encrypted only)."""
    from openmoshi.server.config import EngineConfig, ServerConfig
    from openmoshi.server.runner import BackgroundServer
    from openmoshi.server.tls import self_signed, ssl_context

    cert, key, _ = self_signed("127.0.0.1", folder=tmp_path / "tls")
    config = ServerConfig(port=0, model_name="tiny-test", engine=EngineConfig(max_sessions=1, step_period=0.0))
    wav = tmp_path / "me.wav"
    sf.write(wav, user_recording(0.3), 24000)
    with BackgroundServer(server_models.mimi, server_models.lm, server_models.tokenizer, config,
                          ssl_context=ssl_context(cert, key)) as server:
        assert server.ws_url.startswith("wss://")
        argv = ["client", "--url", server.ws_url, "-i", str(wav), "-o", str(tmp_path / "o.wav"), "--fast",
                "--tail", "0"]
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert "certificate is not trusted" in err and "--ca-cert" in err and "Traceback" not in err
        assert cli.main(argv + ["--ca-cert", str(cert)]) == 0
        assert cli.main(argv + ["--insecure"]) == 0
        assert cli.main(argv + ["--ca-cert", str(tmp_path / "missing.pem")]) == 1
        assert "--ca-cert" in capsys.readouterr().err
    assert sf.info(str(tmp_path / "o.wav")).channels == 2


def test_two_file_clients_at_once_get_their_own_conversations(make_server):
    """Through the client library: a seeded conversation says the same words alone and beside another one; the
    other, seeded differently, says something else. (`wait_for_input` makes the engine step only once every
    conversation's frame is in: the pairing of frames is exact, whatever the machine's speed.)"""
    import asyncio

    from openmoshi.client import Options, chat_url, session_query, talk_file
    from openmoshi.server.protocol import SessionParams

    server = make_server(max_sessions=2, wait_for_input=10.0)
    options = Options(pace=False, window=4, timeout=60.0, tail_seconds=0.0)
    mine = chat_url(server.ws_url, session_query(SessionParams(text_seed=11, audio_seed=12, text_temperature=1.0)))
    other = chat_url(server.ws_url, session_query(SessionParams(text_seed=5, audio_seed=6, text_temperature=1.0)))
    me, you = user_recording(1.6, 0), user_recording(1.6, 1)

    alone = asyncio.run(talk_file(mine, me, options))

    async def together():
        return await asyncio.gather(talk_file(mine, me, options), talk_file(other, you, options))

    beside, second = asyncio.run(together())
    assert alone.frames_received == beside.frames_received == alone.frames_sent == 20
    assert alone.text() and beside.text() == alone.text()
    # Moshi's audio is not compared sample for sample: the engine's pcm differs between the two runs by float
    # rounding (~1e-7, sums in another order), and Opus's encoder decisions turn that into different bitstreams
    assert beside.moshi_samples == alone.moshi_samples
    assert second.text() and second.text() != alone.text()
