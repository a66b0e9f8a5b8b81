"""`openmoshi chat` end to end on tiny random models in Kyutai's layout, checked against the reference LMGen."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))  # shared runtime test helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from lm_testutils import make_reference  # noqa: E402
from moshi.models.lm import LMGen  # noqa: E402
from runtime_testutils import build_tiny_repo, single_thread, tiny_lm_config  # noqa: E402, F401

from openmoshi import cli  # noqa: E402
from openmoshi.audio import read_audio  # noqa: E402
from openmoshi.commands import chat  # noqa: E402
from openmoshi.inference.models import load_models, resolve_model_files  # noqa: E402
from openmoshi.inference.transcript import read_json, words_from_tokens  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
CONFIGS = {"moshiko-like": tiny_lm_config(), "delay2": tiny_lm_config(acoustic_delay=2),
           "dep_q16": tiny_lm_config(dep_q=16)}  # also predicting the user: no user codes go in
SEED = 4


@pytest.fixture(scope="module", params=list(CONFIGS))
def repo(request, tmp_path_factory):
    cfg = CONFIGS[request.param]
    return build_tiny_repo(tmp_path_factory.mktemp(request.param), seed=SEED, lm_cfg=cfg), cfg


def write_user(path: Path, seconds: float = 0.021, rate: int = 16000, seed: int = 0) -> Path:
    """Stereo noise at 16 kHz, not a whole number of frames long: resampling, mixdown and padding all run."""
    rng = np.random.default_rng(seed)
    sf.write(str(path), (0.3 * rng.standard_normal((int(seconds * rate), 2))).astype(np.float32), rate)
    return path


def run_chat(repo_dir, tmp_path, *extra):
    user = write_user(tmp_path / "user.wav")
    out = tmp_path / "out" / "conv.wav"
    argv = ["chat", "--model", str(repo_dir), "--input", str(user), "--output", str(out), "--no-progress",
            "--save-tokens", str(tmp_path / "tokens.npz"), *extra]
    assert cli.main(argv) == 0
    return user, out, dict(np.load(tmp_path / "tokens.npz"))


def reference_tokens(cfg, user_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference LMGen, greedy, on the same weights and the same per-step user codes (-2: no output)."""
    ref = make_reference(cfg, seed=SEED)
    gen = LMGen(ref, use_sampling=False)
    T = user_codes.shape[1]
    text = np.full(T, -2, dtype=np.int64)
    audio = np.full((cfg.dep_q, T), -2, dtype=np.int64)
    with gen.streaming(1), torch.no_grad():
        for t in range(T):
            out = gen.step(torch.from_numpy(user_codes[:, t]).view(1, -1, 1))
            if out is not None:
                text[t], audio[:, t] = out[0, 0, 0].item(), out[0, 1:, 0].numpy()
    return text, audio


def test_chat_over_a_recording(repo, tmp_path):
    repo_dir, cfg = repo
    user, out, tokens = run_chat(repo_dir, tmp_path, "--greedy")
    models = load_models(resolve_model_files(str(repo_dir)))
    mimi, fs, sr, max_delay = models.mimi, models.mimi.frame_size, models.mimi.sample_rate, cfg.max_delay
    heard = read_audio(user, sr)  # mono 24 kHz, what the session was fed
    n = -(-heard.shape[0] // fs)
    steps = n + max_delay  # session steps: the input, then max_delay frames of silence
    T = steps + 1  # generator steps: the first frame is fed twice

    # --save-tokens: one column per generator step
    assert tokens["user_codes"].shape == (cfg.num_user_codebooks, T)
    assert tokens["text"].shape == (T,) and tokens["audio"].shape == (cfg.dep_q, T)
    padded = np.zeros((steps) * fs, dtype=np.float32)
    padded[: heard.shape[0]] = heard
    codes = mimi.encode(torch.from_numpy(padded).view(1, 1, -1), num_codebooks=8)[0].numpy()
    codes = codes[: cfg.num_user_codebooks]
    assert np.array_equal(tokens["user_codes"][:, 0], codes[:, 0])  # the first frame, twice
    assert np.array_equal(tokens["user_codes"][:, 1:], codes)  # then every frame, then silence
    ref_text, ref_audio = reference_tokens(cfg, tokens["user_codes"])
    assert np.array_equal(tokens["text"], ref_text)
    assert np.array_equal(tokens["audio"], ref_audio)
    assert (tokens["text"][: max_delay] == -2).all() and (tokens["text"][max_delay:] >= 0).all()

    # the stereo wav: left Moshi (frame t decoded at session step t), right the user
    wav, rate = sf.read(str(out), dtype="float32")
    assert rate == sr and wav.shape == (steps * fs, 2)
    np.testing.assert_allclose(wav[:, 1], np.clip(padded, -1, 1), atol=1.5 / 32768)
    produced = tokens["audio"][:8, 1:]  # Moshi's codebooks; session step t = generator column t + 1
    valid = (produced >= 0).all(axis=0)
    first = int(np.argmax(valid))
    assert first == max_delay - 1 and valid[first:].all()
    assert np.abs(wav[: first * fs, 0]).max(initial=0) == 0  # silence before the first output
    moshi = mimi.decode(torch.from_numpy(produced[:, first:])[None])[0, 0].numpy()
    np.testing.assert_allclose(wav[first * fs :, 0], np.clip(moshi, -1, 1), atol=3 / 32768)

    # the inner monologue: JSON (Kyutai's sidecar layout) and SRT beside the wav
    words = words_from_tokens(tokens["text"][1:], models.tokenizer, fs / sr)
    assert read_json(out.with_suffix(".json")) == [type(w)(w.text, w.start, w.end) for w in words]
    data = json.loads(out.with_suffix(".json").read_text())
    assert set(data) == {"text", "alignments"}
    srt = out.with_suffix(".srt").read_text()
    assert (srt.startswith("1\n00:00:00,") if words else srt == "")


def test_seeded_sampling_is_reproducible(tmp_path):
    repo_dir = build_tiny_repo(tmp_path / "repo", seed=1)
    runs = []
    for i, seed in enumerate(["7", "7", "8"]):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        runs.append(run_chat(repo_dir, folder, "--seed", seed, "--temp", "1.0", "--top-k", "0")[2])
    assert np.array_equal(runs[0]["audio"], runs[1]["audio"]) and np.array_equal(runs[0]["text"], runs[1]["text"])
    assert not np.array_equal(runs[0]["audio"], runs[2]["audio"])


def parse(*argv):
    import argparse

    parser = argparse.ArgumentParser()
    chat.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_sampling_flags_then_config_then_defaults():
    text, audio = chat.sampling_configs(parse(), None)
    assert (text.temperature, text.top_k, audio.temperature, audio.top_k) == (0.7, 25, 0.8, 250)
    gen_config = {"temp": 0.6, "top_k_text": 10}
    text, audio = chat.sampling_configs(parse("--top-k", "50", "--temp-text", "0.3"), gen_config)
    assert (text.temperature, text.top_k, audio.temperature, audio.top_k) == (0.3, 10, 0.6, 50)
    text, audio = chat.sampling_configs(parse("--greedy"), None)
    assert text.is_greedy and audio.is_greedy


@pytest.mark.parametrize("argv, message", [
    (["--input", "x.wav"], "--input needs --output"),
    (["--input", "x.wav", "--output", "y.wav", "--device", "meta"], "--device"),
])
def test_contradictory_flags(argv, message, capsys):
    assert cli.main(["chat", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


@pytest.mark.parametrize("argv, message", [
    (["--temp", "-1"], "--temp"), (["--temp", "nan"], "finite"), (["--temp-text", "inf"], "finite"),
    (["--top-k-text", "-3"], "--top-k-text"), (["--seed", str(2**64)], "--seed"), (["--seed", "-1"], "--seed"),
    (["--threads", "-1"], "--threads"), (["--threads", "0"], "--threads"), (["--duration", "0"], "--duration"),
])
def test_bad_values_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["chat", "--input", "x.wav", "--output", "y.wav", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument") and message in err and "Traceback" not in err


def test_missing_model_and_bad_input_are_plain_errors(tmp_path, capsys):
    user = write_user(tmp_path / "u.wav")
    assert cli.main(["chat", "--model", str(tmp_path), "--input", str(user), "--output", str(tmp_path / "o.wav")]) == 1
    assert "model files missing" in capsys.readouterr().err
    repo_dir = build_tiny_repo(tmp_path / "repo")
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    argv = ["chat", "--model", str(repo_dir), "--input", str(tmp_path / "bad.wav"), "--output", str(tmp_path / "o.wav")]
    assert cli.main(argv) == 1
    assert "cannot read" in capsys.readouterr().err


def test_microphone_mode_without_sounddevice(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # `import sounddevice` raises ImportError
    assert cli.main(["chat"]) == 2
    err = capsys.readouterr().err
    assert "needs the sounddevice package" in err and "--input" in err


def test_microphone_mode_without_audio_device(monkeypatch, capsys):
    class PortAudioError(Exception):
        pass

    def query_devices(kind=None):
        raise PortAudioError("Error querying device -1")

    fake = types.SimpleNamespace(PortAudioError=PortAudioError, query_devices=query_devices)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    assert cli.main(["chat"]) == 2
    assert "no audio input device found" in capsys.readouterr().err


def test_outputs_never_collide_nor_replace_the_input(tmp_path, capsys):
    """`-o conv.json`, `--text-json` = `--output`, `-i X -o X`, `--save-tokens` = the input: refused before the
    model loads (the model folder does not even exist), every file byte for byte unchanged, nothing written."""
    user = write_user(tmp_path / "user.wav")
    conv = tmp_path / "conv.wav"
    conv.write_bytes(b"an earlier conversation")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    model = ["--model", str(tmp_path / "no_model")]
    cases = [
        (["-i", user, "-o", tmp_path / "conv.json"], "same file"),  # the words' default path is conv.json too
        (["-i", user, "-o", tmp_path / "conv.json", "--text-json", tmp_path / "w.json"], "must end in .wav"),
        (["-i", user, "-o", conv, "--text-json", conv], "same file"),
        (["-i", user, "-o", tmp_path / "new.wav", "--text-srt", tmp_path / "new.srt", "--text-json",
          tmp_path / "new.srt"], "same file"),
        (["-i", user, "-o", tmp_path / "new.wav", "--text-json", tmp_path / "new.txt"], "must end in .json"),
        (["-i", user, "-o", user], "refusing to overwrite"),
        (["-i", user, "-o", tmp_path / "user.WAV.wav", "--save-tokens", user], "refusing to overwrite"),
        (["-i", user, "-o", tmp_path / "o.wav", "--save-tokens", tmp_path / "t.np"], "must end in .npz"),
        (["-i", user, "-o", tmp_path / "x" / ".." / "user.wav"], "refusing to overwrite"),
        (["-i", user, "-o", tmp_path], "is a folder"),
        (["-i", user, "-o", tmp_path / "user.wav" / "o.wav"], "is a file"),
    ]
    for argv, message in cases:
        assert cli.main(["chat", *model, *map(str, argv)]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err, (argv, err)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_side_outputs_in_new_folders_are_created(tmp_path):
    repo_dir = build_tiny_repo(tmp_path / "repo")
    user = write_user(tmp_path / "user.wav")
    json_path, srt_path, tokens = tmp_path / "a" / "b" / "w.json", tmp_path / "c" / "w.srt", tmp_path / "d" / "t.npz"
    argv = ["chat", "--model", str(repo_dir), "-i", str(user), "-o", str(tmp_path / "o" / "conv.wav"), "--no-progress",
            "--greedy", "--threads", "1", "--text-json", str(json_path), "--text-srt", str(srt_path),
            "--save-tokens", str(tokens)]
    assert cli.main(argv) == 0
    assert json_path.is_file() and srt_path.is_file() and tokens.is_file() and (tmp_path / "o" / "conv.wav").is_file()
    assert not (tmp_path / "o" / "conv.json").exists()  # the explicit paths replace the defaults
    for folder in ("a/b", "c", "d", "o"):  # exactly the named files, no temporary file left behind
        assert len(list((tmp_path / folder).iterdir())) == 1
