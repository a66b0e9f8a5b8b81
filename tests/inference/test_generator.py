"""LMGenerator behaviour: alignment, batches of independent rows, reset, pause, seeds, flat memory."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))  # shared LM test helpers
from lm_testutils import one_thread  # noqa: E402

from openmoshi.inference.generator import LMGenerator  # noqa: E402
from openmoshi.inference.sampling import SamplingConfig  # noqa: E402
from openmoshi.lm.config import LMConfig  # noqa: E402
from openmoshi.lm.model import LMModel  # noqa: E402

GREEDY = SamplingConfig(greedy=True)
_one_thread = pytest.fixture(autouse=True)(one_thread)


def _model(cfg=None, seed=0):
    torch.manual_seed(seed)
    model = LMModel(cfg or LMConfig.tiny()).eval()
    with torch.no_grad():  # sharper logits than the default init: greedy near-ties become unlikely
        for p in model.parameters():
            p.mul_(3.0)
    return model


def _run(model, user, greedy=True, seed=0, resets=None, active=None):
    """user [T, B, n_user] -> list of [B, 1 + dep_q] outputs (None while nothing is output)."""
    T, B = user.shape[:2]
    cfg = GREEDY if greedy else None
    outs = []
    with LMGenerator(model, B, text_sampling=cfg, audio_sampling=cfg, seed=seed) as gen:
        for t in range(T):
            if resets and t in resets:
                gen.reset(resets[t])
            o = gen.step(user[t], None if active is None else active[t])
            outs.append(None if o is None else torch.cat([o.text[:, None], o.audio], 1))
    return outs


def _user(T, B, cfg, seed=1):
    return torch.randint(0, cfg.card, (T, B, cfg.num_user_codebooks), generator=torch.Generator().manual_seed(seed))


def test_outputs_start_after_max_delay():
    cfg = LMConfig.tiny(acoustic_delay=2)
    outs = _run(_model(cfg), _user(6, 2, cfg))
    assert outs[0] is None and outs[1] is None and outs[2] is not None
    assert all(o.shape == (2, 1 + cfg.dep_q) for o in outs[2:])
    assert all(((o >= 0) & (o < cfg.text_card)).all() for o in outs[2:])


def test_rows_are_independent():
    cfg = LMConfig.tiny()
    model = _model(cfg)
    user = _user(20, 3, cfg)
    batched = _run(model, user)
    for b in range(3):
        single = _run(model, user[:, b:b + 1])
        for t in range(1, 20):
            assert torch.equal(batched[t][b:b + 1], single[t]), (b, t)


def test_reset_one_row():
    cfg = LMConfig.tiny()
    model = _model(cfg)
    user = _user(24, 2, cfg)
    mask = torch.tensor([False, True])
    outs = _run(model, user, resets={10: mask})
    plain = _run(model, user[:, :1])
    fresh = _run(model, user[10:, 1:])
    for t in range(1, 24):
        assert torch.equal(outs[t][:1], plain[t]), t  # row 0 never noticed
    assert (outs[10][1] == -2).all()  # row 1 restarted: nothing to output at its first step
    for t in range(11, 24):
        assert torch.equal(outs[t][1:], fresh[t - 10]), t


def test_inactive_row_is_untouched():
    cfg = LMConfig.tiny()
    model = _model(cfg)
    user = _user(16, 2, cfg)
    active = torch.ones(16, 2, dtype=torch.bool)
    active[5:9, 1] = False  # row 1 pauses for 4 steps
    outs = _run(model, user, active=active)
    keep = [t for t in range(16) if t not in range(5, 9)]
    skipped = _run(model, user[keep][:, 1:])
    for i, t in enumerate(keep):
        if i >= 1:
            assert torch.equal(outs[t][1:], skipped[i]), t
    assert all((outs[t][1] == -2).all() for t in range(5, 9))
    plain = _run(model, user[:, :1])
    assert all(torch.equal(outs[t][:1], plain[t]) for t in range(1, 16))


def test_sampling_is_seeded():
    cfg = LMConfig.tiny()
    model = _model(cfg)
    user = _user(12, 2, cfg)
    a = torch.stack(_run(model, user, greedy=False, seed=5)[1:])
    b = torch.stack(_run(model, user, greedy=False, seed=5)[1:])
    c = torch.stack(_run(model, user, greedy=False, seed=6)[1:])
    assert torch.equal(a, b) and not torch.equal(a, c)


def _state_bytes(gen: LMGenerator) -> int:
    total = gen.cache.numel() * gen.cache.element_size()
    for m in list(gen.model.transformer.modules()) + list(gen.model.depformer.transformer.modules()):
        state = getattr(m, "state", None)
        if state is not None:
            total += sum(v.numel() * v.element_size() for v in vars(state).values() if isinstance(v, torch.Tensor))
    return total


def test_memory_flat_past_three_context_windows():
    cfg = LMConfig.tiny(context=16)
    model = _model(cfg)
    user = _user(3 * 16 + 10, 1, cfg)
    with LMGenerator(model, 1, GREEDY, GREEDY) as gen:
        sizes = []
        for t in range(user.shape[0]):
            out = gen.step(user[t])
            sizes.append(_state_bytes(gen))
        assert len(set(sizes)) == 1
        assert out is not None and (out.audio >= 0).all()


def test_dep_q16_takes_no_user_codes_and_bad_shapes_are_named():
    cfg = LMConfig.tiny(dep_q=16)
    with LMGenerator(_model(cfg), 2, GREEDY, GREEDY) as gen:
        gen.step()
        out = gen.step(None)
        assert out.audio.shape == (2, 16)
        with pytest.raises(ValueError, match="no user_codes"):
            gen.step(torch.zeros(2, 8, dtype=torch.long))
    with LMGenerator(_model(), 2) as gen:
        with pytest.raises(ValueError, match=r"\[2, 8\]"):
            gen.step(torch.zeros(2, 7, dtype=torch.long))
        with pytest.raises(ValueError, match="reset mask"):
            gen.reset(torch.zeros(3, dtype=torch.bool))


def test_bf16_generation_runs():
    cfg = LMConfig.tiny(acoustic_delay=2)
    model = _model(cfg).to(torch.bfloat16)
    outs = _run(model, _user(8, 2, cfg), greedy=False)
    assert outs[1] is None and all(((o >= 0) & (o < cfg.text_card)).all() for o in outs[2:])


def test_step_makes_no_host_sync(monkeypatch):
    """A step never reads a tensor value on the host (.item(), .tolist(), bool(), int(), float())."""
    cfg = LMConfig.tiny(acoustic_delay=2)
    model = _model(cfg)
    user = _user(6, 2, cfg)
    with LMGenerator(model, 2, seed=0) as gen:
        gen.step(user[0])  # first call outside the guard: lazily built caches (RoPE frequencies)

        def sync(*_args, **_kwargs):
            raise AssertionError("host sync in the generator step")

        for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
            monkeypatch.setattr(torch.Tensor, name, sync)
        active = torch.tensor([True, False])
        for t in range(1, 6):
            gen.step(user[t], active if t == 3 else None)
        monkeypatch.undo()
        gen.reset(torch.tensor([True, False]))
