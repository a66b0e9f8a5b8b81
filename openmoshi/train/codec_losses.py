"""The codec's losses: multi-scale mel reconstruction, waveform L1, hinge adversarial, feature matching, and
semantic distillation (cosine to a teacher's features), plus codebook-usage metrics.

Shapes: waveforms [B, 1, T]; discriminator outputs are lists over its sub-discriminators (logits of any shape,
feature maps a list per sub-discriminator); codes [B, K, F]; semantic output [B, D, F]; teacher features
[B, F_t, C] at the teacher's own frame rate (pooled to F frames here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def hz_to_mel(f: Tensor) -> Tensor:
    """The HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
                   ) -> Tensor:
    """Triangular filters [n_mels, n_fft // 2 + 1], centres equally spaced on the mel scale, peak 1.

    A filter narrower than the FFT's bin spacing (small n_fft) would be empty: each filter keeps at least its
    nearest bin, so no mel band is constantly zero.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))),
                                     n_mels + 2, dtype=torch.float64))
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lo) / (centre - lo)
    falling = (hi - bins[None]) / (hi - centre)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    nearest = (bins[None] - centre).abs().argmin(dim=1)
    fb[torch.arange(n_mels), nearest] = torch.clamp(fb[torch.arange(n_mels), nearest], min=1.0)
    return fb.float()


class MelSpectrogram(nn.Module):
    """wav [B, 1, T] -> magnitude mel spectrogram [B, n_mels, frames] (Hann window, hop n_fft // 4)."""

    def __init__(self, n_fft: int, n_mels: int, sample_rate: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, max(1, n_fft // 4)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", mel_filterbank(n_fft, n_mels, sample_rate), persistent=False)

    def forward(self, wav: Tensor) -> Tensor:
        x = wav.reshape(-1, wav.shape[-1]).float()
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window.to(x.device), center=True, pad_mode="constant",
                          return_complex=True).abs()
        return self.filters.to(x.device) @ spec


@dataclass
class MelLossConfig:
    """Multi-scale mel: one STFT per window size; each scale compares log mel magnitudes (L1)."""

    n_ffts: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    n_mels: int = 64  # at most n_fft // 4 per scale (small windows cannot resolve more bands)
    floor: float = 1e-5  # log(max(mel, floor)): silence does not dominate the loss
    # + linear x mean |mel(x) - mel(y)| / mean mel(y) per scale: the loud parts (speech's formants and harmonics)
    # weigh as their magnitude, where the log term weighs every band alike, empty ones too. 0: off.
    linear: float = 0.0


class MultiScaleMelLoss(nn.Module):
    """mean over scales of mean |log mel(x) - log mel(y)| (x the reconstruction, y the target), 0 iff equal mels;
    with `cfg.linear`, plus that weight times the L1 of the magnitudes relative to the target's mean magnitude.

    Why: the log mel weighs the bands as hearing does, and several window sizes trade time for frequency
    resolution, so neither transients nor pitch are blurred. It is the loss that gets a codec working early.
    """

    def __init__(self, sample_rate: int, cfg: MelLossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MelLossConfig()
        self.scales = nn.ModuleList(MelSpectrogram(n, min(self.cfg.n_mels, max(4, n // 4)), sample_rate)
                                    for n in self.cfg.n_ffts)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape:
            raise ValueError(f"mel loss: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
        total = x.new_zeros((), dtype=torch.float32)
        for mel in self.scales:
            ax, ay = mel(x), mel(y)
            total = total + (ax.clamp_min(self.cfg.floor).log() - ay.clamp_min(self.cfg.floor).log()).abs().mean()
            if self.cfg.linear > 0:
                total = total + self.cfg.linear * (ax - ay).abs().mean() / ay.mean().clamp_min(self.cfg.floor)
        return total / len(self.scales)


def waveform_l1(x: Tensor, y: Tensor) -> Tensor:
    """mean |x - y| on the samples: a direct (phase-aware) reconstruction term, off by default."""
    return (x.float() - y.float()).abs().mean()


def hinge_discriminator_loss(real: Sequence[Tensor], fake: Sequence[Tensor]) -> Tensor:
    """mean over sub-discriminators of mean(relu(1 - D(x))) + mean(relu(1 + D(G(z)))).

    Real logits are pushed above 1 and fake ones below -1; beyond the margin a sample gives no gradient, which
    keeps the discriminator from overfitting on easy samples.
    """
    if len(real) != len(fake) or not real:
        raise ValueError(f"need as many real as fake outputs (got {len(real)} and {len(fake)})")
    total = sum(F.relu(1 - r.float()).mean() + F.relu(1 + f.float()).mean() for r, f in zip(real, fake, strict=True))
    return total / len(real)


def hinge_generator_loss(fake: Sequence[Tensor]) -> Tensor:
    """mean over sub-discriminators of mean(relu(1 - D(G(z)))): the generator pushes its logits up to 1."""
    if not fake:
        raise ValueError("no discriminator outputs")
    return sum(F.relu(1 - f.float()).mean() for f in fake) / len(fake)


def feature_matching_loss(real: Sequence[Sequence[Tensor]], fake: Sequence[Sequence[Tensor]],
                          eps: float = 1e-8) -> Tensor:
    """mean over every (sub-discriminator, layer) of mean |f_fake - f_real| / mean |f_real| (real detached).

    The relative L1 makes each layer count alike whatever its scale; the discriminator's features give a learned,
    perceptual distance that is smoother than the adversarial loss alone.
    """
    terms = []
    if len(real) != len(fake):
        raise ValueError(f"feature lists differ in length: {len(real)} vs {len(fake)}")
    for rs, fs in zip(real, fake, strict=True):
        if len(rs) != len(fs):
            raise ValueError(f"feature maps per sub-discriminator differ: {len(rs)} vs {len(fs)}")
        for r, f in zip(rs, fs, strict=True):
            r = r.detach().float()
            terms.append((f.float() - r).abs().mean() / (r.abs().mean() + eps))
    if not terms:
        raise ValueError("no feature maps")
    return torch.stack(terms).mean()


def pool_to_frames(features: Tensor, num_frames: int) -> Tensor:
    """Teacher features [B, F_t, C] -> [B, num_frames, C]: averaged (non-causally) over equal spans of time.

    Whisper's 50 Hz frames become Mimi's 12.5 Hz by averaging 4 at a time; a shorter teacher sequence is
    repeated (nearest) instead.
    """
    x = features.transpose(1, 2).float()
    if x.shape[-1] >= num_frames:
        x = F.adaptive_avg_pool1d(x, num_frames)
    else:
        x = F.interpolate(x, size=num_frames, mode="nearest")
    return x.transpose(1, 2)


class SemanticDistillation(nn.Module):
    """Cosine distillation of the first VQ level's output [B, D, F] to teacher features [B, F_t, C].

    A 1x1 projection D -> C (trained with the codec, not exported), then 1 - cos per frame, averaged. Why: the
    first codebook then carries what the teacher encodes (phonetic content, speaker-invariant), which is what the
    language model needs from it; the acoustic levels keep the rest.
    """

    def __init__(self, codec_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(codec_dim, teacher_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=1 / math.sqrt(codec_dim))

    def forward(self, semantic: Tensor, teacher: Tensor) -> Tensor:
        if teacher.dim() != 3 or teacher.shape[-1] != self.proj.out_features:
            raise ValueError(f"teacher features must be [B, F_t, {self.proj.out_features}], got {tuple(teacher.shape)}")
        student = self.proj(semantic.transpose(1, 2))  # [B, F, C]
        target = pool_to_frames(teacher.to(student.device), student.shape[1])
        return (1 - F.cosine_similarity(student.float(), target, dim=-1)).mean()


@torch.no_grad()
def codebook_perplexity(codes: Tensor, codebook_size: int) -> Tensor:
    """Per level, exp(entropy) of the codes' histogram over the batch: codes [B, K, F] -> [K].

    1 = every frame gets the same entry; codebook_size = all entries equally used.
    """
    k = codes.shape[1]
    flat = codes.transpose(0, 1).reshape(k, -1)
    counts = torch.zeros(k, codebook_size, device=codes.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float32))
    p = counts / counts.sum(-1, keepdim=True)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
    return entropy.exp()
