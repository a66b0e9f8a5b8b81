"""Peak RSS growth while `load_lm` loads a checkpoint, against the size of the weights (machine-dependent).

The test suite checks the deterministic part (tests/lm/test_lm_load_memory.py: the reader holds one tensor's
bytes at a time); the process's peak RSS also depends on the allocator and the page cache, so it is measured
here, in a fresh process per run:

    .venv/bin/python bench/load_memory.py [--layers 40] [--dim 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_CHILD = """
import json, resource, sys
import torch
from openmoshi.lm.checkpoint import load_lm
from openmoshi.lm.config import LMConfig
from openmoshi.lm.model import LMModel
cfg = LMConfig.from_dict(json.loads(sys.argv[2]))
with torch.device("meta"):
    LMModel(cfg)  # warm up imports and allocator paths before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = load_lm(sys.argv[1], cfg)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


def main() -> None:
    import torch
    from safetensors.torch import save_file

    from openmoshi.lm.config import LMConfig
    from openmoshi.lm.model import LMModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--dim", type=int, default=256)
    args = parser.parse_args()
    cfg = LMConfig.tiny(dim=args.dim, num_layers=args.layers, hidden=4 * args.dim, num_heads=4)
    model = LMModel(cfg)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        del model
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        out = subprocess.run([sys.executable, "-c", _CHILD, str(path), json.dumps(cfg.to_dict())],
                             capture_output=True, text=True, check=True, cwd=str(ROOT))
    growth = int(out.stdout.strip().splitlines()[-1])
    print(f"weights {size / 2**20:.1f} MB, peak RSS growth while loading {growth / 2**20:.1f} MB "
          f"({growth / size:.2f}x the weights)")


if __name__ == "__main__":
    main()
