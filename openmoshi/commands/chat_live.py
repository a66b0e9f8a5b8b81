"""Microphone mode of `openmoshi chat`: a duplex sounddevice stream at Mimi's rate, one frame per callback.

The audio callback only moves frames between the sound card and two queues; the main thread runs the session
step for each microphone frame and queues Moshi's frame for the speaker. Moshi's words are printed as they come.
"""

from __future__ import annotations

import queue
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

from ..sound_devices import unavailable  # noqa: F401  (the mode's check, used by its command)

if TYPE_CHECKING:
    from ..inference.sampling import SamplingConfig



def run_live(models, text_cfg: SamplingConfig, audio_cfg: SamplingConfig, seed: int, duration: float | None,
             rec, compile: bool = False):
    """Talk until Ctrl-C (or `duration` seconds), recording into `rec` (chat's `Recorder`, given by the caller so
    that this module does not import chat.py: no import cycle); returns `rec`."""
    import sounddevice as sd
    import torch

    from ..inference.session import DuplexSession
    from ..lm.text import TextStreamDecoder

    mimi, lm = models.mimi, models.lm
    fs, rate = mimi.frame_size, mimi.sample_rate
    mic: queue.Queue[np.ndarray] = queue.Queue()
    speaker: queue.Queue[np.ndarray] = queue.Queue()

    def callback(indata, outdata, frames, _time, status) -> None:  # runs on the audio thread
        mic.put(indata[:, 0].copy())
        try:
            outdata[:, 0] = speaker.get_nowait()
        except queue.Empty:
            outdata.fill(0)

    decoder = TextStreamDecoder(models.tokenizer)
    max_frames = None if duration is None else int(duration * rate / fs)
    warned = False
    if compile:
        print("compiling the step for batch 1 (torch.compile: minutes the first time, then cached on disk)...",
              file=sys.stderr, flush=True)
    with DuplexSession(mimi, lm, 1, text_sampling=text_cfg, audio_sampling=audio_cfg, seed=seed,
                       compile=compile) as session, \
            sd.Stream(samplerate=rate, blocksize=fs, channels=1, dtype="float32", callback=callback):
        if session.compile_seconds is not None:
            print(f"compiling the step for batch 1... done in {session.compile_seconds:.1f} s", file=sys.stderr)
        print("listening: talk to Moshi (Ctrl-C to stop)", file=sys.stderr)
        try:
            while max_frames is None or len(rec.moshi_pcm) < max_frames:
                try:
                    frame = mic.get(timeout=5.0)
                except queue.Empty:
                    print("\nno audio from the microphone for 5 s: stopping", file=sys.stderr)
                    break
                start = time.perf_counter()
                out = session.step(torch.from_numpy(frame).view(1, 1, fs))
                speaker.put(out.pcm[0, 0].cpu().numpy())
                rec.add_frame(out, frame)
                print(decoder.push(rec.frame_text[-1]), end="", flush=True)
                if not warned and mic.qsize() > 5:
                    warned = True
                    print(f"\n[slower than real time: {1000 * (time.perf_counter() - start):.0f} ms per "
                          f"{1000 * fs / rate:.0f} ms frame; try a GPU or --dtype]", file=sys.stderr)
        except KeyboardInterrupt:
            pass
    print(file=sys.stderr)
    return rec
