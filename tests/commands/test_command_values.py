"""Commands give the values the library gives: `openmoshi helium --greedy`, `openmoshi codec demo`.

Not only exit codes and shapes: the greedy continuation printed twice is the same text, and it is the Python
API's (`generate_text` then the stream decoder); the demo's output wav is Mimi's encode then decode through the
API, up to the 16-bit rounding of the wav.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

sys.path[:0] = [str(Path(__file__).parents[1] / "codec"), str(Path(__file__).parents[1] / "lm")]
from codec_testutils import randomize_model  # noqa: E402
from lm_testutils import kyutai_kwargs, one_thread  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from spm_testutils import train_tiny_spm  # noqa: E402

from openmoshi import cli  # noqa: E402
from openmoshi.codec.mimi import Mimi, MimiConfig  # noqa: E402
from openmoshi.commands.helium import generate_text  # noqa: E402
from openmoshi.inference.sampling import SamplingConfig  # noqa: E402
from openmoshi.lm.config import LMConfig  # noqa: E402
from openmoshi.lm.model import LMModel  # noqa: E402
from openmoshi.lm.text import TextStreamDecoder, TextTokenizer  # noqa: E402

_one_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(scope="module")
def helium_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("helium")
    spm = train_tiny_spm(d, name="spm", vocab_size=320)
    cfg = LMConfig.tiny(text_card=320)
    torch.manual_seed(0)
    model = LMModel(cfg).eval()
    with torch.no_grad():  # sharper logits: greedy near-ties become unlikely
        for p in model.parameters():
            p.mul_(3.0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "weights.safetensors"))
    raw = kyutai_kwargs(cfg) | {"moshi_name": "weights.safetensors", "tokenizer_name": spm.name}
    (d / "config.json").write_text(json.dumps(raw))
    return d, model, TextTokenizer(spm, text_card=cfg.text_card)


def test_helium_greedy_prints_the_python_apis_text_every_time(helium_dir, capsys):
    d, model, tokenizer = helium_dir
    prompt = "Hello there, how"
    argv = ["helium", "--model", str(d), "--max-tokens", "20", "--greedy", "--device", "cpu", prompt]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert cli.main(argv[:-1] + ["--seed", "5", prompt]) == 0  # greedy: the seed changes nothing
    assert capsys.readouterr().out == first

    ids = generate_text(model, tokenizer.encode(prompt), 20, SamplingConfig(greedy=True))
    eos = tokenizer.sp.eos_id()
    ids = ids[: ids.index(eos)] if eos in ids else ids
    decoder = TextStreamDecoder(tokenizer)
    continuation = "".join(decoder.push(t) for t in ids)
    assert continuation.strip()  # something was generated
    assert first == prompt + continuation + "\n"


@pytest.fixture(scope="module")
def mimi_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    model = randomize_model(Mimi(MimiConfig.tiny()), seed=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


@pytest.mark.parametrize("k", [8, 3])
def test_demo_output_is_encode_then_decode(tmp_path, mimi_weights, k, capsys):
    from openmoshi.audio import example_recording, read_audio
    from openmoshi.codec.checkpoint import load_mimi

    cut = read_audio(example_recording())[24000:24000 + 3000]  # 3000 samples: not a whole number of frames
    sf.write(tmp_path / "cut.wav", cut, 24000)
    out = tmp_path / "rt.wav"
    argv = ["codec", "demo", "--weights", str(mimi_weights), "--preset", "tiny", "-k", str(k),
            "-i", str(tmp_path / "cut.wav"), "-o", str(out)]
    assert cli.main(argv) == 0
    wav, rate = sf.read(out, dtype="float32")
    assert rate == 24000 and wav.shape == cut.shape

    mimi = load_mimi(mimi_weights, "tiny")
    fs = mimi.frame_size
    x = torch.zeros(1, 1, -(-len(cut) // fs) * fs)
    x[0, 0, : len(cut)] = torch.from_numpy(read_audio(tmp_path / "cut.wav"))
    with torch.no_grad():
        codes = mimi.encode(x, k)
        expected = mimi.decode(codes)[0, 0, : len(cut)].numpy()
    assert f"[{k}, {codes.shape[-1]}]" in capsys.readouterr().out
    assert np.abs(expected).max() > 0.01
    # 16-bit wav: within one quantisation step (plus float noise of streaming vs batch)
    np.testing.assert_allclose(wav, np.clip(expected, -1, 1), atol=1.5 / 32768, rtol=0)
