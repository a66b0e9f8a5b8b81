"""How fast `openmoshi data synth` makes audio: seconds of conversation per CPU second (this process and its
children: the synthesisers), per user-voice engine and for all voices. Run from the repository root:
    nice -n 10 python bench/synth_rate.py [--conversations 6] [--engines festival,flite,espeak,piper,all]
Results on this machine are in docs/synth.md."""

from __future__ import annotations

import argparse
import tempfile
import time

from openmoshi.data.synth.generate import SynthSettings, _cpu_seconds, generate
from openmoshi.data.synth.voices import MOSHI_VOICE, resolve_user_voices


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=6)
    parser.add_argument("--engines", default="festival,flite,espeak,piper,all")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    for engine in args.engines.split(","):
        voices, _ = resolve_user_voices(engine)
        if engine == "piper":  # load the model outside the timing (once per worker process in real runs)
            from openmoshi.data.synth.voices import synthesize
            synthesize("piper:joe", ["Hello."])
        settings = SynthSettings(seed=args.seed, split="train", moshi_voice=MOSHI_VOICE, user_voices=tuple(voices))
        with tempfile.TemporaryDirectory() as tmp:
            cpu0, wall0 = _cpu_seconds(), time.monotonic()
            result = generate(tmp, settings, conversations=args.conversations, progress=False)
            cpu, wall = _cpu_seconds() - cpu0, time.monotonic() - wall0
        print(f"{engine:9s} {result.made_seconds:7.1f} s audio  {cpu:6.1f} s CPU  {wall:6.1f} s wall  "
              f"{result.made_seconds / cpu:5.1f} s audio / CPU s", flush=True)


if __name__ == "__main__":
    main()
