"""Model loading errors as a user meets them: offline hub, bad tokenizer, bad or corrupt weights, config.json
with wrong types. Each is one clear message (`error: ...` for helium), exit status 1, no traceback."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from openmoshi import cli
from openmoshi.lm.config import LMConfig
from openmoshi.lm.model import LMModel
from openmoshi.model_files import ModelFilesError, resolve_model_files
from openmoshi.testing.kyutai import kyutai_kwargs
from openmoshi.testing.spm import train_tiny_spm

sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))
from runtime_testutils import build_tiny_repo, single_thread  # noqa: E402,F401

pytestmark = pytest.mark.usefixtures("single_thread")
CFG = LMConfig.tiny(text_card=320)


@pytest.fixture(scope="module")
def helium_dir(tmp_path_factory) -> Path:
    """A folder with config.json, the LM weights (our naming) and the tokenizer: what helium needs."""
    d = tmp_path_factory.mktemp("helium")
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in LMModel(CFG).state_dict().items()}, str(d / "model.safetensors"))
    train_tiny_spm(d / "spm", vocab_size=320).rename(d / "tokenizer_spm_32k_3.model")
    shutil.rmtree(d / "spm")
    (d / "config.json").write_text(json.dumps(kyutai_kwargs(CFG)))
    return d


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _helium(capsys, *argv) -> tuple[int, str]:
    code = cli.main(["helium", *map(str, argv), "--max-tokens", "2", "--device", "cpu", "hello"])
    return code, capsys.readouterr().err


def _offline(monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty_cache" / "hub"))


def test_helium_works_on_the_folder(helium_dir, capsys):
    code, err = _helium(capsys, "--model", helium_dir, "--seed", "1")
    assert code == 0, err


def test_helium_offline_gives_the_shared_message_at_once(monkeypatch, tmp_path, capsys):
    """No retries, and the true cause (offline, not in the cache) instead of "not found in the repo"."""
    _offline(monkeypatch, tmp_path)
    code, err = _helium(capsys)
    assert code == 1
    assert err.startswith("error: model files missing for kyutai/moshiko-pytorch-bf16:")
    for name in ("model.safetensors", "tokenizer_spm_32k_3.model"):
        assert f"{name} from https://huggingface.co/kyutai/moshiko-pytorch-bf16: not in the local cache, and " \
               "HF_HUB_OFFLINE is set" in err
    assert "Mimi" not in err  # helium does not need the codec
    assert "--weights FILE / --tokenizer FILE" in err and "unset HF_HUB_OFFLINE" in err
    assert "not found in the Hugging Face repo" not in err


def test_helium_bad_tokenizer(helium_dir, tmp_path, capsys):
    d = _copy(helium_dir, tmp_path / "m")
    (d / "tokenizer_spm_32k_3.model").write_bytes(b"\x00garbage")
    code, err = _helium(capsys, "--model", d)
    assert code == 1 and err.startswith("error: ") and "is not a SentencePiece model" in err
    code, err = _helium(capsys, "--model", helium_dir, "--tokenizer", tmp_path / "none.model")
    assert code == 1 and err.startswith("error: model files missing") and "none.model" in err


def test_helium_checkpoint_errors(helium_dir, tmp_path, capsys):
    d = _copy(helium_dir, tmp_path / "m")
    weights = d / "model.safetensors"
    state = {k: v.contiguous() for k, v in LMModel(CFG).state_dict().items()}
    # another model's weights: every mis-shaped tensor named
    save_file({k: v.contiguous() for k, v in LMModel(CFG.replace(dim=32, num_heads=2)).state_dict().items()},
              str(weights))
    code, err = _helium(capsys, "--model", d)
    assert code == 1 and err.startswith("error: ") and "does not fit the model" in err and "mis-shaped" in err
    # NaN weights: refused at load, naming the tensor
    state["transformer.layers.1.attn.in_proj.weight"][0, 0] = float("nan")
    save_file(state, str(weights))
    code, err = _helium(capsys, "--model", d)
    assert code == 1 and "transformer.layers.1.attn.in_proj.weight holds 1 NaN" in err
    # truncated file
    data = (helium_dir / "model.safetensors").read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    code, err = _helium(capsys, "--model", d)
    assert code == 1 and err.startswith("error: ") and "truncated" in err
    # not a safetensors file
    (d / "model.bin").write_bytes(b"PK\x03\x04")
    code, err = _helium(capsys, "--model", helium_dir, "--weights", d / "model.bin")
    assert code == 1 and "only safetensors" in err


@pytest.mark.parametrize("change,named", [
    ({"dim": None}, "dim=None"), ({"moshi_name": 5}, "moshi_name=5"),
    ({"lm_gen_config": "fast"}, "lm_gen_config='fast'"), ({"num_layers": "2"}, "num_layers must be an integer"),
])
def test_helium_config_wrong_types(helium_dir, tmp_path, capsys, change, named):
    d = _copy(helium_dir, tmp_path / "m")
    (d / "config.json").write_text(json.dumps({**kyutai_kwargs(CFG), **change}))
    code, err = _helium(capsys, "--model", d)
    assert code == 1 and err.startswith(f"error: {d / 'config.json'}: unsupported Kyutai config.json") and named in err
    (d / "config.json").write_text("{not json")
    code, err = _helium(capsys, "--model", d)
    assert code == 1 and "cannot read model config" in err


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return build_tiny_repo(tmp_path_factory.mktemp("tiny_repo"), seed=1)


@pytest.mark.parametrize("mimi,named", [
    ({"preset": "tiny", "seanet": {"ratioz": [2, 2]}}, "unknown key mimi.seanet.ratioz"),
    ({"preset": "tiny", "seanet": {"ratios": "2222"}}, "mimi.seanet.ratios must be a list"),
    ({"preset": "tiny", "seanet": [1]}, "mimi.seanet must be an object"),
    ({"preset": "tiny", "num_codebooks": 99}, "invalid mimi: num_codebooks 99"),
    ({"preset": 3}, "unknown Mimi preset 3"),
    ({"preset": "tiny", "transformer": {"num_heads": 0}}, "invalid mimi.transformer"),
])
def test_mimi_overrides_are_checked(repo, tmp_path, mimi, named):
    from openmoshi.inference.models import load_models

    d = _copy(repo, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "mimi": mimi}))
    with pytest.raises(ValueError) as err:
        load_models(resolve_model_files(str(d)), "cpu")
    assert named in str(err.value)


def test_chat_loading_errors_are_messages(repo, tmp_path, capsys):
    """chat goes through the same resolver and loaders: a clear message and status 1, before any audio work."""
    wav = tmp_path / "in.wav"
    import soundfile as sf

    sf.write(wav, torch.zeros(2400).numpy(), 24000)
    d = _copy(repo, tmp_path / "m")
    (d / "tokenizer_spm_32k_3.model").write_bytes(b"")
    argv = ["chat", "--model", str(d), "-i", str(wav), "-o", str(tmp_path / "out.wav"), "--device", "cpu"]
    assert cli.main(argv) == 1
    assert "is not a SentencePiece model" in capsys.readouterr().err
    shutil.copy(repo / "tokenizer_spm_32k_3.model", d / "tokenizer_spm_32k_3.model")
    from safetensors.torch import load_file

    mimi = load_file(str(repo / "tokenizer-e351c8d8-checkpoint125.safetensors"))
    mimi["decoder.model.0.conv.conv.weight"][0] = float("inf")
    save_file(mimi, str(d / "tokenizer-e351c8d8-checkpoint125.safetensors"))
    assert cli.main(argv) == 1
    assert "decoder.model.0.conv.conv.weight holds" in capsys.readouterr().err
    assert not (tmp_path / "out.wav").exists()
    (d / "model.safetensors").unlink()
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "model files missing" in err and str(d / "model.safetensors") in err


def test_resolver_lists_only_the_roles_asked_for(helium_dir):
    with pytest.raises(ModelFilesError) as err:
        resolve_model_files(str(helium_dir))  # all three: Mimi is missing
    assert "Mimi codec" in str(err.value) and "language model" not in str(err.value)
    files = resolve_model_files(str(helium_dir), roles=("moshi", "tokenizer"))
    assert files.mimi is None and files.moshi == helium_dir / "model.safetensors"
    with pytest.raises(ValueError, match="roles"):
        resolve_model_files(str(helium_dir), roles=("weights",))
