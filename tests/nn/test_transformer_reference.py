"""Parity of openmoshi.nn.Transformer with the reference `moshi` StreamingTransformer (fp32, same weights),
in batch mode and streaming one step at a time."""

import pytest
import torch
from moshi.modules.transformer import StreamingTransformer

from openmoshi.nn.streaming import streaming
from openmoshi.nn.transformer import Transformer, TransformerConfig


def _ours_from_reference(ref_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    rename = {
        "self_attn.in_projs.0.weight": "attn.in_proj.weight",
        "self_attn.out_projs.0.weight": "attn.out_proj.weight",
        "gating.linear_in.weight": "ff.linear_in.weight",
        "gating.linear_out.weight": "ff.linear_out.weight",
        "linear1.weight": "ff.linear1.weight",
        "linear2.weight": "ff.linear2.weight",
        "norm1.alpha": "norm1.weight",
        "norm2.alpha": "norm2.weight",
    }
    out = {}
    for key, value in ref_state.items():
        for src, dst in rename.items():
            if key.endswith(src):
                key = key[: -len(src)] + dst
                break
        out[key] = value.reshape(-1) if key.endswith(("norm1.weight", "norm2.weight")) else value
    return out


CASES = {
    "mimi_like": (
        dict(norm="layer_norm", gating="none", layer_scale=0.01, context=10, dim_feedforward=128),
        dict(norm="layer_norm", gating="none", layer_scale=0.01, context=10, dim_feedforward=128),
    ),
    "helium_like": (
        dict(norm="rms_norm", norm_eps=1e-8, gating="silu", layer_scale=None, context=16, dim_feedforward=64),
        # the reference sizes its gated hidden as 2/3 of dim_feedforward
        dict(norm="rms_norm_f32", gating="silu", context=16, dim_feedforward=96),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference(case, seed):
    ours_kw, ref_kw = CASES[case]
    torch.manual_seed(seed)
    ref = StreamingTransformer(d_model=64, num_heads=4, num_layers=2, causal=True,
                               positional_embedding="rope", **ref_kw).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.2) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    ours = Transformer(TransformerConfig(d_model=64, num_heads=4, num_layers=2, **ours_kw)).eval()
    ours.load_state_dict(_ours_from_reference(ref.state_dict()), strict=True)

    x = torch.randn(2, 40, 64)
    with torch.no_grad():
        expected = ref(x)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-4)
        with ref.streaming(2):
            ref_steps = torch.cat([ref(x[:, t:t + 1]) for t in range(40)], dim=1)
        with streaming(ours, 2):
            our_steps = torch.cat([ours(x[:, t:t + 1]) for t in range(40)], dim=1)
    torch.testing.assert_close(our_steps, ref_steps, rtol=1e-4, atol=1e-4)
