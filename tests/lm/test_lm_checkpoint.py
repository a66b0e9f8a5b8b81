"""Loading a model.safetensors file (Kyutai's published naming) into fp32 and bf16 models."""


import pytest
import torch
from lm_testutils import make_reference, published_state_dict
from safetensors.torch import save_file

from openmoshi.lm.checkpoint import load_lm
from openmoshi.lm.config import LMConfig


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_load_published_file(tmp_path, dtype):
    cfg = LMConfig.tiny(acoustic_delay=2)
    ref = make_reference(cfg, seed=3)
    path = tmp_path / "model.safetensors"
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in published_state_dict(ref).items()}, str(path))
    model = load_lm(path, cfg, dtype=dtype)
    assert not model.training
    assert all(p.dtype == dtype for p in model.parameters())
    expected = ref.state_dict()["depformer.layers.1.self_attn.in_projs.2.weight"].to(torch.bfloat16).to(dtype)
    assert torch.equal(model.depformer.transformer.layers[1].attn.in_proj.weight[2], expected)
    assert torch.equal(model.out_norm.weight, ref.out_norm.alpha.view(-1).to(torch.bfloat16).to(dtype))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_lm(tmp_path / "nope.safetensors", LMConfig.tiny())
    p = tmp_path / "model.bin"
    p.write_bytes(b"x")
    with pytest.raises(ValueError, match="safetensors"):
        load_lm(p, LMConfig.tiny())


def test_errors_are_the_shared_checkpoint_error(tmp_path):
    """One error type for both loaders: mismatches, corrupt files and NaN weights, each naming the tensor."""
    from openmoshi.checkpoint import CheckpointError
    from openmoshi.codec.checkpoint import CheckpointError as CodecError
    from openmoshi.lm.checkpoint import CheckpointMismatch

    assert CodecError is CheckpointError is CheckpointMismatch and issubclass(CheckpointError, ValueError)
    cfg = LMConfig.tiny()
    state = {k: v.contiguous().clone() for k, v in published_state_dict(make_reference(cfg, seed=1)).items()}
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"3 mis-shaped: .*text_emb.weight \(101, 64\)") as err:
        load_lm(path, cfg.replace(text_card=90))
    assert "does not fit the model" in str(err.value)
    bad = dict(state)
    bad["depformer.layers.0.self_attn.in_proj_weight"] = bad["depformer.layers.0.self_attn.in_proj_weight"].clone()
    bad["depformer.layers.0.self_attn.in_proj_weight"][5, 1] = float("nan")
    save_file(bad, str(path))
    with pytest.raises(CheckpointError, match="depformer.layers.0.self_attn.in_proj_weight holds 1 NaN"):
        load_lm(path, cfg)
    # data offsets disagreeing with the shape (a header edited or written by a buggy tool)
    save_file(state, str(path))
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = data[8:8 + size].replace(b'"F32"', b'"F16"', 1)
    path.write_bytes(data[:8] + header + data[8 + size:])
    with pytest.raises(CheckpointError, match="needs"):
        load_lm(path, cfg)
