"""`openmoshi chat` in microphone mode, with a fake sounddevice stream run in lockstep: no sleeps, no timing.

The fake audio thread hands the callback microphone block i only once the main thread has queued Moshi's frame
for block i - 1 (it watches the command's two queues), so what reaches the speaker is known exactly: silence for
block 0 (nothing queued yet), then Moshi's frame i - 1 with block i. The conversation itself equals file mode's
over the same audio, with the same seed.
"""

import queue
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))  # shared runtime test helpers
from runtime_testutils import build_tiny_repo, single_thread  # noqa: E402, F401

from openmoshi import cli  # noqa: E402
from openmoshi.commands import chat_live  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
FRAMES, FS = 12, 32  # the tiny Mimi's frame: 32 samples at 24 kHz


class Lockstep:
    """The queues chat_live creates (the microphone's first, then the speaker's), counting the speaker's puts."""

    def __init__(self) -> None:
        self.queues: list[queue.Queue] = []
        self.cond = threading.Condition()
        self.speaker_puts = 0
        outer = self

        class Counting(queue.Queue):
            def __init__(self, *a, **kw) -> None:
                super().__init__(*a, **kw)
                outer.queues.append(self)

            def put(self, item, *a, **kw) -> None:
                super().put(item, *a, **kw)
                if self is outer.queues[1]:
                    with outer.cond:
                        outer.speaker_puts += 1
                        outer.cond.notify_all()

        self.module = types.SimpleNamespace(Queue=Counting, Empty=queue.Empty)

    def wait_for_speaker(self, n: int, stop: threading.Event) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.speaker_puts >= n or stop.is_set(), timeout=120)


def make_stream(lockstep: Lockstep, mic: np.ndarray, played: list, errors: list):
    class FakeStream:
        def __init__(self, samplerate, blocksize, channels, dtype, callback):
            assert (samplerate, blocksize, channels) == (24000, FS, 1)
            self.callback, self.stop = callback, threading.Event()

        def _run(self):
            try:
                for i in range(FRAMES):
                    if not lockstep.wait_for_speaker(i, self.stop):
                        errors.append(f"the command never answered block {i - 1}")
                        return
                    if self.stop.is_set():
                        return
                    out = np.full((FS, 1), np.nan, dtype=np.float32)
                    self.callback(mic[i][:, None].copy(), out, FS, None, None)
                    played.append(out[:, 0].copy())
            except Exception as err:  # noqa: BLE001 - reported by the test
                errors.append(repr(err))

        def __enter__(self):
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
            return self

        def __exit__(self, *exc):
            self.stop.set()
            with lockstep.cond:
                lockstep.cond.notify_all()
            self.thread.join()

    return FakeStream


def test_microphone_mode_in_lockstep_equals_file_mode(monkeypatch, tmp_path, capsys):
    mic = (0.1 * np.random.default_rng(0).standard_normal((FRAMES, FS))).astype(np.float32)
    lockstep, played, errors = Lockstep(), [], []
    fake = types.SimpleNamespace(PortAudioError=RuntimeError, query_devices=lambda kind=None: {"name": kind},
                                 Stream=make_stream(lockstep, mic, played, errors))
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    monkeypatch.setattr(chat_live, "queue", lockstep.module)
    repo_dir = build_tiny_repo(tmp_path / "repo")
    out = tmp_path / "live.wav"
    assert cli.main(["chat", "--model", str(repo_dir), "--duration", str(FRAMES * FS / 24000), "--output", str(out),
                     "--seed", "1", "--save-tokens", str(tmp_path / "live.npz")]) == 0
    assert "listening" in capsys.readouterr().err
    assert errors == [] and len(played) == FRAMES
    wav, _ = sf.read(str(out), dtype="float32")
    assert wav.shape == (FRAMES * FS, 2)
    np.testing.assert_allclose(wav[:, 1], mic.reshape(-1), atol=1.5 / 32768)  # right: the microphone
    moshi = wav[:, 0].reshape(FRAMES, FS)
    assert np.abs(moshi).max() > 0
    # the speaker: silence first (nothing queued yet), then Moshi's frame i - 1 with block i
    assert np.array_equal(played[0], np.zeros(FS, dtype=np.float32))
    np.testing.assert_allclose(np.clip(np.stack(played[1:]), -1, 1), moshi[:-1], atol=1.5 / 32768)

    # the same conversation as file mode over the same audio and seed (file mode adds max_delay frames)
    sf.write(str(tmp_path / "mic.wav"), mic.reshape(-1), 24000, subtype="FLOAT")
    assert cli.main(["chat", "--model", str(repo_dir), "--input", str(tmp_path / "mic.wav"), "--output",
                     str(tmp_path / "file.wav"), "--no-progress", "--seed", "1",
                     "--save-tokens", str(tmp_path / "file.npz")]) == 0
    live, file = np.load(tmp_path / "live.npz"), np.load(tmp_path / "file.npz")
    assert live["text"].shape == (FRAMES + 1,)  # the first frame went to the generator twice
    for key in ("user_codes", "text", "audio"):
        assert np.array_equal(live[key], file[key][..., : FRAMES + 1]), key
