"""torch.compile of the LM's per-frame step (temporal streaming step, text sampling, depth generation) in
static-shape mode: one compilation for 20 steps, outputs equal to eager."""

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from openmoshi.lm.config import LMConfig
from openmoshi.lm.model import LMModel
from openmoshi.nn.attention import set_static_shapes
from openmoshi.nn.streaming import streaming


def greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1)


def run(model: LMModel, step, inputs: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Feeds inputs [N, B, K, 1] one frame at a time; the generated tokens are fed back as Moshi's streams."""
    B = inputs.shape[1]
    dq = model.cfg.dep_q
    cache = model.depformer.new_cache(B)
    outs = []
    with torch.no_grad(), streaming(model.transformer, B):
        for frame in inputs:
            tokens = frame.clone()
            if outs:
                tokens[:, 0, 0], tokens[:, 1:dq + 1, 0] = outs[-1]
            outs.append(step(tokens, greedy, greedy, cache))
    return outs


def test_compiled_frame_step_compiles_once_and_equals_eager():
    cfg = LMConfig.tiny().replace(context=8, num_layers=1, depformer_num_layers=1)  # 20 steps wrap the ring
    model = LMModel(cfg).eval()
    set_static_shapes(model, True)
    B, N = 2, 20
    inputs = torch.randint(0, cfg.card, (N, B, cfg.num_streams, 1))
    eager = run(model, model.frame_step, inputs)

    graphs = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model.frame_step, backend=counting_backend, fullgraph=True)
    got = run(model, compiled, inputs)
    assert len(graphs) == 1, f"{len(graphs)} compilations"
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["recompiles"]
    for (t1, a1), (t2, a2) in zip(eager, got, strict=True):
        assert torch.equal(t1, t2) and torch.equal(a1, a2)
    # The outputs moved (not a constant): the stream really advanced.
    assert len({tuple(a.flatten().tolist()) for _, a in eager}) > 1


def test_eager_mode_equals_static_mode():
    cfg = LMConfig.tiny().replace(context=8)
    model = LMModel(cfg).eval()
    inputs = torch.randint(0, cfg.card, (12, 2, cfg.num_streams, 1))
    eager = run(model, model.frame_step, inputs)
    set_static_shapes(model, True)
    static = run(model, model.frame_step, inputs)
    for (t1, a1), (t2, a2) in zip(eager, static, strict=True):
        assert torch.equal(t1, t2) and torch.equal(a1, a2)
