"""Training checkpoints: sharded (torch.distributed.checkpoint), atomic, resumable, any number of models.

Layout, inside RUN/checkpoints/:
  step_00000100/            one complete checkpoint (the newest complete one is resumed)
    .metadata, __*.distcp   DCP's files: every model's and optimiser's state, sharded as the ranks hold it
    rank_00000.json ...     each rank's own state: data-loader position, random generators, anything JSON
    meta.json               step, world size, when; written last, after every rank's files
  .step_00000200.partial/   a save in progress (or interrupted): never loaded, removed by the next save

Atomicity: everything is written into the `.partial` folder, then rank 0 renames it to `step_N` (one rename,
atomic on POSIX) after a barrier that every rank reaches only once its files are flushed. A process killed
during a save leaves the previous `step_*` untouched and loadable.

Resharding: DCP reloads model and optimiser state under another world size (it reshards on load). The
per-rank JSON states only apply to the same world size; on a change they are not restored and `load` says so.

Trust: DCP's format is read only from our own run folder (it is what torch.distributed.checkpoint writes; its
`.metadata` file is a pickle, so never point `--resume` at a run folder from someone else). Exports for
sharing are safetensors (see `lm_export.py`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..io_safety import write_text
from .distributed import Dist, barrier

_STEP_DIR = re.compile(r"^step_(\d{8})$")


def rng_state() -> dict[str, Any]:
    """torch's CPU (and CUDA) generator states, JSON-able."""
    out: dict[str, Any] = {"cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available():
        out["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: Mapping[str, Any]) -> None:
    def tensor(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)

    torch.set_rng_state(tensor(state["cpu"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensor(s) for s in state["cuda"]])


@dataclass
class Loaded:
    step: int
    rank_state: dict[str, Any] | None  # None when the world size changed
    path: Path


class CheckpointManager:
    """Save and restore `models` (name -> module) and `optimizers` (name -> (module, optimizer)).

    Every rank calls `save`/`load` (collectives inside). `rank_state`: this rank's JSON-able extra state.
    """

    def __init__(self, folder: str | Path, d: Dist, keep: int = 2) -> None:
        self.folder = Path(folder)
        self.dist = d
        self.keep = max(1, keep)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for p in self.folder.iterdir():
            m = _STEP_DIR.match(p.name)
            if m and (p / "meta.json").is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1][1] if found else None

    def _state(self, models: Mapping[str, nn.Module],
               optimizers: Mapping[str, tuple[nn.Module, torch.optim.Optimizer]]) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for name, m in models.items():
            state[f"model.{name}"] = get_model_state_dict(m, options=StateDictOptions())
        for name, (m, opt) in optimizers.items():
            state[f"optim.{name}"] = get_optimizer_state_dict(m, opt, options=StateDictOptions())
        return state

    def save(self, step: int, models: Mapping[str, nn.Module],
             optimizers: Mapping[str, tuple[nn.Module, torch.optim.Optimizer]],
             rank_state: Mapping[str, Any]) -> Path:
        d = self.dist
        final = self.folder / f"step_{step:08d}"
        partial = self.folder / f".step_{step:08d}.partial"
        if d.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            for stale in self.folder.glob(".step_*.partial"):
                shutil.rmtree(stale, ignore_errors=True)
            partial.mkdir()
        barrier(d)
        with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
            warnings.filterwarnings("ignore", message=".*in a single process.*")
            dcp.save(self._state(models, optimizers), checkpoint_id=str(partial))
        write_text(partial / f"rank_{d.rank:05d}.json", json.dumps(dict(rank_state)))
        barrier(d)
        if d.is_main:
            write_text(partial / "meta.json", json.dumps({"step": step, "world_size": d.world_size,
                                                          "time": time.time()}))
            if final.exists():  # the same step saved again (e.g. the last step of a resumed run)
                shutil.rmtree(final)
            os.replace(partial, final)
            _fsync_dir(self.folder)
            for _, old in self.checkpoints()[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        barrier(d)
        return final

    def load(self, path: str | Path, models: Mapping[str, nn.Module],
             optimizers: Mapping[str, tuple[nn.Module, torch.optim.Optimizer]]) -> Loaded:
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no meta.json)")
        meta = json.loads(meta_path.read_text())
        state = self._state(models, optimizers)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*in a single process.*")
            dcp.load(state, checkpoint_id=str(path))
        for name, m in models.items():
            set_model_state_dict(m, state[f"model.{name}"], options=StateDictOptions(strict=True))
        for name, (m, opt) in optimizers.items():
            set_optimizer_state_dict(m, opt, state[f"optim.{name}"])
        rank_state = None
        rank_file = path / f"rank_{self.dist.rank:05d}.json"
        if meta.get("world_size") == self.dist.world_size and rank_file.is_file():
            rank_state = json.loads(rank_file.read_text())
        return Loaded(int(meta["step"]), rank_state, path)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
