"""Offline voices: word times agree with the audio (festival for Moshi, flite for the user, the energy-based
estimate), names are checked, the pico voices are refused, effects behave."""

import numpy as np
import pytest

from openmoshi.data.synth import effects
from openmoshi.data.synth.engines import estimate_times
from openmoshi.data.synth.voices import MOSHI_VOICE, Style, VoiceError, parse_voice, resolve_user_voices, synthesize

SR = 24_000
TEXT = "Hello there. Seven plus two is nine, and the sky is blue."


def _db(x):
    return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-9)


def _check_times_match_energy(audio, times, n_words):
    assert len(times) == n_words
    assert all(a < b for a, b in times) and all(b0 <= a1 + 1e-6 for (_, b0), (a1, _) in zip(times, times[1:],
                                                                                         strict=False))
    assert times[-1][1] <= len(audio) / SR + 1e-3
    peak = _db(audio)
    for a, b in times:  # every word holds speech
        assert _db(audio[int(a * SR):int(b * SR)]) > peak - 25
    # before the first word, after the last, and in every pause between words, the audio is near silent
    assert _db(audio[: int(times[0][0] * SR)]) < peak - 30
    assert _db(audio[int(times[-1][1] * SR) + 240:]) < peak - 30
    pauses = [(b0, a1) for (_, b0), (a1, _) in zip(times, times[1:], strict=False) if a1 - b0 >= 0.06]
    assert pauses  # the sentence and the comma make the synthesisers pause
    for b0, a1 in pauses:
        assert _db(audio[int(b0 * SR) + 240: int(a1 * SR) - 240]) < peak - 30


@pytest.mark.parametrize("voice", [MOSHI_VOICE, "flite:kal16"])
def test_synthesiser_word_times_match_the_audio(voice):
    (speech,) = synthesize(voice, [TEXT])
    assert speech.exact
    _check_times_match_energy(speech.audio, speech.times, len(TEXT.split()))


def test_festival_batches_and_rate():
    slow, fast = synthesize("festival:kal_diphone", ["Good morning to you.", "Good morning to you."],
                            [Style(rate=0.8), Style(rate=1.25)])
    assert slow.exact and fast.exact
    assert len(slow.audio) > 1.3 * len(fast.audio)
    assert slow.times[-1][1] > 1.3 * fast.times[-1][1]


def test_estimated_times_follow_phrases():
    rng = np.random.default_rng(0)
    audio = np.zeros(3 * SR, np.float32)
    audio[int(0.2 * SR):int(1.0 * SR)] = 0.3 * rng.standard_normal(int(0.8 * SR))
    audio[int(1.6 * SR):int(2.6 * SR)] = 0.3 * rng.standard_normal(SR)
    times = estimate_times(audio, ["Hi", "there.", "How", "are", "you?"])
    assert times[0][0] == pytest.approx(0.2, abs=0.011) and times[1][1] == pytest.approx(1.0, abs=0.011)
    assert times[2][0] == pytest.approx(1.6, abs=0.011) and times[4][1] == pytest.approx(2.6, abs=0.011)
    # a mismatch of runs and phrases: the whole span is shared by letters
    times = estimate_times(audio, ["one", "two"])
    assert times[0][0] == pytest.approx(0.2, abs=0.011) and times[1][1] == pytest.approx(2.6, abs=0.011)


def test_voice_names_are_checked():
    assert parse_voice("espeak:en-gb+m3") == ("espeak", "en-gb+m3")
    for bad in ("festival", "nope:x", "flite:"):
        with pytest.raises(VoiceError, match="bad voice name"):
            parse_voice(bad)
    for pico in ("pico:en-US", "espeak:pico", "festival:pico_en"):
        with pytest.raises(VoiceError, match="reserved for evaluation"):
            parse_voice(pico)
    with pytest.raises(VoiceError, match="Moshi's voice"):
        resolve_user_voices(MOSHI_VOICE)
    good, bad = resolve_user_voices("flite:kal16,flite:nosuchvoice")
    assert good == ["flite:kal16"] and bad == ["flite:nosuchvoice"]


def test_effects():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(SR).astype(np.float32) * 0.1
    assert len(effects.tape(x, 1.1)) == pytest.approx(SR / 1.1, abs=2)
    assert np.abs(effects.set_peak(x, -6.0)).max() == pytest.approx(10 ** (-6 / 20), rel=1e-5)
    ir = effects.room_response(rng, 0.5)
    assert len(ir) == SR // 2 and np.sum(ir[: SR // 10] ** 2) > np.sum(ir[SR // 4:] ** 2) * 10  # it decays
    wet = effects.add_room(x, ir, 0.3)
    assert len(wet) == len(x) + len(ir) - 1 and np.abs(wet[len(x):]).max() > 0
    n = effects.noise(rng, SR, -40.0, 1.0)
    assert _db(n) == pytest.approx(-40.0, abs=0.1)
    assert not effects.noise(rng, SR, None, 0.0).any()
    channel = effects.draw_channel(np.random.default_rng(3))
    assert 0.9 <= channel.tape <= 1.12 and -20 <= channel.gain_db <= -3
