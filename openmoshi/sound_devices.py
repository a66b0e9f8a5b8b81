"""Whether microphone-and-speaker mode can run here (sounddevice, PortAudio, devices): shared by `openmoshi chat`
and `openmoshi client`. Torch-free."""

from __future__ import annotations

INSTALL_HINT = ("install it with `pip install 'openmoshi[audio]'` (it needs the PortAudio library), "
                "or use --input FILE.wav")


def unavailable() -> str | None:
    """Why microphone mode cannot run here (no sounddevice, no PortAudio, no audio device), or None."""
    try:
        import sounddevice as sd
    except ImportError:
        return f"microphone mode needs the sounddevice package; {INSTALL_HINT}"
    except OSError as err:  # sounddevice imports but PortAudio cannot be loaded
        return f"microphone mode cannot load PortAudio ({err}); {INSTALL_HINT}"
    for kind in ("input", "output"):
        try:
            sd.query_devices(kind=kind)
        except (sd.PortAudioError, ValueError):
            return (f"no audio {kind} device found (a microphone and a speaker are needed); "
                    "use --input FILE.wav --output OUT.wav to talk over a recording")
    return None
