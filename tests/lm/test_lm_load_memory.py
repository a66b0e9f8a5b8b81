"""Loading a checkpoint holds one tensor's bytes at a time beside the model: measured deterministically.

The reader's buffers are Python `bytearray`s, so `tracemalloc` sees every byte read from the file (and any
`f.read()` of the whole file), independently of the machine; the model's own parameters (torch's allocator) are
not counted. The process's peak RSS, which depends on the machine's allocator and page cache, is measured by
`bench/load_memory.py` instead.
"""

import tracemalloc

import torch
from safetensors.torch import save_file

from openmoshi.lm.checkpoint import load_lm
from openmoshi.lm.config import LMConfig
from openmoshi.lm.model import LMModel


def test_load_reads_one_tensor_at_a_time(tmp_path):
    cfg = LMConfig.tiny(dim=128, num_layers=24, hidden=256)  # 17 MB, the largest tensor 0.5 MB
    model = LMModel(cfg)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    total = sum(v.numel() * v.element_size() for v in state.values())
    largest = max(v.numel() * v.element_size() for v in state.values())
    assert total > 20 * largest  # one tensor at a time is far from the whole file
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    del model
    load_lm(path, cfg)  # warm-up outside the trace: lazy imports and torch's meta-init code paths
    tracemalloc.start()
    try:
        loaded = load_lm(path, cfg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * largest + 3 * 2**20, (peak, largest, total)  # measured: 2.0 MB of 17 MB
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, state[name]), name
