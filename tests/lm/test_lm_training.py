"""Training readiness of the LM: meta-device construction + init_weights, a backward pass reaching every parameter,
a safetensors round trip, and FSDP2 (`fully_shard`, 2 CPU processes over gloo) equal to the unsharded model for
the training pass and for the depth transformer's generation path."""

import copy
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from openmoshi.lm.config import LMConfig
from openmoshi.lm.depformer import DepthTransformer
from openmoshi.lm.loss import lm_loss
from openmoshi.lm.model import LMModel
from openmoshi.nn.norms import RMSNorm

CFG = LMConfig.tiny(num_layers=1, depformer_num_layers=2, dep_q=4)


def random_codes(cfg: LMConfig, B: int = 2, T: int = 6, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, cfg.card, (B, cfg.num_streams, T), generator=gen)
    codes[:, 0] = torch.randint(0, cfg.text_card, (B, T), generator=gen)
    return codes


@pytest.mark.parametrize("cls", [LMModel, DepthTransformer])
def test_meta_then_to_empty_then_init_weights(cls):
    torch.manual_seed(0)
    direct = cls(CFG)
    with torch.device("meta"):
        model = cls(CFG)
    model = model.to_empty(device="cpu")
    for p in model.parameters():
        p.data.fill_(float("nan"))  # whatever to_empty left: init_weights must overwrite every value
    model.init_weights()
    for (name, p), q in zip(model.named_parameters(), direct.parameters(), strict=True):
        assert p.device.type == "cpu" and torch.isfinite(p).all(), name
        if p.dim() == 1:
            assert torch.equal(p, torch.ones_like(p)), name  # RMSNorm weights (no biases / LayerScale here)
        else:
            assert p.std() > 0 and len(p.unique()) > p.numel() // 2, name  # random, not degenerate
            assert 0.8 < p.std() / q.std() < 1.25, name  # the constructor's distribution
    assert any(isinstance(m, RMSNorm) for m in model.modules())
    if cls is LMModel:
        codes = random_codes(CFG)
        out = model(codes)
        assert torch.isfinite(out.text_logits).all() and torch.isfinite(out.audio_logits).all()
    torch.manual_seed(1)
    again = cls(CFG, device="meta").to_empty(device="cpu")
    again.init_weights()
    assert not torch.equal(next(again.parameters()), next(model.parameters()))


def test_backward_reaches_every_parameter():
    model = LMModel(CFG)
    codes = random_codes(CFG)
    loss = lm_loss(model(codes), codes).total
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_safetensors_round_trip(tmp_path):
    model = LMModel(CFG).eval()
    save_file(model.state_dict(), tmp_path / "lm.safetensors")
    other = LMModel(CFG).eval()
    other.load_state_dict(load_file(tmp_path / "lm.safetensors"), strict=True)
    codes = random_codes(CFG)
    with torch.no_grad():
        a, b = model(codes), other(codes)
    assert torch.equal(a.text_logits, b.text_logits) and torch.equal(a.audio_logits, b.audio_logits)


def greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1)


def generation_loss(depformer: DepthTransformer, h: torch.Tensor, text: torch.Tensor, weights: torch.Tensor):
    """Greedy generation of one frame, the logits of every depth step reduced to a scalar (a differentiable
    function of every generation-path parameter)."""
    logits: list[torch.Tensor] = []
    tokens = depformer.generate(h, text, greedy, depformer.new_cache(h.shape[0]), logits_out=logits)
    return tokens, (torch.stack(logits, dim=1) * weights).sum()


def _fsdp_worker(rank: int, port: int, results) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        mesh = init_device_mesh("cpu", (2,))
        report = {}
        # -- the training pass of the whole LM ------------------------------------------------------------
        torch.manual_seed(0)
        ref = LMModel(CFG)
        model = copy.deepcopy(ref)
        for layer in [*model.transformer.layers, *model.depformer.transformer.layers]:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        codes = random_codes(CFG, seed=1)
        loss = lm_loss(model(codes), codes).total
        loss.backward()
        ref_loss = lm_loss(ref(codes), codes).total
        ref_loss.backward()
        ref_grads = dict(ref.named_parameters())
        report["lm_loss"] = (loss.item(), ref_loss.item())
        report["lm_grad_err"] = max(
            (p.grad.full_tensor() - ref_grads[n].grad).abs().max().item() for n, p in model.named_parameters())
        report["lm_sharded"] = all(type(p).__name__ == "DTensor" for p in model.parameters())
        # -- the depth transformer's generation path ----------------------------------------------------
        torch.manual_seed(0)
        dref = DepthTransformer(CFG)
        dmodel = copy.deepcopy(dref)
        for layer in dmodel.transformer.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(dmodel, mesh=mesh)
        register_fsdp_forward_method(dmodel, "generate")
        gen = torch.Generator().manual_seed(2)
        h = torch.randn(2, CFG.dim, generator=gen)
        text = torch.randint(0, CFG.text_card, (2,), generator=gen)
        weights = torch.randn(2, CFG.dep_q, CFG.card, generator=gen)
        tokens, loss = generation_loss(dmodel, h, text, weights)
        loss.backward()
        ref_tokens, ref_loss = generation_loss(dref, h, text, weights)
        ref_loss.backward()
        ref_grads = dict(dref.named_parameters())
        report["gen_tokens_equal"] = torch.equal(tokens, ref_tokens)
        report["gen_loss"] = (loss.item(), ref_loss.item())
        report["gen_grad_err"] = max(
            (p.grad.full_tensor() - ref_grads[n].grad).abs().max().item() for n, p in dmodel.named_parameters())
        report["gen_grad_scale"] = max(p.grad.abs().max().item() for p in dref.parameters())
        results[rank] = report
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fully_shard_two_processes_equals_unsharded():
    """Same input on both ranks: the averaged gradients equal the unsharded model's. Tolerance 1e-5 absolute on
    losses and gradients (fp32, reductions in a different order)."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_fsdp_worker, args=(free_port(), results), nprocs=2, join=True)
        results = dict(results)
    assert sorted(results) == [0, 1]
    for rank, r in results.items():
        assert r["lm_sharded"], rank
        assert r["lm_loss"][0] == pytest.approx(r["lm_loss"][1], abs=1e-5), rank
        assert r["lm_grad_err"] < 1e-5, (rank, r)
        assert r["gen_tokens_equal"], rank
        assert r["gen_loss"][0] == pytest.approx(r["gen_loss"][1], abs=1e-5), rank
        assert r["gen_grad_scale"] > 1e-3 and r["gen_grad_err"] < 1e-5, (rank, r)
