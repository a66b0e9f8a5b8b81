"""The Mimi model on the tiny preset: shapes, streaming == batch at any chunking, per-row resets, bf16."""

from __future__ import annotations

import pytest
import torch
from codec_testutils import randomize_model

from openmoshi.codec.mimi import Mimi, MimiConfig
from openmoshi.nn.streaming import reset_streaming, streaming

CFG = MimiConfig.tiny()
FRAME = CFG.frame_size


@pytest.fixture(scope="module")
def mimi() -> Mimi:
    return randomize_model(Mimi(CFG), seed=0).eval()


def _chunks(total: int, gen: torch.Generator, most: int = 5) -> list[int]:
    sizes = []
    while total > 0:
        n = min(total, int(torch.randint(1, most + 1, (1,), generator=gen)))
        sizes.append(n)
        total -= n
    return sizes


def test_config_figures() -> None:
    cfg = MimiConfig.mimi()
    assert cfg.frame_size == 1920 and cfg.frame_rate == 12.5 and cfg.seanet.hop_length == 960
    assert CFG.frame_size == 48
    with pytest.raises(ValueError, match="dimensions differ"):
        MimiConfig(seanet=CFG.seanet)


def test_batch_shapes_and_padding(mimi: Mimi) -> None:
    wav = torch.randn(2, 1, 5 * FRAME + 7)
    codes = mimi.encode(wav, 3)
    assert codes.shape == (2, 3, 6) and codes.dtype == torch.int64
    assert len(torch.unique(codes[:, 0])) > 1  # the random init gives varied codes
    # The last partial frame is zero-padded: same codes as encoding the explicitly padded signal.
    padded = torch.nn.functional.pad(wav, (0, FRAME - 7))
    assert torch.equal(mimi.encode(padded, 3), codes)
    out = mimi.decode(codes)
    assert out.shape == (2, 1, 6 * FRAME)
    assert mimi.encode(wav).shape[1] == CFG.num_codebooks
    with pytest.raises(ValueError, match=r"audio \[B, 1, T\]"):
        mimi.encode(torch.randn(2, FRAME))


@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_equals_batch_any_chunking(mimi: Mimi, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    frames = 26  # the tiny transformer's context is 10 steps (5 frames): well past it
    wav = torch.randn(2, 1, frames * FRAME, generator=gen)
    batch_codes = mimi.encode(wav, 8)
    batch_audio = mimi.decode(batch_codes)
    codes, audio = [], []
    with streaming(mimi, 2):
        start = 0
        for n in _chunks(frames, gen):
            c = mimi.encode(wav[..., start * FRAME:(start + n) * FRAME], 8)
            codes.append(c)
            start += n
        start = 0
        for n in _chunks(frames, gen):  # decode with a different chunking
            audio.append(mimi.decode(batch_codes[..., start:start + n]))
            start += n
    assert torch.equal(torch.cat(codes, -1), batch_codes)
    torch.testing.assert_close(torch.cat(audio, -1), batch_audio, atol=1e-5, rtol=1e-5)


def test_streaming_rejects_partial_frames(mimi: Mimi) -> None:
    with streaming(mimi, 1), pytest.raises(ValueError, match="whole frames"):
        mimi.encode(torch.randn(1, 1, FRAME + 1))


def test_reset_one_row_starts_a_new_stream(mimi: Mimi) -> None:
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(1, 1, 12 * FRAME, generator=gen)
    b = torch.randn(1, 1, 7 * FRAME, generator=gen)
    # Row 0 streams `a` throughout; row 1 streams noise for 5 frames, is reset, then streams `b`.
    noise = torch.randn(1, 1, 5 * FRAME, generator=gen)
    row1 = torch.cat([noise, b], dim=-1)
    codes, audio = [], []
    with streaming(mimi, 2):
        for i in range(12):
            if i == 5:
                reset_streaming(mimi, torch.tensor([False, True]))
            chunk = torch.cat([a[..., i * FRAME:(i + 1) * FRAME], row1[..., i * FRAME:(i + 1) * FRAME]])
            c = mimi.encode(chunk, 4)
            codes.append(c)
            audio.append(mimi.decode(c))
    codes_t, audio_t = torch.cat(codes, -1), torch.cat(audio, -1)
    assert torch.equal(codes_t[:1], mimi.encode(a, 4))
    assert torch.equal(codes_t[1:, :, 5:], mimi.encode(b, 4))
    torch.testing.assert_close(audio_t[1:, :, 5 * FRAME:], mimi.decode(mimi.encode(b, 4)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(audio_t[:1], mimi.decode(mimi.encode(a, 4)), atol=1e-5, rtol=1e-5)


def test_bf16_close_to_fp32(mimi: Mimi) -> None:
    wav = torch.randn(1, 1, 20 * FRAME, generator=torch.Generator().manual_seed(4))
    codes = mimi.encode(wav, 4)
    ref = mimi.decode(codes)
    half = randomize_model(Mimi(CFG), seed=0).eval().to(torch.bfloat16)
    out = half.decode(codes)
    assert out.dtype == torch.bfloat16
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert err < 0.05, err
    agree = (half.encode(wav, 1) == codes[:, :1]).float().mean()
    assert agree > 0.7, agree
