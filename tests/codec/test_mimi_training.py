"""Mimi as a trainable model (tiny preset): the forward pass, gradients, meta-device init, saving and reloading."""

from __future__ import annotations

import pytest
import torch
from codec_testutils import randomize_model
from safetensors.torch import load_file, save_file

from openmoshi.codec.checkpoint import load_mimi, load_safetensors
from openmoshi.codec.mimi import Mimi, MimiConfig
from openmoshi.nn.norms import LayerNorm, LayerScale
from openmoshi.nn.prepare import prepare_for_inference

CFG = MimiConfig.tiny()
FRAME = CFG.frame_size
EMA_BUFFERS = {"embedding_sum", "cluster_usage", "_initialized"}


def _wav(frames: int, seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 1, frames * FRAME, generator=torch.Generator().manual_seed(seed))


def test_forward_returns_reconstruction_codes_and_commitment() -> None:
    mimi = randomize_model(Mimi(CFG), seed=0)
    wav = _wav(4)[..., :-5]  # a partial last frame: zero-padded like encode
    out = mimi(wav, 6)
    assert out.reconstruction.shape == (2, 1, 4 * FRAME)
    assert out.codes.shape == (2, 6, 4) and out.codes.dtype == torch.int64
    assert out.latent.shape == out.quantized.shape == (2, CFG.seanet.dimension, 4)
    assert out.commitment_loss.dim() == 0 and float(out.commitment_loss.detach()) > 0
    # The training pass computes what encode then decode compute.
    assert torch.equal(out.codes, mimi.encode(wav, 6))
    torch.testing.assert_close(out.reconstruction, mimi.decode(out.codes), atol=1e-5, rtol=1e-5)
    assert mimi(wav).codes.shape[1] == CFG.quantizer.num_codebooks  # default: every level
    # Commitment loss = mean over levels of |residual - entry|^2: more levels, smaller residuals, smaller mean.
    with torch.no_grad():
        assert float(mimi(wav, 8).commitment_loss) < float(mimi(wav, 1).commitment_loss)


def test_backward_gives_every_parameter_a_gradient() -> None:
    mimi = randomize_model(Mimi(CFG), seed=1).train()
    wav = _wav(5, seed=1)
    out = mimi(wav)
    loss = (out.reconstruction - wav).abs().mean() + out.commitment_loss
    loss.backward()
    params = dict(mimi.named_parameters())
    missing = [n for n, p in params.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    zero = [n for n, p in params.items() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert not missing and not zero, (missing, zero)
    # The codebooks are EMA buffers by design: no parameter among them, untouched by backward.
    buffers = {n.rsplit(".", 1)[-1] for n, _ in mimi.named_buffers()}
    assert buffers == EMA_BUFFERS
    assert not EMA_BUFFERS & {n.rsplit(".", 1)[-1] for n in params}


def test_straight_through_and_commitment_reach_the_encoder() -> None:
    mimi = randomize_model(Mimi(CFG), seed=2)
    wav = _wav(3, seed=2)
    mimi(wav, 4).reconstruction.sum().backward()  # the decoder's gradient crosses the quantizer
    assert mimi.encoder.conv_in.weight.grad.abs().sum() > 0
    assert mimi.quantizer.acoustic.input_proj.grad.abs().sum() > 0
    mimi.zero_grad(set_to_none=True)
    mimi(wav, 4).commitment_loss.backward()  # the commitment alone trains the encoder side only
    assert mimi.encoder.conv_in.weight.grad.abs().sum() > 0
    assert mimi.decoder.conv_out.weight.grad is None


def test_forward_refuses_streaming_mode() -> None:
    mimi = Mimi(CFG)
    with mimi.downsample.streaming(1), pytest.raises(RuntimeError, match="training pass"):
        mimi(_wav(1, batch=1))


@pytest.mark.parametrize("cfg", [CFG, MimiConfig(transformer=CFG.transformer.__class__(
    **{**CFG.transformer.__dict__, "layer_scale": 0.2}), seanet=CFG.seanet, quantizer=CFG.quantizer,
    num_codebooks=4)], ids=["tiny", "layer_scale_0.2"])
def test_meta_build_then_init_weights(cfg: MimiConfig) -> None:
    with torch.device("meta"):
        mimi = Mimi(cfg)
    assert all(t.is_meta for t in mimi.state_dict().values())
    mimi.to_empty(device="cpu")
    torch.manual_seed(0)
    mimi.init_weights()
    state = mimi.state_dict()
    for name, t in state.items():
        assert torch.isfinite(t).all(), name
    fixed = set()
    for name, m in mimi.named_modules():
        if isinstance(m, LayerScale):
            assert torch.equal(m.scale, torch.full_like(m.scale, cfg.transformer.layer_scale))
            fixed.add(f"{name}.scale")
        if isinstance(m, LayerNorm):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
            fixed |= {f"{name}.weight", f"{name}.bias"}
    for name, p in mimi.named_parameters():
        if name.endswith(".bias") and name not in fixed:
            assert torch.equal(p, torch.zeros_like(p)), name  # conv biases start at 0
        elif name not in fixed:
            assert p.std() > 0.5 / p[0].numel() ** 0.5, name  # random at about 1/sqrt(fan_in), not constant
    for name, t in state.items():
        if name.endswith("embedding_sum"):
            assert len(torch.unique(t, dim=0)) == t.shape[0], name  # every entry distinct
    # Non-degenerate: different frames get different codes at every level, and the output is finite.
    wav = _wav(12, seed=3, batch=1)
    codes = mimi.encode(wav, 8)
    for k in range(8):
        assert len(torch.unique(codes[0, k])) > 1, k
    assert torch.isfinite(mimi.decode(codes)).all()
    # A second init draws new weights (it is an init, not a fixed fill).
    before = mimi.encoder.conv_in.weight.clone()
    mimi.init_weights()
    assert not torch.equal(before, mimi.encoder.conv_in.weight)


def _outputs(mimi: Mimi, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    codes = mimi.encode(wav, 8)
    return codes, mimi.decode(codes)


def test_save_file_and_reload_equal_before_and_after_prepare(tmp_path) -> None:
    mimi = randomize_model(Mimi(CFG), seed=4).eval()
    wav = _wav(7, seed=4)
    codes, audio = _outputs(mimi, wav)
    # Before prepare: the standard layout, saved as is.
    save_file(mimi.state_dict(), str(tmp_path / "a.safetensors"))
    fresh = Mimi(CFG).eval()
    fresh.load_state_dict(load_file(str(tmp_path / "a.safetensors")))
    c2, a2 = _outputs(fresh, wav)
    assert torch.equal(c2, codes) and torch.equal(a2, audio)

    prepare_for_inference(mimi)
    w = mimi.encoder_transformer.layers[0].attn.in_proj.weight
    assert not w.is_contiguous() and w.t().is_contiguous()  # the inference layout is in place
    assert all(t.is_contiguous() for t in mimi.state_dict().values())
    prepared_codes, prepared_audio = _outputs(mimi, wav)
    assert torch.equal(prepared_codes, codes)
    torch.testing.assert_close(prepared_audio, audio, atol=1e-5, rtol=1e-5)
    # After prepare: same names, shapes and values in the file.
    save_file(mimi.state_dict(), str(tmp_path / "b.safetensors"))
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Reloaded through our loader and prepared again: the prepared model's outputs, exactly.
    again = load_mimi(tmp_path / "b.safetensors", "tiny")
    assert not again.decoder_transformer.layers[1].ff.linear2.weight.is_contiguous()
    c3, a3 = _outputs(again, wav)
    assert torch.equal(c3, prepared_codes) and torch.equal(a3, prepared_audio)


def test_loading_into_a_prepared_model_reaches_its_weights(tmp_path) -> None:
    source = randomize_model(Mimi(CFG), seed=5).eval()
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    target = prepare_for_inference(Mimi(CFG).eval())
    load_safetensors(target, tmp_path / "w.safetensors")
    load_state = {k: v for k, v in target.state_dict().items()}
    assert all(torch.equal(load_state[k], v) for k, v in source.state_dict().items())
    target.load_state_dict(randomize_model(Mimi(CFG), seed=6).state_dict())
    assert not torch.equal(target.encoder_transformer.layers[0].attn.in_proj.weight,
                           source.encoder_transformer.layers[0].attn.in_proj.weight)
    assert not target.encoder_transformer.layers[0].attn.in_proj.weight.is_contiguous()  # layout kept
