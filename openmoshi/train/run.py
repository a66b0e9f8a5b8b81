"""The run folder of a training run, and what is written there as training goes.

RUN/
  config.yaml      the resolved configuration (reloadable with `resolve_config`)
  metrics.jsonl    one JSON object per logged step (training) and per validation ("split": "val")
  loss.png         training and validation loss curves, redrawn as training goes
  checkpoints/     see checkpoint.py
  export/          the trained model (trainer-specific)

`check_run_folder(path, resume)` (then `prepare_run_folder`, which creates it) refuses a non-empty folder
unless resuming (so a finished run is never overwritten by accident) and a missing one when resuming. Only
rank 0 writes here, except checkpoints, which every rank writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..io_safety import atomic_output

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "loss.png"


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (exists and not resuming, missing when resuming...)."""


def check_run_folder(path: str | Path, resume: bool) -> Path:
    """Check the run folder without creating anything: new (or empty), or an existing run when `resume`."""
    run = Path(path).expanduser()
    if run.exists() and not run.is_dir():
        raise RunFolderError(f"run folder {run} exists and is not a folder")
    if resume:
        if not (run / CONFIG_NAME).is_file():
            raise RunFolderError(f"cannot resume: {run} holds no run ({CONFIG_NAME} missing)")
        return run
    if run.is_dir() and any(run.iterdir()):
        raise RunFolderError(f"run folder {run} is not empty: pass --resume to continue that run, or choose "
                             f"another --out")
    return run


def prepare_run_folder(path: str | Path, resume: bool) -> Path:
    """`check_run_folder`, then create it."""
    run = check_run_folder(path, resume)
    run.mkdir(parents=True, exist_ok=True)
    return run


class MetricsLog:
    """Appends metrics to RUN/metrics.jsonl (flushed per line) and redraws RUN/loss.png."""

    def __init__(self, run: Path, resume_step: int | None = None) -> None:
        self.path = run / METRICS_NAME
        self.plot_path = run / PLOT_NAME
        self.records: list[dict[str, Any]] = []
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a kill: dropped
                    continue
                # after a resume, the steps past the checkpoint are run again: their old lines go
                if resume_step is None or rec.get("step", 0) <= resume_step:
                    self.records.append(rec)
        self._rewrite()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115  (closed by close())

    def _rewrite(self) -> None:
        with atomic_output(self.path) as f:
            for rec in self.records:
                f.write((json.dumps(rec) + "\n").encode())

    def log(self, record: Mapping[str, Any]) -> None:
        rec = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self.records.append(rec)
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()

    def plot(self, title: str = "") -> None:
        plot_losses(self.records, self.plot_path, title)

    def close(self) -> None:
        self._file.close()


def plot_losses(records: list[Mapping[str, Any]], path: Path, title: str = "") -> None:
    """Training (and validation) loss against the step, with the text and audio parts, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("split", "train") == "train" and r.get("loss") is not None]
    val = [r for r in records if r.get("split") == "val" and r.get("loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if train:
            ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", color="C0")
            for key, color in (("text_loss", "C2"), ("audio_loss", "C3")):
                pts = [(r["step"], r[key]) for r in train if r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), label=f"train {key.split('_')[0]}", color=color, alpha=0.5,
                            linewidth=0.8)
        if val:
            ax.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="validation", color="C1")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if title:
            ax.set_title(title)
        ax.grid(alpha=0.3)
        if train or val:
            ax.legend()
        with atomic_output(path) as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
