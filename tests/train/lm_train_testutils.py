"""Shared by the LM trainer tests: tiny configs on synthetic data, metrics reading, a data source that crashes."""

from __future__ import annotations

import json
from pathlib import Path

from openmoshi.train.config import resolve_config
from openmoshi.train.lm_config import LM_TRAIN_PRESETS, LMTrainConfig
from openmoshi.train.lm_data import SyntheticLMData

# A smaller architecture than the preset's, for the tests that only need the loop to run.
SMALL = "model.overrides={dim: 32, num_heads: 2, hidden: 48, depformer_dim: 16, depformer_hidden: 24, num_layers: 1}"


def tiny_config(*sets: str, small: bool = True) -> LMTrainConfig:
    base = ["data.synthetic=true", "train.log_every=1", "train.val_every=0", "train.checkpoint_every=0"]
    return resolve_config(LMTrainConfig, "tiny", LM_TRAIN_PRESETS, [*base, *([SMALL] if small else []), *sets])


def read_metrics(run: Path, split: str = "train") -> list[dict]:
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("split") == split]


class CrashingData:
    """SyntheticLMData that raises after `crash_after` micro-batches (a run killed mid-way)."""

    def __init__(self, crash_after: int, **kw) -> None:
        self.inner = SyntheticLMData(**kw)
        self.crash_after = crash_after

    def __iter__(self):
        for i, batch in enumerate(self.inner):
            if i >= self.crash_after:
                raise RuntimeError("simulated crash")
            yield batch

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)
