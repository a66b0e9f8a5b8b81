"""bf16 generation follows fp32 generation: the same steps give the same logits within a stated tolerance.

Greedy tokens of a random tiny model diverge within a few steps between any two precisions (one flipped
near-tie changes everything after), so the bf16 generator is teacher-forced with the fp32 run's tokens: its
sampler is replaced by one that records the logits and replays the fp32 draw. Every step then sees the same
history in both precisions, through the real generation path (streaming KV caches, the ring, the depth
transformer), and its text and audio logits must agree within 3% of the logits' range (bf16 keeps 8 bits of
mantissa: 0.4% per rounding, a few roundings per layer); the greedy choice must agree wherever fp32's top-2 gap
is larger than twice that tolerance. Measured: at most 1.5% here.
"""

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))  # shared LM test helpers
from lm_testutils import one_thread  # noqa: E402

import openmoshi.inference.generator as generator_module  # noqa: E402
from openmoshi.inference.generator import LMGenerator  # noqa: E402
from openmoshi.inference.sampling import SamplingConfig  # noqa: E402
from openmoshi.lm.config import LMConfig  # noqa: E402
from openmoshi.lm.model import LMModel  # noqa: E402

GREEDY = SamplingConfig(greedy=True)
_one_thread = pytest.fixture(autouse=True)(one_thread)
TOLERANCE = 0.03  # of max |logit| of the step's fp32 logits


def run(model, user, monkeypatch, replay=None):
    """Generate with `model`; returns (the logits of every sampler call, the tokens drawn)."""
    logits_seen, drawn = [], []

    def recording_sample(logits, *settings):
        logits_seen.append(logits.float().clone())
        token = logits.argmax(-1) if replay is None else replay[len(drawn)]
        drawn.append(token)
        return token

    monkeypatch.setattr(generator_module, "sample_rows", recording_sample)
    with LMGenerator(model, user.shape[1], GREEDY, GREEDY) as gen:
        for t in range(user.shape[0]):
            gen.step(user[t])
    monkeypatch.undo()
    return logits_seen, drawn


@pytest.mark.parametrize("acoustic_delay", [1, 2])
def test_bf16_generation_matches_fp32_within_tolerance(monkeypatch, acoustic_delay):
    cfg = LMConfig.tiny(acoustic_delay=acoustic_delay, context=8)  # 24 steps: 3x the context, the KV ring too
    torch.manual_seed(0)
    model = LMModel(cfg).eval()
    user = torch.randint(0, cfg.card, (24, 2, cfg.num_user_codebooks), generator=torch.Generator().manual_seed(1))
    ref_logits, ref_tokens = run(model, user, monkeypatch)
    bf16_logits, _ = run(copy.deepcopy(model).to(torch.bfloat16), user, monkeypatch, replay=ref_tokens)
    assert len(bf16_logits) == len(ref_logits) == 24 * (1 + cfg.dep_q)
    agree = 0
    for i, (a, b) in enumerate(zip(ref_logits, bf16_logits, strict=True)):
        scale = a.abs().max()
        err = (a - b).abs().max()
        assert err <= TOLERANCE * scale, (i, err.item(), scale.item())
        top2 = a.topk(2, dim=-1).values
        clear = (top2[:, 0] - top2[:, 1]) > 2 * TOLERANCE * scale
        assert torch.equal(a.argmax(-1)[clear], b.argmax(-1)[clear]), i
        agree += int(clear.sum())
    assert agree > 0.5 * 2 * len(ref_logits)  # most choices were clear, so the argmax check had work to do
