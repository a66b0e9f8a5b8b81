"""The codec trainer: `train_codec(config, run)` trains a Mimi from a resolved `CodecTrainConfig`.

The shared framework does the rest (config.yaml, metrics.jsonl, loss.png, sharded atomic checkpoints, FSDP2 under
torchrun, the schedule); the codec brings its step (`codec_step.py`). Order of work: join the process group;
build Mimi (on meta then `init_weights`, or `model.init` loaded) and the discriminator; parallelize both (the
transformer layers and SEANet halves, each sub-discriminator); the parts (mel loss, balancer, distillation
head, weight EMA) and the two optimisers; the crops; resume from the newest checkpoint when asked; then, per
step: the schedule's lr, a batch (teacher features when a teacher is set), `codec_step`; every `log_every` a
metrics line (each loss, codebook perplexity, dead codes, seconds of audio per second); every `val_every` the
held-out clips' mel distance (the validation loss) and their reconstructions in RUN/samples/step_N/ (original,
0.25 s of silence, reconstruction, in one wav); every `checkpoint_every` a checkpoint. At the end RUN/export/
(`codec_export.export_codec`: the weight EMA in Kyutai's naming and config.json). With
`loss.phases.encoder_frozen_from`, the first step of the decoder-only phase sets the encoder side to its weight
average, freezes it and exports RUN/export-frozen/: its codes are those of every later export (the decoder
differs).

Distributed: each rank crops its share of the global batch; gradients are averaged by FSDP2; the EMA codebooks
all-reduce their statistics; the balancer averages its norms over ranks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..codec.mimi import Mimi, MimiConfig
from ..codec.presets import mimi_config_from_overrides
from .checkpoint import CheckpointManager, rng_state, set_rng_state
from .codec_config import CodecTrainConfig
from .codec_data import AudioCrops, held_out_clips
from .codec_export import export_codec
from .codec_step import CodecBatch, CodecParts, codec_optimizers, codec_parts, codec_step, encoder_side
from .config import dump_yaml
from .discriminators import MultiScaleSTFTDiscriminator
from .distributed import Dist, all_mean, barrier, init_distributed
from .optim import set_lr
from .parallelize import data_parallel_mesh, parallelize
from .run import CONFIG_NAME, MetricsLog, prepare_run_folder
from .teachers import make_teacher


@dataclass
class CodecTrainResult:
    run: Path
    step: int
    last: dict[str, Any]
    val: dict[str, Any] | None
    export: Path | None


def mimi_config(cfg: CodecTrainConfig) -> MimiConfig:
    return mimi_config_from_overrides({"preset": cfg.model.preset, **cfg.model.overrides})


def build_mimi(cfg: CodecTrainConfig, device: torch.device) -> Mimi:
    """Mimi in fp32 on `device`, in train mode: `model.init` loaded (strictly), or new (meta, then init)."""
    from ..codec.checkpoint import load_safetensors

    torch.manual_seed(cfg.train.seed)  # every rank starts from the same weights
    mcfg = mimi_config(cfg)
    with torch.device("meta"):
        mimi = Mimi(mcfg)
    mimi = mimi.to_empty(device=device)
    mimi.init_weights()
    if cfg.model.init is not None:
        if not Path(cfg.model.init).expanduser().is_file():
            raise ValueError(f"model.init {cfg.model.init}: no such weights file")
        load_safetensors(mimi, Path(cfg.model.init).expanduser())
    mimi.quantizer.training_options = cfg.quantizer
    return mimi.train()


def codec_blocks(mimi: Mimi) -> list[nn.Module]:
    """Mimi's units of sharding and checkpointing: the transformer layers and the SEANet halves."""
    return [*mimi.encoder_transformer.layers, *mimi.decoder_transformer.layers, mimi.encoder, mimi.decoder]


def _save_samples(folder: Path, clips, recons, sample_rate: int) -> None:
    from ..audio import write_wav

    gap = np.zeros(sample_rate // 4, np.float32)
    for (name, audio), recon in zip(clips, recons, strict=True):
        write_wav(folder / f"{name}.wav", np.concatenate([audio, gap, recon[:len(audio)]]), sample_rate)


@torch.no_grad()
def _validate(parts: CodecParts, clips, device: torch.device) -> tuple[float | None, list[np.ndarray]]:
    """Mel distance of the held-out clips decoded with the default number of codebooks, and the audio."""
    mimi = parts.mimi
    mimi.eval()
    losses, recons = [], []
    for _, audio in clips:
        wav = torch.from_numpy(audio)[None, None].to(device)
        recon = mimi.decode(mimi.encode(wav))[..., :wav.shape[-1]]  # the root methods FSDP2 gathers around
        losses.append(float(parts.mel_loss(recon, wav)))
        recons.append(recon[0, 0].float().cpu().numpy())
    mimi.train()
    return (float(np.mean(losses)) if losses else None), recons


def train_codec(cfg: CodecTrainConfig, run: str | Path, *, resume: bool = False, progress: bool = True,
                log: Callable[[str], None] = print) -> CodecTrainResult:
    """Train as `cfg` says, in the run folder `run` (new, or an existing run when `resume`)."""
    t = cfg.train
    d = init_distributed(t.device)
    if t.batch_size % d.world_size:
        raise ValueError(f"train.batch_size {t.batch_size} is not a multiple of the world size {d.world_size}")
    if cfg.data.source is None:
        raise ValueError("no data: pass --data FOLDER|MANIFEST (audio files, or a JSONL manifest)")
    run = Path(run)
    # The data first: a file that cannot be read leaves no run folder behind.
    rate = mimi_config(cfg).sample_rate
    data = AudioCrops(cfg.data.source, cfg.data, rate, t.batch_size // d.world_size, t.seed, d.rank, d.world_size)
    clips = held_out_clips(cfg.data.held_out or cfg.data.source, cfg.data.held_out_clips,
                           cfg.data.held_out_seconds, rate)
    mimi = build_mimi(cfg, d.device)  # weights that do not load leave no run folder either
    if d.is_main:
        prepare_run_folder(run, resume)
        if not resume:
            from ..io_safety import write_text

            write_text(run / CONFIG_NAME, dump_yaml(cfg))
    barrier(d)
    say = log if d.is_main else (lambda _m: None)
    disc = MultiScaleSTFTDiscriminator(cfg.discriminator).to(d.device) if cfg.loss.uses_discriminator else None
    say(f"codec: {sum(p.numel() for p in mimi.parameters()):,} parameters"
        + (f", discriminator {sum(p.numel() for p in disc.parameters()):,}" if disc is not None else "")
        + f" on {d.device}, {d.world_size} process(es)")
    mesh = data_parallel_mesh(d.device, d.world_size) if d.distributed else None
    parallelize(mimi, codec_blocks(mimi), activation_checkpointing=t.activation_checkpointing, compile=t.compile,
                mesh=mesh, extra_forward_methods=("encode", "decode"))
    if disc is not None:
        parallelize(disc, list(disc.discriminators), compile=t.compile, mesh=mesh)
    teacher = make_teacher(cfg.teacher)
    parts = codec_parts(mimi, cfg.loss, disc, teacher_dim=teacher.dim if teacher else None,
                        ema_decay=cfg.weight_ema)
    optims = codec_optimizers(parts, cfg.optim.lr, tuple(cfg.optim.betas), cfg.optim.weight_decay,
                              cfg.optim.discriminator_lr)
    generator = nn.ModuleDict({"mimi": mimi, **({"distillation": parts.distillation} if parts.distillation else {})})
    models: dict[str, nn.Module] = {"generator": generator}
    opt_map: dict[str, Any] = {"generator": (generator, optims.codec)}
    if disc is not None and optims.discriminator is not None:
        models["discriminator"] = disc
        opt_map["discriminator"] = (disc, optims.discriminator)
    if parts.ema is not None:
        models["weight_ema"] = parts.ema.as_module()
    ckpt = CheckpointManager(run / "checkpoints", d, keep=t.keep_checkpoints)
    start = 0
    if resume:
        latest = ckpt.latest()
        if latest is None:
            say(f"no checkpoint in {run}: starting from step 0")
        else:
            loaded = ckpt.load(latest, models, opt_map)
            start = loaded.step
            if loaded.rank_state is not None:
                data.load_state_dict(loaded.rank_state["data"])
                set_rng_state(loaded.rank_state["rng"])
                if parts.balancer is not None:
                    parts.balancer.load_state_dict(loaded.rank_state["balancer"])
                if parts.ema is not None:
                    parts.ema.steps = int(loaded.rank_state["ema_steps"])
            say(f"resuming {run} at step {start} (from {latest.name})")
    metrics = MetricsLog(run, resume_step=start) if d.is_main else None
    last, val = _loop(cfg, d, parts, optims, data, teacher, clips, ckpt, models, opt_map, start, metrics, run,
                      progress)
    export = None
    if max(start, t.steps) >= t.steps:
        state = _export_state(parts)
        if d.is_main:
            export = export_codec(run / "export", state, mimi.cfg)
            say(f"exported to {export.parent}")
        barrier(d)
    if metrics is not None:
        metrics.plot(f"openmoshi train codec ({run.name})")
        metrics.close()
    return CodecTrainResult(run, max(start, t.steps), last, val, export)


FROZEN_EXPORT = "export-frozen"


def _export_state(parts: CodecParts) -> dict[str, torch.Tensor]:
    return parts.ema.export_state(parts.mimi) if parts.ema is not None else _full_state(parts.mimi)


@torch.no_grad()
def freeze_encoder(parts: CodecParts) -> None:
    """The decoder-only phase: the encoder side's parameters take their weight average (exactly, so the EMA keeps
    them: lerp between equal values is the value) and stop training (no gradient: AdamW skips them)."""
    for module in encoder_side(parts.mimi):
        module.requires_grad_(False)
        if parts.ema is not None:
            prefix = next(n for n, m in parts.mimi.named_modules() if m is module)
            for name, p in module.named_parameters():
                p.copy_(parts.ema.shadow[f"{prefix}.{name}"].to(p.dtype))


def _full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _loop(cfg: CodecTrainConfig, d: Dist, parts: CodecParts, optims, data: AudioCrops, teacher, clips, ckpt,
          models, opt_map, start: int, metrics: MetricsLog | None, run: Path, progress: bool
          ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    from tqdm import tqdm

    t = cfg.train
    last: dict[str, Any] = {}
    val: dict[str, Any] | None = None
    window: dict[str, float] = {}
    counts: dict[str, int] = {}
    audio_seconds = 0.0
    t0 = time.perf_counter()
    bar = tqdm(total=t.steps, initial=start, disable=not (progress and d.is_main), desc="train codec", unit="step",
               dynamic_ncols=True)
    ahead = _ReadAhead(data, teacher, start, t.steps, cfg.loss.phases.encoder_frozen)
    frozen = False
    try:
        for step in range(start, t.steps):
            if not frozen and cfg.loss.phases.encoder_frozen(step):
                freeze_encoder(parts)
                frozen = True
                if d.is_main and not (run / FROZEN_EXPORT / "mimi.safetensors").is_file():
                    export_codec(run / FROZEN_EXPORT, _export_state(parts), parts.mimi.cfg)
                barrier(d)
            lr_mult = set_lr(optims.codec, step, t.steps, cfg.schedule)
            if optims.discriminator is not None:
                set_lr(optims.discriminator, step, t.steps, cfg.schedule)
            wav, feats = ahead.take(step)
            batch = CodecBatch(wav.to(d.device), feats.to(d.device) if feats is not None else None)
            out = codec_step(parts, optims, batch, cfg.loss, step)
            for k, v in out.items():  # per key: a loss may start mid-window (loss.phases.adversarial_start)
                window[k] = window.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            audio_seconds += wav.shape[0] * wav.shape[-1] / parts.mimi.sample_rate * d.world_size
            done = step + 1
            bar.update(1)
            if done % t.log_every == 0 or done == t.steps:
                means = all_mean({k: v / counts[k] for k, v in window.items()}, d)
                rate = audio_seconds / (time.perf_counter() - t0)
                loss = means.get("mel", means.get("generator"))
                last = {"step": done, "split": "train", "loss": loss, **means, "lr": cfg.optim.lr * lr_mult,
                        "audio_s_per_s": rate, "time": time.time()}
                bar.set_postfix(loss=f"{loss:.3f}", ppl=f"{means.get('perplexity', 0):.0f}")
                if metrics is not None:
                    metrics.log(last)
                window, counts, audio_seconds, t0 = {}, {}, 0.0, time.perf_counter()
            if t.val_every and clips and (done % t.val_every == 0 or done == t.steps):
                mel, recons = _validate(parts, clips, d.device)
                val = {"step": done, "split": "val", "loss": mel}
                if metrics is not None:
                    metrics.log(val)
                    metrics.plot()
                    _save_samples(run / "samples" / f"step_{done:08d}", clips, recons, parts.mimi.sample_rate)
                t0 = time.perf_counter()
            if (t.checkpoint_every and done % t.checkpoint_every == 0) or done == t.steps:
                state = {"data": data.state_dict(), "rng": rng_state(), "step": done,
                         "balancer": parts.balancer.state_dict() if parts.balancer is not None else None,
                         "ema_steps": parts.ema.steps if parts.ema is not None else 0}
                ckpt.save(done, models, opt_map, state)
                t0 = time.perf_counter()
    finally:
        ahead.close()
    bar.close()
    return last, val


class _ReadAhead:
    """Reads batch s + 1 (the crops and the teacher's features) in a worker thread while step s trains. Both
    mostly run outside the GIL (soundfile, soxr, CTranslate2), so on a CPU the teacher's ~0.3 s per batch
    overlaps the codec's step instead of adding to it. Batches are a pure function of the step
    (`AudioCrops.batch_at`), so a run reads exactly what it would read without the worker."""

    def __init__(self, data: AudioCrops, teacher, start: int, stop: int,
                 frozen: Callable[[int], bool] = lambda _step: False) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.data, self.teacher, self.stop, self.frozen = data, teacher, stop, frozen
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codec-data")
        self.pending = self.pool.submit(self._load, start) if start < stop else None

    def _load(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        wav = self.data.batch_at(step)
        # the decoder-only phase has no distillation: no teacher features
        use_teacher = self.teacher is not None and not self.frozen(step)
        return wav, (self.teacher.features(wav[:, 0]) if use_teacher else None)

    def take(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Batch `step` (read ahead), and start reading the next one."""
        if self.pending is None:
            raise RuntimeError(f"no batch was read for step {step}")
        wav, feats = self.pending.result()
        self.pending = self.pool.submit(self._load, step + 1) if step + 1 < self.stop else None
        self.data.step = step + 1  # what a checkpoint saves: the batches consumed, not the one read ahead
        return wav, feats

    def close(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
        self.pool.shutdown(wait=True)
