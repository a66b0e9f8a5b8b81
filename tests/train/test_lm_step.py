"""The LM step's pieces: the both-sides loss against a position-by-position computation, text masking that does
not depend on the split of the batch, the acoustic delay, the accuracies."""

import torch
import torch.nn.functional as F

from openmoshi.lm.config import LMConfig
from openmoshi.lm.model import LMModel
from openmoshi.train.lm_config import LMLossSection
from openmoshi.train.lm_data import random_sequences
from openmoshi.train.lm_step import augment, lm_accuracy, lm_train_loss, loss_config, training_lm_config


def brute_force(out, codes, sem_weight=100.0, ac_weight=1.0, pad_weight=0.5, semantic=(0, 8)):
    """CE(text) + sum(a_k ce) / sum(a_k) over every valid position, one entry at a time."""
    tw = tsum = 0.0
    B, _, T = codes.shape
    for b in range(B):
        for t in range(T):
            if out.text_mask[b, 0, t]:
                y = int(codes[b, 0, t])
                w = pad_weight if y in (3, 0) else 1.0
                tsum += w * float(F.cross_entropy(out.text_logits[b, 0, t][None], torch.tensor([y])))
                tw += w
    aw = asum = 0.0
    for k in range(out.audio_logits.shape[1]):
        a = sem_weight if k in semantic else ac_weight
        for b in range(B):
            for t in range(T):
                if out.audio_mask[b, k, t]:
                    y = int(codes[b, 1 + k, t])
                    asum += a * float(F.cross_entropy(out.audio_logits[b, k, t][None], torch.tensor([y])))
                    aw += a
    return tsum / tw + asum / aw, tsum / tw, asum / aw


def test_both_sides_loss_weighs_each_sides_semantic_codebook():
    cfg = LMConfig.tiny(dep_q=16, num_layers=1, depformer_num_layers=1)
    model = LMModel(cfg)
    codes = random_sequences(cfg, 2, 6, seed=3)
    codes[0, 9, 2] = -1  # a missing user semantic token: one weight less on that side
    loss, out = lm_train_loss(model, codes, loss_config(cfg, LMLossSection(codebooks="all")))
    total, text, audio = brute_force(out, codes)
    assert abs(loss.text.item() - text) < 1e-4 and abs(loss.audio.item() - audio) < 1e-4
    assert abs(loss.total.item() - total) < 1e-4
    # Moshi's codebooks only: codebook 0 semantic, the user's 8 not scored
    loss, out = lm_train_loss(model, codes, loss_config(cfg, LMLossSection(codebooks="moshi")))
    out.audio_logits, out.audio_mask = out.audio_logits[:, :8], out.audio_mask[:, :8]
    assert abs(loss.total.item() - brute_force(out, codes, semantic=(0,))[0]) < 1e-4


def test_text_masking_is_the_same_however_the_batch_is_split():
    cfg = LMConfig.tiny()
    codes = random_sequences(cfg, 4, 8, seed=0)
    sec = LMLossSection(text_mask_prob=0.5)
    whole = [augment(codes[2 * j:2 * j + 2], sec, seed=7, step=3, micro_index=j) for j in range(2)]
    again = [augment(codes[2 * j:2 * j + 2], sec, seed=7, step=3, micro_index=j) for j in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(whole, again, strict=True))
    masked = torch.cat(whole)[:, 0].eq(-1).all(dim=1)
    assert torch.equal(torch.cat(whole)[:, 1:], codes[:, 1:])  # audio untouched
    drawn = [augment(codes, sec, seed=s, step=0, micro_index=0)[:, 0].eq(-1).all(dim=1) for s in range(40)]
    share = torch.stack(drawn).float().mean().item()
    assert 0.3 < share < 0.7 and masked.dtype == torch.bool
    assert torch.equal(augment(codes, sec, 7, 3, 0, text_only=True), codes)  # text-only batches keep their text


def test_acoustic_delay_sets_every_acoustic_codebook():
    cfg = training_lm_config(LMConfig.tiny(), 2)
    assert cfg.delays == (0, 0, 2, 2, 2, 2, 2, 2, 2, 0, 2, 2, 2, 2, 2, 2, 2)
    assert training_lm_config(LMConfig.tiny(), None) == LMConfig.tiny()


def test_accuracy_counts_valid_positions():
    cfg = LMConfig.tiny(dep_q=16, num_layers=1, depformer_num_layers=1)
    model = LMModel(cfg)
    codes = random_sequences(cfg, 2, 6, seed=1)
    with torch.no_grad():
        out = model(codes)
    out.audio_logits.zero_()
    out.audio_logits[..., 5] = 1.0  # always predicts code 5
    acc = lm_accuracy(out, codes, None, side=8)
    sem_targets = codes[:, [1, 9]][out.audio_mask[:, [0, 8]]]
    assert acc["semantic"] == (int((sem_targets == 5).sum()), int(out.audio_mask[:, [0, 8]].sum()))
    assert acc["acoustic"][1] == int(out.audio_mask.sum()) - acc["semantic"][1]
