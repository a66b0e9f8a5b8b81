"""Synthetic conversations end to end, with the lightest voices (festival for Moshi, flite kal16 for the user;
scripts/test.sh installs them): reproducible, stereo 24 kHz, alignments in order and consistent with the audio,
Moshi only on channel 0, interruptions cut Moshi, resumable, clear errors."""

import json
import random

import numpy as np
import pytest
import soundfile as sf

from openmoshi.commands import data_synth
from openmoshi.data.synth import mix
from openmoshi.data.synth.content import split_of
from openmoshi.data.synth.generate import SynthError, SynthSettings, generate
from openmoshi.data.synth.script import MOSHI, USER, Line
from openmoshi.data.synth.voices import MOSHI_VOICE

USER_VOICE = "flite:kal16"
SR = 24_000


def settings(seed=7, split="train", lo=1, hi=1):
    return SynthSettings(seed=seed, split=split, moshi_voice=MOSHI_VOICE, user_voices=(USER_VOICE,),
                         min_exchanges=lo, max_exchanges=hi)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    result = generate(out, settings(), conversations=3, progress=False)
    return out, result


def _read(out, entry):
    wav = out / entry["path"]
    audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    return audio, rate, json.loads(wav.with_suffix(".json").read_text())


def _manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _db(x):
    return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-9)


def test_files_are_stereo_24k_with_the_listed_duration(made):
    out, result = made
    entries = _manifest(out)
    assert len(entries) == 3 == result.conversations == result.made
    for entry in entries:
        audio, rate, side = _read(out, entry)
        assert rate == SR and audio.shape[1] == 2
        assert abs(len(audio) / SR - entry["duration"]) < 1e-3
        assert 5 < entry["duration"] < 120


def test_alignments_in_order_inside_the_audio_and_labelled(made):
    out, _ = made
    for entry in _manifest(out):
        _, _, side = _read(out, entry)
        words = side["alignments"]
        assert {w[2] for w in words} == {"SPEAKER_MAIN", "SPEAKER_USER"}
        starts = [w[1][0] for w in words]
        assert starts == sorted(starts)
        for word, (a, b), _ in words:
            assert word.strip() and 0 <= a < b <= entry["duration"]
        for label in ("SPEAKER_MAIN", "SPEAKER_USER"):  # one speaker's words never overlap each other
            spans = [w[1] for w in words if w[2] == label]
            assert all(b0 <= a1 + 1e-6 for (_, b0), (a1, _) in zip(spans, spans[1:], strict=False))


def test_moshi_words_are_on_channel_0_and_match_its_energy(made):
    out, _ = made
    for entry in _manifest(out):
        audio, _, side = _read(out, entry)
        moshi = np.zeros(len(audio), bool)
        user = np.zeros(len(audio), bool)
        for _, (a, b), label in side["alignments"]:
            (moshi if label == "SPEAKER_MAIN" else user)[int(a * SR):int(b * SR)] = True
        # Moshi's channel: loud inside its words, near silent outside (festival's times are exact)
        assert _db(audio[moshi, 0]) - _db(audio[~moshi, 0]) > 25
        for _, (a, b), label in side["alignments"]:
            if label == "SPEAKER_MAIN":
                assert _db(audio[int(a * SR):int(b * SR), 0]) > -45
        # the user's speech is on channel 1 only: while only the user speaks, channel 0 is silent
        only_user = user & ~moshi
        assert _db(audio[only_user, 1]) - _db(audio[only_user, 0]) > 25
        only_moshi = moshi & ~user
        assert _db(audio[only_moshi, 0]) - _db(audio[only_moshi, 1]) > 10  # channel 1 holds noise at most


def test_same_seed_same_set_other_seed_other_set(made, tmp_path):
    out, _ = made
    again = tmp_path / "again"
    generate(again, settings(), conversations=2, workers=2, progress=False)
    first, second = _manifest(out)[:2], _manifest(again)
    assert first == second
    for entry in second:
        a0, _, s0 = _read(out, entry)
        a1, _, s1 = _read(again, entry)
        assert s0 == s1
        np.testing.assert_array_equal(a0, a1)
    other = tmp_path / "other"
    generate(other, settings(seed=8), conversations=1, progress=False)
    assert _read(other, _manifest(other)[0])[2]["alignments"] != _read(out, _manifest(out)[0])[2]["alignments"]


def test_resume_skips_finished_and_refuses_other_settings(made, tmp_path):
    out = tmp_path / "set"
    generate(out, settings(), conversations=1, progress=False)
    result = generate(out, settings(), conversations=2, progress=False)
    assert result.made == 1 and result.conversations == 2
    result = generate(out, settings(), hours=1e-6, progress=False)  # extended or shrunk: the manifest follows
    assert result.made == 0 and len(_manifest(out)) == 1
    with pytest.raises(SynthError, match="other settings"):
        generate(out, settings(seed=9), conversations=2, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SynthError, match="non-empty folder"):
        generate(foreign, settings(), conversations=1, progress=False)


def test_eval_split_asks_only_held_out_questions(tmp_path):
    out = tmp_path / "eval"
    generate(out, settings(split="eval", lo=3, hi=3), conversations=1, progress=False)
    keys = [q["key"] for e in _manifest(out) for q in _read(out, e)[2]["questions"]]
    assert keys and all(split_of(k) == "eval" for k in keys)


def test_an_interruption_cuts_moshi_short(monkeypatch):
    long = ("The ocean covers most of our planet. It is very deep in places, and many animals live there, "
            "from tiny fish to huge whales.")
    lines = [Line(USER, "Tell me about the ocean.", "smalltalk", gap=0.5),
             Line(MOSHI, long, "long", gap=0.2),
             Line(USER, "Sorry, what is two plus two?", "question", "interrupt", frac=0.4, reaction=0.3),
             Line(MOSHI, "Four.", "answer", gap=0.2)]
    monkeypatch.setattr(mix, "plan", lambda rng, split, exchanges: [Line(**vars(x)) for x in lines])
    stereo, side = mix.conversation(1, "train", 0, MOSHI_VOICE, [USER_VOICE])
    cut = side["turns"][1]
    assert cut["planned_text"] == long and "interrupted_at" in cut
    stop = cut["interrupted_at"]
    kept = cut["text"].split()
    assert 3 <= len(kept) < len(long.split())
    assert cut["end"] <= stop + 1e-6
    user_start = side["turns"][2]["start"]
    assert user_start < stop <= user_start + 0.3 + 2e-3  # Moshi stops 300 ms after the user starts
    moshi_words = [w for w in side["alignments"] if w[2] == "SPEAKER_MAIN"]
    assert [w[0] for w in moshi_words] == kept + ["Four."]
    answer = side["turns"][3]["start"]  # Moshi's channel is silent from the cut (plus its fade) to its answer
    silent = stereo[int((stop + 0.03) * SR):int((answer - 0.1) * SR), 0]
    assert len(silent) > SR // 4 and np.abs(silent).max() < 1e-3
    assert _db(stereo[int((stop - 0.3) * SR):int(stop * SR), 0]) > -40  # speaking until then


def test_layout_is_deterministic_per_index():
    a = mix.conversation_seed(1, "train", 5)
    assert a == mix.conversation_seed(1, "train", 5) != mix.conversation_seed(1, "eval", 5)
    voices = ["festival:kal_diphone", "flite:rms", "espeak:en-us+m3", "espeak:en-gb+f2", "piper:joe"]
    picks = {mix.pick_user_voice(random.Random(i), voices).split(":")[0] for i in range(200)}
    assert picks == {"festival", "flite", "espeak", "piper"}


def _cli(argv):
    import argparse

    parser = argparse.ArgumentParser()
    data_synth.add_arguments(parser)
    return data_synth.main(parser.parse_args(argv))


def test_cli_errors_are_clear(tmp_path, capsys):
    assert _cli(["--conversations", "1"]) == 1
    assert "--out DIR is required" in capsys.readouterr().err
    assert _cli(["--out", str(tmp_path / "x"), "--voices", "pico:en-US", "--conversations", "1"]) == 1
    assert "reserved for evaluation" in capsys.readouterr().err
    assert _cli(["--out", str(tmp_path / "x"), "--voices", "flute:rms", "--conversations", "1"]) == 1
    assert "bad voice name" in capsys.readouterr().err
    assert _cli(["--out", str(tmp_path / "x"), "--voices", "flite:slt", "--conversations", "1"]) == 1
    assert "Moshi's voice" in capsys.readouterr().err
    assert _cli(["--out", str(tmp_path / "x"), "--voices", USER_VOICE]) == 1
    assert "--hours H or --conversations N" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert _cli(["--out", str(tmp_path / "file"), "--voices", USER_VOICE, "--conversations", "1"]) == 1
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _cli(["--out", str(tmp_path / "x"), "--hours", "-1"])


def test_cli_writes_a_set(tmp_path, capsys):
    out = tmp_path / "cli"
    assert _cli(["--out", str(out), "--voices", USER_VOICE, "--conversations", "1", "--seed", "3",
                 "--exchanges", "1", "1", "--no-progress"]) == 0
    assert "s of audio per CPU second" in capsys.readouterr().err
    (entry,) = _manifest(out)
    assert _read(out, entry)[2]["voice"] == {"moshi": MOSHI_VOICE, "user": USER_VOICE}


def _speech(n_words, word_s=0.3):
    times = [(0.05 + i * word_s, 0.05 + (i + 1) * word_s - 0.05) for i in range(n_words)]
    return mix.Speech(np.zeros(int((times[-1][1] + 0.05) * SR), np.float32), times, True)


def test_a_speaker_never_talks_over_its_own_backchannel():
    # Moshi backchannels just after the user's second-to-last word, then answers 80 ms after the user's last:
    # laid out as planned, the answer would start inside the backchannel (7 of the 2197 synth-v1 conversations)
    lines = [Line(USER, "I like the sea, what colour is it?", "question", gap=0.3),
             Line(MOSHI, "Oh, right, I see.", "backchannel", "during", frac=1.0),
             Line(MOSHI, "It is blue.", "answer", gap=0.08)]
    spoken = [_speech(8), _speech(4), _speech(3)]
    placed = mix._layout(lines, spoken, 1.0, random.Random(0))
    backchannel, answer = placed[1], placed[2]
    assert backchannel.times[0][0] < placed[0].times[-1][1]  # still over the user's line
    assert answer.times[0][0] >= backchannel.times[-1][1] + mix.SAME_SPEAKER_GAP_S - 1e-9
    for s in (MOSHI, USER):  # and no two words of one speaker overlap anywhere
        words = sorted(w for p in placed if p.line.speaker == s for w in p.times)
        assert all(a[1] <= b[0] for a, b in zip(words, words[1:], strict=False))
