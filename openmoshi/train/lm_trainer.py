"""The LM trainer: `train_lm(config, run)` runs pre-training or fine-tuning from a resolved `LMTrainConfig`.

One process, or one per device under torchrun (FSDP2, see parallelize.py); every rank runs this function.
Order of work: join the process group; build the model (on meta, then `init_weights`, or loaded from a
checkpoint in Kyutai's layout, `model.init`); LoRA when enabled; parallelize; AdamW (temporal / depth learning
rates); the data; resume from the newest checkpoint when asked; then the steps:

  for each step: lr from the schedule; grad_accum micro-batches (augmented, autocast, loss / grad_accum,
  backward); gradient clipping; optimiser step; every `log_every` a metrics line (step, loss, lr, text and
  audio losses, grad norm, frames/s, tokens/s), every `val_every` the held-out loss and accuracies, every
  `checkpoint_every` a checkpoint.

The objective of a step is the mean of its micro-batches' losses (each micro-batch's loss a weighted mean over
its valid positions), so a global batch gives the same step whether split over ranks or accumulation steps.
At the end: a last checkpoint and RUN/export/ (the full model in Kyutai's layout, or the adapters alone with
LoRA).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..lm.config import LMConfig, lm_preset
from ..lm.model import LMModel
from . import lm_lora
from .checkpoint import CheckpointManager, rng_state, set_rng_state
from .config import dump_yaml
from .distributed import Dist, all_mean, barrier, init_distributed
from .lm_config import LMTrainConfig
from .lm_data import build_lm_data, prepare_lm_data
from .lm_export import export_lm
from .lm_export import read_export_config as export_config
from .lm_step import (
    augment,
    count_parameters,
    lm_accuracy,
    lm_param_groups,
    lm_train_loss,
    loss_config,
    training_lm_config,
)
from .lm_user_text import UserTranscriptTask, build_user_transcript
from .optim import build_adamw, set_lr
from .parallelize import data_parallel_mesh, lm_blocks, parallelize
from .run import CONFIG_NAME, MetricsLog, check_run_folder, prepare_run_folder

DataFactory = Callable[..., Any]  # (split=, batch_size=, seq_frames=, grad_accum=, rank=, world_size=, seed=) -> it


@dataclass
class TrainResult:
    run: Path
    step: int
    last: dict[str, Any]  # the last training metrics line
    val: dict[str, Any] | None  # the last validation line
    export: Path | None


@dataclass
class ModelSource:
    cfg: LMConfig  # the architecture (delays as trained)
    files: Any  # model_files.ModelFiles of `init` or `assets`, or None


def resolve_model_source(cfg: LMTrainConfig) -> ModelSource:
    """The architecture and the files (weights, Mimi, tokenizer) the run starts from."""
    from ..model_files import resolve_model_files

    files = None
    if cfg.model.init is not None:
        files = resolve_model_files(cfg.model.init, flags={"model": "--model"})
        lm_cfg = files.repo_config.lm
    else:
        lm_cfg = lm_preset(cfg.model.preset)
        if cfg.model.overrides:
            lm_cfg = lm_cfg.replace(**cfg.model.overrides)
        if cfg.model.assets is not None:
            files = resolve_model_files(cfg.model.assets, roles=("mimi", "tokenizer"), flags={"model": "--assets"})
    return ModelSource(training_lm_config(lm_cfg, cfg.loss.acoustic_delay), files)


def build_model(cfg: LMTrainConfig, source: ModelSource, device: torch.device) -> LMModel:
    """The LM in fp32 on `device`: loaded from `model.init`, or new (built on meta, then init_weights)."""
    torch.manual_seed(cfg.train.seed)  # every rank starts from the same weights
    if source.files is not None and cfg.model.init is not None:
        from ..lm.checkpoint import load_lm

        model = load_lm(source.files.moshi, source.files.repo_config.lm, device=device)
        model.cfg = source.cfg  # the delays this run trains with (shapes unchanged)
    else:
        with torch.device("meta"):
            model = LMModel(source.cfg)
        model = model.to_empty(device=device)
        model.init_weights()
    return model.train()


def _default_data(cfg: LMTrainConfig, source: ModelSource, d: Dist) -> DataFactory:
    prepared = None
    if not cfg.data.synthetic:
        if cfg.data.manifest is None:
            raise ValueError("no data: pass --data MANIFEST (a JSONL dataset) or --data synthetic")
        prepared = prepare_lm_data(cfg.data.manifest, source.files, d)

    def factory(split: str, **kw: Any):
        return build_lm_data(source.cfg, split=split, prepared=prepared, synthetic=cfg.data.synthetic,
                             text_only_share=cfg.loss.text_only_share, val_share=cfg.data.val_share,
                             user_text=cfg.loss.user_text_weight > 0, **kw)
    return factory


def train_lm(cfg: LMTrainConfig, run: str | Path, *, resume: bool = False, progress: bool = True,
             data: DataFactory | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """Train as `cfg` says, in the run folder `run` (new, or an existing run when `resume`)."""
    t = cfg.train
    d = init_distributed(t.device)
    if t.batch_size % (d.world_size * t.grad_accum):
        raise ValueError(f"train.batch_size {t.batch_size} is not a multiple of world size x grad_accum "
                         f"({d.world_size} x {t.grad_accum})")
    run = Path(run)
    check_run_folder(run, resume)  # before any work: a finished run is never overwritten
    barrier(d)  # every rank has looked before rank 0 creates it
    say = log if d.is_main else (lambda _m: None)
    source = resolve_model_source(cfg)
    factory = data or _default_data(cfg, source, d)  # bad data is reported before the run folder exists
    data_kw = dict(batch_size=t.batch_size, seq_frames=cfg.data.seq_frames, grad_accum=t.grad_accum,
                   rank=d.rank, world_size=d.world_size, seed=t.seed)
    train_data = factory(split="train", **data_kw)
    if d.is_main:
        prepare_run_folder(run, resume)
        if not resume:
            from ..io_safety import write_text

            write_text(run / CONFIG_NAME, dump_yaml(cfg))
    barrier(d)
    model = build_model(cfg, source, d.device)
    if cfg.lora.enabled:
        n = lm_lora.enable_lora(model, cfg.lora)
        say(f"LoRA: {n} adapted layers, rank {cfg.lora.rank}, scaling {cfg.lora.scaling}")
    total, trainable = count_parameters(model)
    say(f"model: {total:,} parameters ({trainable:,} trained) on {d.device}, {d.world_size} process(es)")
    mesh = data_parallel_mesh(d.device, d.world_size) if d.distributed else None
    aux = build_user_transcript(model, cfg.loss, cfg.optim, mesh)  # training only: never exported
    parallelize(model, lm_blocks(model), activation_checkpointing=t.activation_checkpointing, compile=t.compile,
                mesh=mesh)
    optimizer = build_adamw(model.named_parameters(), lm_param_groups(cfg.optim), cfg.optim)
    ckpt = CheckpointManager(run / "checkpoints", d, keep=t.keep_checkpoints)
    models, optims = {"lm": model}, {"lm": (model, optimizer)}
    if aux is not None:
        say(f"user-transcript loss: weight {aux.weight}, {cfg.loss.user_text_delay} frames late (a training-only "
            f"head, not exported)")
        models["user_text"], optims["user_text"] = aux.head, (aux.head, aux.optimizer)
    start = 0
    if resume:
        latest = ckpt.latest()
        if latest is None:
            say(f"no checkpoint in {run}: starting from step 0")
        else:
            loaded = ckpt.load(latest, models, optims)
            start = loaded.step
            if loaded.rank_state is not None:
                train_data.load_state_dict(loaded.rank_state["data"])
                set_rng_state(loaded.rank_state["rng"])
            elif loaded.first_rank_state is not None:
                # another world size: the loader's position is the same on every rank, so rank 0's serves
                try:
                    train_data.load_state_dict(loaded.first_rank_state["data"])
                    say("the world size changed since the checkpoint: the data position is kept as a share of "
                        "the epoch; random states start afresh")
                except (ValueError, KeyError) as err:
                    say(f"the world size changed and the data position cannot be kept ({err}): the data order "
                        "restarts")
            say(f"resuming {run} at step {start} (from {latest.name})")
    metrics = MetricsLog(run, resume_step=start) if d.is_main else None
    loss_cfg = loss_config(source.cfg, cfg.loss)
    result = _loop(cfg, d, model, train_data, factory, data_kw, loss_cfg, ckpt, models, optims, start,
                   metrics, progress, aux)
    export = None
    if result["step"] >= t.steps:
        export = _export(cfg, d, model, source, run / "export")
        if export is not None:
            say(f"exported to {export}")
    if metrics is not None:
        metrics.plot(f"openmoshi train lm ({run.name})")
        metrics.close()
    return TrainResult(run, result["step"], result["last"], result["val"], export)


def _autocast(cfg: LMTrainConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")


def _loop(cfg, d: Dist, model, train_data, factory, data_kw, loss_cfg, ckpt, models, optims, start,
          metrics, progress, aux: UserTranscriptTask | None = None) -> dict[str, Any]:
    """The steps. "loss" in the metrics is the LM's (text + audio); with `aux` the step also minimises
    aux.weight x the user-transcript loss, logged as "user_text_loss"."""
    from tqdm import tqdm

    t = cfg.train
    it = iter(train_data)
    params = [p for m in models.values() for p in m.parameters() if p.requires_grad]
    last: dict[str, Any] = {}
    val: dict[str, Any] | None = None
    names = ("loss", "text_loss", "audio_loss") + (("user_text_loss",) if aux is not None else ())
    window = {**dict.fromkeys(names, 0.0), "grad_norm": 0.0, "n": 0, "frames": 0}
    t0 = time.perf_counter()
    bar = tqdm(total=t.steps, initial=start, disable=not (progress and d.is_main), desc="train lm", unit="step",
               dynamic_ncols=True)
    step = start
    for step in range(start, t.steps):
        lr_mult = 1.0
        for _, opt in optims.values():  # the LM's, and the user-transcript head's: one schedule
            lr_mult = set_lr(opt, step, t.steps, cfg.schedule)
            opt.zero_grad(set_to_none=True)
        parts = torch.zeros(len(names), dtype=torch.float64)
        frames = 0
        for a in range(t.grad_accum):
            batch = next(it)
            codes = augment(batch.codes.to(d.device), cfg.loss, t.seed, step, a * d.world_size + d.rank,
                            getattr(batch, "text_only", False))
            frames += codes.shape[0] * codes.shape[2]
            with _autocast(cfg, d.device):
                loss, out = lm_train_loss(model, codes, loss_cfg)
                values = [loss.total, loss.text, loss.audio]
                objective = loss.total
                if aux is not None:
                    heard, _, _ = aux(out, batch.user_text)
                    values.append(heard)
                    objective = objective + aux.weight * heard
            (objective / t.grad_accum).backward()
            parts += torch.tensor([v.item() for v in values], dtype=torch.float64) / t.grad_accum
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip or float("inf"))  # 0 = no clipping
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        for _, opt in optims.values():
            opt.step()
        window["n"] += 1
        window["frames"] += frames * d.world_size
        for k, v in zip(names, parts.tolist(), strict=True):
            window[k] += v
        window["grad_norm"] += float(norm)
        done = step + 1
        bar.update(1)
        if done % t.log_every == 0 or done == t.steps:
            means = all_mean({k: window[k] / window["n"] for k in (*names, "grad_norm")}, d)
            dt = time.perf_counter() - t0
            fps = window["frames"] / dt
            last = {"step": done, "split": "train", **means, "lr": cfg.optim.lr * lr_mult,
                    "depth_lr": cfg.optim.depth_lr * lr_mult, "frames_per_s": fps,
                    "tokens_per_s": fps * model.cfg.num_streams, "time": time.time()}
            bar.set_postfix(loss=f"{means['loss']:.3f}", tok_s=f"{last['tokens_per_s']:.0f}")
            if metrics is not None:
                metrics.log(last)
            window = dict.fromkeys(window, 0.0) | {"n": 0, "frames": 0}
            t0 = time.perf_counter()
        if t.val_every and (done % t.val_every == 0 or done == t.steps):
            val = _validate(cfg, d, model, factory, data_kw, loss_cfg, done, aux)
            if metrics is not None:
                metrics.log(val)
                metrics.plot()
            t0 = time.perf_counter()
        if (t.checkpoint_every and done % t.checkpoint_every == 0) or done == t.steps:
            ckpt.save(done, models, optims, {"data": train_data.state_dict(), "rng": rng_state(), "step": done})
            t0 = time.perf_counter()
    bar.close()
    return {"step": max(start, t.steps), "last": last, "val": val}


@torch.no_grad()
def _validate(cfg, d: Dist, model, factory, data_kw, loss_cfg, step: int, aux: UserTranscriptTask | None = None
              ) -> dict[str, Any]:
    """Held-out loss and top-1 accuracies (text, semantic, acoustic; with `aux`, the user transcript's) over
    `val_batches` global batches (each rank its grad_accum micro-batches of each), the same batches every time
    (a fresh iterator of the split)."""
    model.eval()
    sums = {"loss": 0.0, "text_loss": 0.0, "audio_loss": 0.0} | ({"user_text_loss": 0.0} if aux else {})
    counts: dict[str, list[int]] = {}
    n = 0
    # a one-pass held-out loader may end sooner (it gives every rank the same number of batches)
    for batch in itertools.islice(factory(split="val", **data_kw), cfg.train.val_batches * cfg.train.grad_accum):
        codes = batch.codes.to(d.device)
        with _autocast(cfg, d.device):
            loss, out = lm_train_loss(model, codes, loss_cfg)
        for k, v in (("loss", loss.total), ("text_loss", loss.text), ("audio_loss", loss.audio)):
            sums[k] += v.item()
        if aux is not None:
            heard, ok, total = aux(out, batch.user_text)
            sums["user_text_loss"] += heard.item()
            c = counts.setdefault("user_text", [0, 0])
            c[0] += int(ok)
            c[1] += int(total)
        for k, (ok, total) in lm_accuracy(out, codes, loss_cfg.audio_codebooks, max(1, model.cfg.n_q // 2)).items():
            c = counts.setdefault(k, [0, 0])
            c[0] += ok
            c[1] += total
        n += 1
    sums = {k: v / max(1, n) for k, v in sums.items()}
    model.train()
    means = all_mean({**sums, **{f"{k}_ok": v[0] for k, v in counts.items()},
                      **{f"{k}_n": v[1] for k, v in counts.items()}}, d)
    if n == 0:  # no held-out data (data.val_share = 0, or too little data)
        return {"step": step, "split": "val", "loss": None}
    rec: dict[str, Any] = {"step": step, "split": "val", **{k: means[k] for k in sums}}
    for k in counts:
        rec[f"{k}_acc"] = means[f"{k}_ok"] / means[f"{k}_n"] if means[f"{k}_n"] else None
    return rec


def _export(cfg: LMTrainConfig, d: Dist, model, source: ModelSource, folder: Path) -> Path | None:
    """Gather the full weights (a collective) and write the export on rank 0."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    out = None
    files = source.files
    common = dict(mimi=files.mimi if files else None, tokenizer=files.tokenizer if files else None,
                  mimi_overrides=files.mimi_overrides if files else None,
                  lm_gen_config=files.repo_config.lm_gen_config if files else None)
    if cfg.lora.enabled:
        # a model folder that runs with the adapters: the frozen base (linked from `model.init` when there is
        # one), the adapters in lora.safetensors, config.json with Kyutai's `lora` keys
        base = files.moshi if (files is not None and cfg.model.init is not None) else None
        if d.is_main:
            plain = {k: v for k, v in state.items() if not lm_lora.is_lora_parameter(k)}
            out = export_lm(folder, plain, source.cfg, base_weights=base, **common)
            lm_lora.save_adapters(state, folder, cfg.lora, export_config(folder))
    elif d.is_main:
        out = export_lm(folder, state, source.cfg, **common)
    barrier(d)
    return out
