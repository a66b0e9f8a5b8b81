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
