"""`openmoshi helium`: Helium as a text model, on a tiny random model and tokenizer built in a temp folder."""

import json

import pytest
import sentencepiece
import torch
from lm_testutils import kyutai_kwargs, one_thread
from safetensors.torch import save_file

from openmoshi.cli import main as cli_main
from openmoshi.commands.helium import generate_text
from openmoshi.inference.sampling import SamplingConfig
from openmoshi.lm.config import LMConfig
from openmoshi.lm.model import LMModel

_one_thread = pytest.fixture(autouse=True)(one_thread)
CORPUS = "the cat sat on the mat and the dog ate the bone while birds were singing songs\n" * 30


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("helium")
    (d / "corpus.txt").write_text(CORPUS)
    sentencepiece.SentencePieceTrainer.train(
        input=str(d / "corpus.txt"), model_prefix=str(d / "spm"), vocab_size=280, byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2,
    )
    cfg = LMConfig.tiny(text_card=320)
    torch.manual_seed(0)
    model = LMModel(cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "weights.safetensors"))
    raw = kyutai_kwargs(cfg) | {"moshi_name": "weights.safetensors", "tokenizer_name": "spm.model"}
    (d / "config.json").write_text(json.dumps(raw))
    return d, model


def test_greedy_continuation_matches_batch_recomputation(model_dir):
    _, model = model_dir
    model.eval()
    prompt = [10, 20, 30, 40]
    out = generate_text(model, prompt, 12, SamplingConfig(greedy=True))
    assert len(out) == 12
    # Re-run the whole sequence in batch mode: every generated token is the argmax of the previous position.
    seq = [model.cfg.text_card] + prompt + out
    tokens = torch.full((1, 17, len(seq)), -1)
    tokens[:, :, 0] = model.initial_tokens()
    tokens[0, 0, 1:] = torch.tensor(seq[1:])
    with torch.no_grad():
        _, logits = model.forward_temporal(tokens)
    expected = logits[0, len(prompt):-1].argmax(-1).tolist()
    assert out == expected


def test_cli_runs_and_is_seeded(model_dir, capsys):
    d, _ = model_dir
    argv = ["helium", "--model", str(d), "--max-tokens", "8", "--seed", "3", "--device", "cpu", "the cat"]
    assert cli_main(argv) == 0
    first = capsys.readouterr().out
    assert first.startswith("the cat") and len(first.strip()) > len("the cat")
    assert cli_main(argv) == 0
    assert capsys.readouterr().out == first
    assert cli_main(argv[:-1] + ["--greedy", "the cat"]) == 0


def test_cli_missing_files(tmp_path, capsys):
    assert cli_main(["helium", "--model", str(tmp_path), "--device", "cpu", "hi"]) == 1
    assert "model.safetensors" in capsys.readouterr().err
