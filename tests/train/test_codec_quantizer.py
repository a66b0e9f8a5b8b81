"""Training-only quantizer behaviours: EMA codebook updates, dead-code replacement, quantizer dropout, the
unquantized latent for a share of rows; all off in eval mode and without options."""

from __future__ import annotations

import pytest
import torch

from openmoshi.codec.mimi import Mimi, MimiConfig
from openmoshi.codec.quantizer import EuclideanCodebook, QuantizerConfig, QuantizerTraining, SplitResidualVQ


def _codebook(entries: list[list[float]]) -> EuclideanCodebook:
    cb = EuclideanCodebook(len(entries), len(entries[0]))
    cb.embedding_sum.copy_(torch.tensor(entries))
    cb.cluster_usage.fill_(1.0)
    cb._initialized.fill_(1.0)
    return cb


def test_ema_update_moves_codes_towards_assigned_vectors() -> None:
    cb = _codebook([[0.0, 0.0], [10.0, 10.0]])
    x = torch.tensor([[1.0, 0.0], [1.0, 2.0], [9.0, 9.0]])
    codes = cb.encode(x)
    assert codes.tolist() == [0, 0, 1]
    opts = QuantizerTraining(ema_decay=0.5, dead_code_ratio=0.0)
    assert cb.ema_update(x, codes, opts) == 0
    # usage: 0.5 * 1 + 0.5 * count ; sum: 0.5 * old + 0.5 * sum of assigned
    assert cb.cluster_usage.tolist() == [1.5, 1.0]
    torch.testing.assert_close(cb.codebook, torch.tensor([[1.0 / 1.5, 1.0 / 1.5], [9.5, 9.5]]))
    before = (cb.codebook - torch.tensor([[1.0, 1.0], [9.0, 9.0]])).norm(dim=1)
    for _ in range(30):
        cb.ema_update(x, cb.encode(x), opts)
    after = (cb.codebook - torch.tensor([[1.0, 1.0], [9.0, 9.0]])).norm(dim=1)  # the assigned means
    assert (after < before).all() and float(after.max()) < 1e-6


def test_dead_codes_are_replaced_by_batch_vectors() -> None:
    cb = _codebook([[0.0, 0.0], [100.0, 100.0], [-100.0, 50.0], [1.0, 1.0]])
    x = torch.randn(64, 2) * 0.1 + torch.tensor([0.5, 0.5])  # near entries 0 and 3 only
    opts = QuantizerTraining(ema_decay=0.5, dead_code_ratio=0.5)
    torch.manual_seed(0)
    replaced = cb.ema_update(x, cb.encode(x), opts)
    assert replaced == 2  # entries 1 and 2 got nothing: usage 0.5 < 0.5 * 64 / 4
    new = cb.codebook[1:3]
    # Each new entry is one of the batch's vectors, with the average usage (not dead at once).
    assert all(bool((x - row).abs().amax(1).min() < 1e-5) for row in new)
    assert cb.dead_codes(64, 0.5) == 0
    assert cb.cluster_usage[1:3].tolist() == [16.0, 16.0]


def test_first_update_initialises_from_data() -> None:
    cb = EuclideanCodebook(4, 3)
    cb.init_weights()  # _initialized stays 0: random entries, not fitted
    x = torch.randn(10, 3) + 5
    cb.ema_update(x, cb.encode(x), QuantizerTraining())
    assert float(cb._initialized) == 1.0
    assert all(bool((x - row).abs().amax(1).min() < 1e-6) for row in cb.codebook)


def _quantizer(**opts) -> SplitResidualVQ:
    q = SplitResidualVQ(QuantizerConfig.tiny())
    for cb in q.modules():
        if isinstance(cb, EuclideanCodebook):
            cb._initialized.fill_(1.0)
    q.training_options = QuantizerTraining(**opts)
    return q


def test_quantizer_dropout_uses_fewer_levels() -> None:
    q = _quantizer(ema_decay=None, dropout_prob=1.0)
    latent = torch.randn(16, 32, 5)
    torch.manual_seed(3)
    out = q.train()(latent)
    assert out.levels is not None and out.levels.shape == (16,)
    assert int(out.levels.min()) >= 1 and int(out.levels.max()) <= 8 and len(set(out.levels.tolist())) > 2
    assert (out.levels < 8).any()
    # Each row is the decoding of exactly its first `levels` codes, and the codes are those of the full stack.
    assert torch.equal(out.codes, q.encode(latent))
    for b in range(16):
        expected = q.decode(out.codes[b:b + 1, :int(out.levels[b])])
        torch.testing.assert_close(out.quantized[b:b + 1], expected, atol=1e-5, rtol=1e-5)
    # Eval mode, or no options: every level, and no update.
    state = {k: v.clone() for k, v in q.state_dict().items()}
    out = q.eval()(latent)
    assert out.levels is None
    torch.testing.assert_close(out.quantized, q.decode(q.encode(latent)), atol=1e-5, rtol=1e-5)
    assert all(torch.equal(v, q.state_dict()[k]) for k, v in state.items())


def test_ema_only_in_train_mode_with_options() -> None:
    q = _quantizer(ema_decay=0.9)
    latent = torch.randn(4, 32, 6)
    before = q.acoustic.codebooks[0].embedding_sum.clone()
    q.eval()(latent)
    q.training_options = None
    q.train()(latent)
    assert torch.equal(before, q.acoustic.codebooks[0].embedding_sum)
    q.training_options = QuantizerTraining(ema_decay=0.9)
    out = q.train()(latent)
    assert not torch.equal(before, q.acoustic.codebooks[0].embedding_sum)
    assert out.semantic is not None and out.semantic.shape == latent.shape


def test_unquantized_latent_for_a_share_of_rows() -> None:
    mimi = Mimi(MimiConfig.tiny())
    wav = torch.randn(8, 1, 4 * mimi.frame_size)
    torch.manual_seed(1)
    out = mimi.train()(wav, unquantized_share=0.5)
    rows = out.unquantized
    assert rows is not None and 0 < int(rows.sum()) < 8
    with torch.no_grad():
        from_latent = mimi.decode_latent(out.latent)
        from_codes = mimi.decode_latent(out.quantized)
    for b in range(8):
        expected = from_latent[b] if rows[b] else from_codes[b]
        torch.testing.assert_close(out.reconstruction[b].detach(), expected, atol=1e-5, rtol=1e-5)
    assert mimi.eval()(wav, unquantized_share=1.0).unquantized is None  # never at inference


@pytest.mark.parametrize("kwargs", [{"ema_decay": 1.0}, {"dead_code_ratio": -0.1}, {"dropout_prob": 2.0}])
def test_options_are_checked(kwargs) -> None:
    with pytest.raises(ValueError):
        QuantizerTraining(**kwargs)


def test_first_training_pass_initialises_each_level_before_encoding() -> None:
    """Fresh codebooks (`_initialized` 0) take batch vectors before they encode: the residuals shrink level by
    level (encoding with the random entries, then swapping them, made them grow geometrically)."""
    q = SplitResidualVQ(QuantizerConfig.tiny())
    q.init_weights()
    x = torch.randn(4, 50, 32) * 0.2  # [B, F, D]
    opts = QuantizerTraining(ema_decay=0.9)
    with torch.no_grad():
        _, _, losses = q.acoustic(x, 7, opts)
    assert all(float(cb._initialized) == 1.0 for cb in q.acoustic.codebooks)
    assert (losses[1:] <= losses[:-1] + 1e-6).all(), losses.tolist()
    assert float(losses.max()) < float((x @ q.acoustic.input_proj[:, :, 0].detach().t()).pow(2).mean())
