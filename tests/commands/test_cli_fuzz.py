"""CLI fuzz: every command over a corpus of bad inputs exits non-zero with an `error:` message, no traceback, and
leaves every file as it was.

The cases run in-process (`cli.main(argv)`, SystemExit caught, stderr captured): most are refused before any
model loads, so the whole corpus takes seconds. A few run as real subprocesses (`python -m openmoshi.cli`), to
see what a user sees. The hub is off (HF_HUB_OFFLINE, an empty cache): nothing may reach the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codec"))
from runtime_testutils import build_tiny_repo  # noqa: E402

from openmoshi import cli  # noqa: E402

FRAME = 48  # MimiConfig.tiny's frame


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Input files of every odd kind; the names are the corpus' placeholders."""
    import torch  # noqa: F401  (the weights below)
    from codec_testutils import randomize_model
    from safetensors.torch import save_file

    from openmoshi.codec.mimi import Mimi, MimiConfig

    d = tmp_path_factory.mktemp("fuzz")
    model = randomize_model(Mimi(MimiConfig.tiny()), seed=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, d / "w.safetensors")
    rng = np.random.default_rng(0)
    sf.write(d / "ok.wav", (0.1 * rng.standard_normal(5 * FRAME)).astype(np.float32), 24000)
    sf.write(d / "empty.wav", np.zeros(0, np.float32), 24000)
    sf.write(d / "nan.wav", np.full(100, np.nan, np.float32), 24000, subtype="FLOAT")
    (d / "garbage.wav").write_bytes(rng.bytes(300))
    (d / "text.txt").write_text("not audio, not codes\n")
    (d / "zero.wav").write_bytes(b"")
    np.savez(d / "ok.npz", codes=np.zeros((2, 5), np.int32), num_samples=np.int64(5 * FRAME))
    raw = (d / "ok.npz").read_bytes()
    (d / "cut.npz").write_bytes(raw[: len(raw) - 40])
    (d / "garbage.npz").write_bytes(rng.bytes(300))
    np.save(d / "codes.npy", np.zeros((2, 5), np.int32))
    np.savez(d / "obj.npz", codes=np.array([[None]], dtype=object))
    np.savez(d / "ns_arr.npz", codes=np.zeros((2, 5), np.int32), num_samples=np.arange(3))
    np.savez(d / "ns_neg.npz", codes=np.zeros((2, 5), np.int32), num_samples=np.int64(-1))
    np.savez(d / "ns_big.npz", codes=np.zeros((2, 5), np.int32), num_samples=np.int64(10**6))
    np.savez(d / "range.npz", codes=np.full((2, 5), 64, np.int32))
    (d / "folder").mkdir()
    os.link(d / "ok.wav", d / "hard.wav")
    (d / "sym.npz").symlink_to(d / "ok.npz")
    repo = build_tiny_repo(d / "repo")
    paths = {p.stem if p.suffix != ".npz" else p.stem + "_npz": str(p) for p in d.iterdir()}
    paths.update(d=str(d), repo=str(repo), new=str(d / "out" / "new"), missing=str(d / "missing"))
    return paths


CODEC = ["--weights", "{w}", "--preset", "tiny"]
DEMO = ["codec", "demo", *CODEC]
ENC = ["codec", "encode", *CODEC]
DEC = ["codec", "decode", *CODEC]
CHAT = ["chat", "--model", "{repo}", "--no-progress"]
HELIUM = ["helium", "hello", "--model", "{repo}"]
NANO = ["demo", "--model", "{repo}", "--no-progress"]  # the conversation demo
CORPUS: list[list[str]] = [
    # demo: an output folder that is a file or under one; odd inputs; bad numbers; a missing model
    [*NANO, "-o", "{ok}"], [*NANO, "-i", "{ok}", "-o", "{ok}/x"], [*NANO, "-i", "{garbage}", "-o", "{new}"],
    [*NANO, "-i", "{missing}.wav", "-o", "{new}"], [*NANO, "-i", "{folder}", "-o", "{new}"],
    [*NANO, "-i", "{empty}", "-o", "{new}"], [*NANO, "-i", "{text}", "-o", "{new}"],
    [*NANO, "-i", "{ok}", "-o", "{new}", "--answer-seconds", "-1"], [*NANO, "-i", "{ok}", "-o", "{new}", "-o", ""],
    [*NANO, "-i", "{ok}", "-o", "{new}", "--device", "tpu"], [*NANO, "-i", "{ok}", "-o", "{new}", "--threads", "0"],
    [*NANO, "-i", "{ok}", "-o", "{new}", "--seed", "-1"],
    ["demo", "--model", "{missing}", "-i", "{ok}", "-o", "{new}"],
    # codec demo: outputs that are inputs, folders, wrong suffixes; odd inputs; bad numbers
    [*DEMO, "-i", "{ok}", "-o", "{ok}"], [*DEMO, "-i", "{ok}", "-o", "{hard}"], [*DEMO, "-i", "{ok}", "-o", "{d}"],
    [*DEMO, "-i", "{ok}", "-o", "{new}.mp3"], [*DEMO, "-i", "{ok}", "-o", "{new}"],
    [*DEMO, "-i", "{ok}", "-o", "{ok}/x.wav"], [*DEMO, "-i", "{ok}", "-o", "{w}"],
    [*DEMO, "-i", "{garbage}", "-o", "{new}.wav"], [*DEMO, "-i", "{empty}", "-o", "{new}.wav"],
    [*DEMO, "-i", "{zero}", "-o", "{new}.wav"], [*DEMO, "-i", "{nan}", "-o", "{new}.wav"],
    [*DEMO, "-i", "{missing}.wav", "-o", "{new}.wav"], [*DEMO, "-i", "{folder}", "-o", "{new}.wav"],
    [*DEMO, "-i", "{text}", "-o", "{new}.wav"], [*DEMO, "-i", "{ok}", "-o", "{new}.wav", "-k", "0"],
    [*DEMO, "-i", "{ok}", "-o", "{new}.wav", "-k", "33"], [*DEMO, "-i", "{ok}", "-o", "{new}.wav", "-k", "x"],
    [*DEMO, "-i", "{ok}", "-o", "{new}.wav", "--threads", "-1"],
    [*DEMO, "-i", "{ok}", "-o", "{new}.wav", "--threads", "1.5"],
    ["codec", "demo", "--weights", "{ok}", "--preset", "tiny", "-i", "{ok}", "-o", "{new}.wav"],  # not safetensors
    ["codec", "demo", "--weights", "{missing}.safetensors", "-i", "{ok}", "-o", "{new}.wav"],
    ["codec", "demo", "-i", "{ok}", "-o", "{new}.wav"],  # Kyutai's weights: not cached, hub off
    # codec encode
    [*ENC, "{ok}", "{ok}"], [*ENC, "{ok_npz}", "{ok_npz}"], [*ENC, "{ok_npz}", "{sym_npz}"],
    [*ENC, "{ok}", "{new}.wav"],
    [*ENC, "{ok}", "{new}"], [*ENC, "{ok}", "{folder}"], [*ENC, "{ok}", "{d}/"], [*ENC, "{garbage}", "{new}.npz"],
    [*ENC, "{empty}", "{new}.npz"], [*ENC, "{zero}", "{new}.npz"], [*ENC, "{text}", "{new}.npz"],
    [*ENC, "{ok_npz}", "{new}.npz"], [*ENC, "{missing}.wav", "{new}.npz"], [*ENC, "{folder}", "{new}.npz"],
    [*ENC, "-k", "0", "{ok}", "{new}.npz"], [*ENC, "-k", "-3", "{ok}", "{new}.npz"],
    [*ENC, "--threads", "0", "{ok}", "{new}.npz"], ["codec", "encode", "--weights", "{w}", "{ok}", "{new}.npz"],
    ["codec", "encode", "--weights", "{garbage}", "--preset", "tiny", "{ok}", "{new}.npz"],
    ["codec", "encode", "--weights", "{w}", "--preset", "huge", "{ok}", "{new}.npz"], ["codec", "encode", "{ok}"],
    ["codec"], ["codec", "transcode", "{ok}", "{new}.npz"],
    # codec decode
    [*DEC, "{ok_npz}", "{ok_npz}"], [*DEC, "{ok_npz}", "{sym_npz}"], [*DEC, "{ok_npz}", "{new}.npz"],
    [*DEC, "{ok_npz}", "{folder}"], [*DEC, "{ok_npz}", "{w}"], [*DEC, "{cut_npz}", "{new}.wav"],
    [*DEC, "{garbage_npz}", "{new}.wav"], [*DEC, "{codes}", "{new}.wav"], [*DEC, "{obj_npz}", "{new}.wav"],
    [*DEC, "{ns_arr_npz}", "{new}.wav"], [*DEC, "{ns_neg_npz}", "{new}.wav"], [*DEC, "{ns_big_npz}", "{new}.wav"],
    [*DEC, "{range_npz}", "{new}.wav"], [*DEC, "{ok}", "{new}.wav"], [*DEC, "{zero}", "{new}.wav"],
    [*DEC, "{text}", "{new}.wav"], [*DEC, "{missing}.npz", "{new}.wav"], [*DEC, "{folder}", "{new}.wav"],
    # helium
    [*HELIUM, "--max-tokens", "0"], [*HELIUM, "--max-tokens", "-5"], [*HELIUM, "--seed", str(2**64)],
    [*HELIUM, "--seed", "-1"], [*HELIUM, "--device", "meta"], [*HELIUM, "--device", "gpu9"],
    [*HELIUM, "--temperature", "nan"], [*HELIUM, "--temperature", "inf"], [*HELIUM, "--temperature", "-1"],
    [*HELIUM, "--top-p", "2"], [*HELIUM, "--top-k", "-1"], [*HELIUM, "--threads", "-1"],
    ["helium", "hello", "--model", "{missing}"], ["helium"],
    # chat
    [*CHAT, "-i", "{ok}", "-o", "{ok}"], [*CHAT, "-i", "{ok}", "-o", "{hard}"],
    [*CHAT, "-i", "{ok}", "-o", "{new}.json"],
    [*CHAT, "-i", "{ok}", "-o", "{new}.wav", "--text-json", "{new}.wav"],
    [*CHAT, "-i", "{ok}", "-o", "{new}.wav", "--text-srt", "{new}.json"],
    [*CHAT, "-i", "{ok}", "-o", "{new}.wav", "--save-tokens", "{ok_npz}.wav"],
    [*CHAT, "-i", "{ok}", "-o", "{new}.wav", "--save-tokens", "{ok}"],
    [*CHAT, "-i", "{ok}", "-o", "{new}.wav", "--text-json", "{ok}"],
    [*CHAT, "-i", "{ok}", "-o", "{folder}"], [*CHAT, "-i", "{ok}", "-o", "{ok}/x.wav"], [*CHAT, "-i", "{ok}"],
    [*CHAT, "-i", "{garbage}", "-o", "{new}.wav"], [*CHAT, "-i", "{empty}", "-o", "{new}.wav"],
    [*CHAT, "-i", "{missing}.wav", "-o", "{new}.wav"], [*CHAT, "-i", "{folder}", "-o", "{new}.wav"],
    [*CHAT, "-i", "{nan}", "-o", "{new}.wav"],
    *([*CHAT, "-i", "{ok}", "-o", "{new}.wav", *bad] for bad in (
        ["--temp", "nan"], ["--temp", "inf"], ["--temp", "-0.5"], ["--temp-text", "nan"], ["--top-k", "-1"],
        ["--top-k-text", "1e3"], ["--seed", str(2**64)], ["--seed", "-3"], ["--seed", "1.5"], ["--threads", "-1"],
        ["--threads", "100000"], ["--device", "meta"], ["--duration", "0"], ["--model", "{missing}"],
        ["--moshi-weight", "{missing}.safetensors"], ["--moshi-weight", "{ok}"], ["--mimi-weight", "{garbage}"],
    )),
]


def _format(argv: list[str], paths: dict[str, str]) -> list[str]:
    return [a.format(**paths) for a in argv]


def _files(folder: str) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted(Path(folder).rglob("*")):
        key = str(p.relative_to(folder))
        out[key] = p.read_bytes() if p.is_file() and not p.is_symlink() else ("dir" if p.is_dir() else "link")
    return out


@pytest.fixture
def hub_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hc

    for name, value in (("HF_HUB_OFFLINE", "1"), ("HF_HOME", str(tmp_path / "hf")),
                        ("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


def test_every_bad_input_is_a_clean_error(sandbox, hub_off, capsys: pytest.CaptureFixture) -> None:
    before = _files(sandbox["d"])
    failures = []
    for template in CORPUS:
        argv = _format(template, sandbox)
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        lines = err.splitlines()
        if code in (0, None) or not any(line.startswith("error:") for line in lines) or "Traceback" in err:
            failures.append(f"{' '.join(template)} -> exit {code}: {err[-300:]!r}")
        if _files(sandbox["d"]) != before:
            failures.append(f"{' '.join(template)} changed the files")
            before = _files(sandbox["d"])
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("template", [
    [*DEC, "{ok_npz}", "{ok_npz}"], [*DEMO, "-i", "{ok}", "-o", "{ok}"], [*ENC, "{ok}", "{new}.npz", "--threads", "-1"],
    [*CHAT, "-i", "{ok}", "-o", "{new}.json"],
])
def test_a_few_in_a_real_process(sandbox, template) -> None:
    before = _files(sandbox["d"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-m", "openmoshi.cli", *_format(template, sandbox)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode != 0 and out.stderr.startswith("error:") and "Traceback" not in out.stderr, out.stderr
    assert _files(sandbox["d"]) == before
