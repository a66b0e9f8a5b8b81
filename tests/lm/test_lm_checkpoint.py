"""Loading a model.safetensors file (Kyutai's published naming) into fp32 and bf16 models."""

from pathlib import Path

import pytest
import torch
from lm_testutils import make_reference, published_state_dict
from safetensors.torch import save_file

from openmoshi.lm.checkpoint import load_lm
from openmoshi.lm.config import LMConfig
from openmoshi.lm.model import LMModel


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


_RSS_SCRIPT = """
import json, resource, sys
import torch
from openmoshi.lm.checkpoint import load_lm
from openmoshi.lm.config import LMConfig
from openmoshi.lm.model import LMModel
cfg = LMConfig.from_dict(json.loads(sys.argv[2]))
with torch.device("meta"):
    from openmoshi.lm.model import LMModel
    LMModel(cfg)  # warm up imports and allocator paths before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = load_lm(sys.argv[1], cfg)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


def test_loading_peaks_near_the_model_size(tmp_path):
    """Peak RSS growth while loading stays near one copy of the weights (no second copy, no mmap residue)."""
    import json
    import subprocess
    import sys

    cfg = LMConfig.tiny(dim=256, num_layers=40, hidden=1024, num_heads=4)
    model = LMModel(cfg)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    del model
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path), json.dumps(cfg.to_dict())],
                         capture_output=True, text=True, check=True, cwd=str(Path(__file__).parents[2]))
    growth = int(out.stdout.strip().splitlines()[-1])
    assert size > 150 * 2**20
    assert growth < 1.3 * size + 60 * 2**20, (growth / 2**20, size / 2**20)
