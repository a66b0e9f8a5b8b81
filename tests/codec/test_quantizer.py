"""Unit tests of the split RVQ (tiny) and its parity with the reference quantizer at the real size."""

from __future__ import annotations

import pytest
import torch
from codec_testutils import random_state
from torch import Tensor

from openmoshi.codec.checkpoint import load_state
from openmoshi.codec.quantizer import EuclideanCodebook, QuantizerConfig, SplitResidualVQ


def _random_tiny(seed: int = 0) -> SplitResidualVQ:
    q = SplitResidualVQ(QuantizerConfig.tiny())
    gen = torch.Generator().manual_seed(seed)
    for cb in q.modules():
        if isinstance(cb, EuclideanCodebook):
            cb.embedding_sum.copy_(torch.randn(cb.embedding_sum.shape, generator=gen) * 0.3)
            cb.cluster_usage.copy_(torch.rand(cb.cluster_usage.shape, generator=gen) + 0.5)
    return q


def test_codebook_is_ema_ratio_and_cache_follows_loads() -> None:
    cb = EuclideanCodebook(8, 4)
    cb.embedding_sum.copy_(torch.arange(32.0).view(8, 4))
    cb.cluster_usage.copy_(torch.tensor([2.0, 1, 1, 1, 1, 1, 1, 0]))
    first = cb.codebook
    assert torch.equal(first[0], torch.arange(4.0) / 2)
    assert torch.equal(first[7], torch.arange(28.0, 32.0) / 1e-5)  # usage floored at epsilon
    assert cb.codebook is first  # cached
    state = {k: v.clone() for k, v in cb.state_dict().items()}
    state["embedding_sum"] = torch.zeros(8, 4)
    cb.load_state_dict(state)
    assert torch.equal(cb.codebook, torch.zeros(8, 4))


def test_nearest_and_first_index_on_ties() -> None:
    cb = EuclideanCodebook(4, 2)
    cb.embedding_sum.copy_(torch.tensor([[1.0, 0], [0, 1], [1.0, 0], [-1, 0]]))
    x = torch.tensor([[0.9, 0.1], [0.1, 0.8], [-2.0, 0], [0.5, 0.5]])
    # [0.5, 0.5] is as close to entries 0, 1 and 2: the first index wins. Entries 0 and 2 are equal.
    assert cb.encode(x).tolist() == [0, 1, 3, 0]


@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_shapes_and_any_number_of_codebooks(k: int) -> None:
    q = _random_tiny()
    latent = torch.randn(3, 32, 11)
    codes = q.encode(latent, k)
    assert codes.shape == (3, k, 11) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 64
    full = q.encode(latent)
    assert torch.equal(full[:, :k], codes)  # fewer codebooks = a prefix of the codes
    assert q.decode(codes).shape == (3, 32, 11)


def _representable() -> tuple[SplitResidualVQ, Tensor, Tensor]:
    """A tiny split RVQ (float64) with latents it represents exactly, and their codes [2, 8, 40].

    The semantic part reads and writes latent channels 0..15, the acoustic part 16..31 (identity projections);
    acoustic level l has entries of scale 0.1**l, so what the levels after l add is far smaller than the spacing
    of level l's entries and the greedy residual search finds every level's code back. The latents are built here
    as sums of codebook entries, without the quantizer's decode.
    """
    cfg = QuantizerConfig.tiny()
    q = SplitResidualVQ(cfg).double()
    d, cd = cfg.dimension, cfg.codebook_dim
    gen = torch.Generator().manual_seed(0)
    eye = torch.eye(cd, dtype=torch.float64)
    with torch.no_grad():
        for part, lo in ((q.semantic, 0), (q.acoustic, cd)):
            part.input_proj.zero_()[:, lo : lo + cd, 0] = eye
            part.output_proj.zero_()[lo : lo + cd, :, 0] = eye
            for level, cb in enumerate(part.codebooks):
                # float32 values: the codebook cache's float32 division leaves them exact
                cb.embedding_sum.copy_(torch.randn(cb.embedding_sum.shape, generator=gen) * 0.1**level)
                cb.cluster_usage.fill_(1.0)
    codes = torch.randint(0, cfg.codebook_size, (2, cfg.num_codebooks, 40), generator=gen)
    latent = torch.zeros(2, d, 40, dtype=torch.float64)
    latent[:, :cd] = q.semantic.codebooks[0].embedding_sum[codes[:, 0]].transpose(1, 2)
    for level, cb in enumerate(q.acoustic.codebooks):
        latent[:, cd:] += cb.embedding_sum[codes[:, 1 + level]].transpose(1, 2)
    return q, latent, codes


def test_quantizer_finds_the_codes_of_latents_it_represents() -> None:
    q, latent, codes = _representable()
    for k in range(1, q.cfg.num_codebooks + 1):
        assert torch.equal(q.encode(latent, k), codes[:, :k]), k
    torch.testing.assert_close(q.decode(codes), latent, atol=1e-12, rtol=0)


def test_more_codebooks_reconstruct_better() -> None:
    """Each added level shrinks the error to exactly what the levels not used yet would add."""
    q, latent, codes = _representable()
    cd = q.cfg.codebook_dim
    errors = []
    for k in range(1, q.cfg.num_codebooks + 1):
        error = (q.decode(q.encode(latent, k)) - latent).pow(2).sum()
        rest = sum(cb.embedding_sum[codes[:, 1 + lvl]] for lvl, cb in enumerate(q.acoustic.codebooks) if lvl >= k - 1)
        torch.testing.assert_close(error, torch.as_tensor(rest).pow(2).sum() if k < 8 else error.new_zeros(()),
                                   atol=1e-12, rtol=1e-9)
        errors.append(error.item())
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)) and errors[-1] < 1e-20, errors
    assert latent[:, cd:].pow(2).sum() > 100 * errors[1]  # the first acoustic level did most of the work


def test_decode_sums_the_two_parts() -> None:
    q = _random_tiny()
    codes = q.encode(torch.randn(2, 32, 5), 4)
    both = q.decode(codes)
    sem = q.semantic.decode(codes[:, :1]).transpose(1, 2)
    aco = q.acoustic.decode(codes[:, 1:]).transpose(1, 2)
    torch.testing.assert_close(both, sem + aco)
    torch.testing.assert_close(q.decode(codes[:, :1]), sem)


def test_bad_number_of_codebooks() -> None:
    q = _random_tiny()
    with pytest.raises(ValueError, match="number of codebooks"):
        q.encode(torch.randn(1, 32, 2), 9)
    with pytest.raises(ValueError, match="number of codebooks"):
        q.decode(torch.zeros(1, 0, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integers"):
        q.decode(torch.zeros(1, 2, 2))


class _Holder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quantizer = SplitResidualVQ(QuantizerConfig.mimi())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_with_reference_quantizer(seed: int) -> None:
    from moshi.models.loaders import _quantizer_kwargs
    from moshi.quantization.vq import SplitResidualVectorQuantizer

    state = random_state(seed, prefix="quantizer.")
    ref = SplitResidualVectorQuantizer(**_quantizer_kwargs).eval()
    ref.load_state_dict({k.removeprefix("quantizer."): v for k, v in state.items()})
    ours = _Holder()
    load_state(ours, state)

    gen = torch.Generator().manual_seed(100 + seed)
    latent = torch.randn(2, 512, 60, generator=gen) * (0.5 + 2.0 * seed)
    with torch.no_grad():
        for k in (8, 32):
            ref.set_num_codebooks(k)
            ref_codes = ref.encode(latent)
            our_codes = ours.quantizer.encode(latent, k)
            assert our_codes.shape == ref_codes.shape == (2, k, 60)
            same = (our_codes == ref_codes).float().mean().item()
            if k == 8:
                assert same == 1.0
            else:
                assert same >= 0.999, same
            # Decoding the same codes gives the same latent.
            torch.testing.assert_close(ours.quantizer.decode(ref_codes), ref.decode(ref_codes), atol=1e-5, rtol=0)


def test_codebook_cache_follows_in_place_edits_and_moves() -> None:
    """docs/codec.md: the cached codebook refreshes after in-place edits of either buffer and after `.to()`."""
    cb = EuclideanCodebook(4, 2)
    cb.embedding_sum.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]]))
    x = torch.tensor([[0.9, 0.0], [2.1, 0.0]])
    assert torch.equal(cb.codebook[0], torch.tensor([1.0, 0])) and cb.encode(x).tolist() == [0, 0]
    cb.embedding_sum[2].mul_(-2.0)  # entry 2 becomes [2, 0]
    assert torch.equal(cb.codebook[2], torch.tensor([2.0, 0])) and cb.encode(x).tolist() == [0, 2]
    cb.cluster_usage[0] = 0.5  # entry 0 becomes [2, 0] too: the first index wins the tie
    assert torch.equal(cb.codebook[0], torch.tensor([2.0, 0])) and cb.encode(x).tolist() == [0, 0]
    cb.double()
    assert cb.codebook.dtype == torch.float64
