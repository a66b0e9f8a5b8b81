"""`openmoshi client` in microphone mode, with a fake sounddevice module and the protocol-following FakeMoshi;
and the whole command in a fresh process, which must never import torch."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest
import soundfile as sf
from test_client import FakeMoshi, serve, speech

from openmoshi import cli
from openmoshi.client import live


class FakeStream:
    """sounddevice.Stream stand-in: a thread hands the callback 80 ms microphone blocks of `signal` (faster than
    real time; the client does not pace microphone frames) and keeps what the speaker is given."""

    instances: list[FakeStream] = []

    def __init__(self, samplerate, blocksize, channels, dtype, callback) -> None:
        assert (samplerate, channels, dtype) == (24000, 1, "float32")
        self.blocksize, self.callback = blocksize, callback
        self.played: list[np.ndarray] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        FakeStream.instances.append(self)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            block = SIGNAL[i * self.blocksize:(i + 1) * self.blocksize]
            indata = np.zeros((self.blocksize, 1), np.float32)
            indata[: block.size, 0] = block
            outdata = np.zeros((self.blocksize, 1), np.float32)
            self.callback(indata, outdata, self.blocksize, None, None)
            self.played.append(outdata[:, 0].copy())
            i += 1
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


SIGNAL = speech(2.0)


@pytest.fixture
def fake_sounddevice(monkeypatch):
    module = types.ModuleType("sounddevice")
    module.Stream = FakeStream
    module.PortAudioError = RuntimeError
    module.query_devices = lambda kind=None: {"name": f"fake {kind}"}
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    FakeStream.instances.clear()
    return module


def test_microphone_mode_talks_and_plays(fake_sounddevice, tmp_path, capsys):
    assert live.unavailable() is None
    server = FakeMoshi()
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/api/chat", server.handle)
    out = tmp_path / "live.wav"
    with serve(app) as url:
        rc = cli.main(["client", "--url", url, "--duration", "0.8", "--output", str(out), "--audio-topk", "9"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert server.queries == [{"audio_topk": "9"}]
    assert server.frames_in == 10  # 0.8 s of microphone
    data, rate = sf.read(out, dtype="float32")
    assert rate == 24000 and data.shape == (10 * 1920, 2)
    np.testing.assert_allclose(data[:, 1], SIGNAL[: 10 * 1920], atol=1 / 32768)  # the microphone, as sent
    assert np.abs(data[1920:, 0]).mean() > 0.2 * np.abs(SIGNAL[1920: 10 * 1920]).mean()  # Moshi (the echo)
    assert "w0x w4x w8x" in captured.out
    # the speaker got Moshi's audio from its first sample: the first block that is not silence is Moshi's frame 0
    # (the server answers in whole 80 ms frames, and the buffer hands them out whole)
    blocks = FakeStream.instances[0].played
    first = next(i for i, block in enumerate(blocks) if block.any())
    np.testing.assert_allclose(blocks[first], data[:1920, 0], atol=1.01 / 32768)
    if first + 1 < len(blocks) and blocks[first + 1].any():
        np.testing.assert_allclose(blocks[first + 1], data[1920:3840, 0], atol=1.01 / 32768)


def test_client_never_imports_torch(tmp_path):
    """A conversation over a file in a fresh process: numpy, soundfile, sphn and aiohttp only."""
    server = FakeMoshi()
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/api/chat", server.handle)
    wav = tmp_path / "in.wav"
    sf.write(wav, speech(0.4), 24000)
    code = ("import sys; from openmoshi import cli\n"
            "rc = cli.main(sys.argv[1:])\n"
            "assert 'torch' not in sys.modules, 'the client imported torch'\n"
            "sys.exit(rc)")
    with serve(app) as url:
        out = subprocess.run([sys.executable, "-c", code, "client", "--url", url, "-i", str(wav), "-o",
                              str(tmp_path / "o.wav"), "--fast"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert server.frames_in == 5 + 12  # 0.4 s, then the default 1 s of tail


def test_microphone_mode_without_output_keeps_no_audio(fake_sounddevice):
    """A long conversation with nothing to write must not grow the client's memory: only counts are kept."""
    from aiohttp import web

    from openmoshi.client import Options, talk_live

    server = FakeMoshi()
    app = web.Application()
    app.router.add_get("/api/chat", server.handle)
    with serve(app) as url:
        rec = asyncio.run(talk_live(url, Options(timeout=10.0), duration=0.4, keep_audio=False))
    assert rec.frames_sent == 5 and rec.frames_received >= 1
    assert rec.user == [] and rec.moshi == [] and rec.moshi_samples >= 1920
    assert rec.text().startswith("w0")
