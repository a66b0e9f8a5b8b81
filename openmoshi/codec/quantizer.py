"""Mimi's quantizer: Euclidean codebooks, residual VQ and the split (semantic + acoustic) RVQ.

Layouts: latents are [B, D, F] (D = 512 for Mimi, F frames at 12.5 Hz); codes are integer [B, K, F].

`forward` is the training pass: the quantized latent with a straight-through gradient (the encoder and the input
projections get the gradient of the output as if quantization were the identity), the codes, and the commitment
loss (mean squared distance between each level's input residual and its chosen entry, entries held fixed). The
codebooks are EMA buffers, not parameters: no gradient reaches them, and by default this pass does not update them.

Training-only behaviours (`SplitResidualVQ.training_options = QuantizerTraining(...)`, active only in `train()`
mode; inference, `encode` and `decode` never see them): EMA codebook updates (each entry moves towards the mean
of the vectors assigned to it) with dead-code replacement (an entry whose usage falls below a share of the
average is reset to a random vector of the batch), and quantizer dropout (a share of the sequences keep a
random number of acoustic levels, so that every prefix of the codes decodes to usable audio).

The split RVQ quantises the same latent twice in parallel: one semantic codebook, and a residual stack of
acoustic codebooks. Each part projects 512 -> 256 with its own 1x1 projection (no bias), takes residuals in the
256-d space, sums its decoded levels and projects back 256 -> 512; the two parts' outputs are summed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class QuantizerConfig:
    """Split RVQ sizes. `num_semantic + num_acoustic` is the most codebooks `encode` can produce."""

    dimension: int = 512  # latent channels in and out
    codebook_dim: int = 256  # projected space where residuals are taken
    codebook_size: int = 2048
    num_semantic: int = 1
    num_acoustic: int = 31
    epsilon: float = 1e-5  # floor of cluster_usage when dividing the EMA sums

    @property
    def num_codebooks(self) -> int:
        return self.num_semantic + self.num_acoustic

    @classmethod
    def mimi(cls) -> QuantizerConfig:
        return cls()

    @classmethod
    def tiny(cls) -> QuantizerConfig:
        return cls(dimension=32, codebook_dim=16, codebook_size=64, num_semantic=1, num_acoustic=7)


@dataclass
class QuantizerTraining:
    """Training-only behaviours of the quantizer (off at inference; see the module doc)."""

    ema_decay: float | None = 0.99  # EMA of the codebook statistics; None: the codebooks stay as they are
    dead_code_ratio: float = 0.1  # an entry is dead when its EMA usage < ratio * the average usage per entry
    init_from_data: bool = True  # a codebook with `_initialized` 0 takes random batch vectors at its first update
    dropout_prob: float = 0.0  # share of sequences that keep a random number (0..all) of acoustic levels

    def __post_init__(self) -> None:
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.dead_code_ratio < 1.0:
            raise ValueError(f"dead_code_ratio must be in [0, 1), got {self.dead_code_ratio}")
        if not 0.0 <= self.dropout_prob <= 1.0:
            raise ValueError(f"dropout_prob must be in [0, 1], got {self.dropout_prob}")


@dataclass
class QuantizerOutput:
    quantized: Tensor  # [B, dimension, F]: decoded codes, with the straight-through gradient to the latent
    codes: Tensor  # [B, K, F] int64
    commitment_loss: Tensor  # scalar: the mean over the K levels of each level's commitment loss
    semantic: Tensor | None = None  # [B, dimension, F]: the semantic (first) level's output alone
    levels: Tensor | None = None  # [B] codebooks each sequence was decoded with (quantizer dropout), None: all K


class EuclideanCodebook(nn.Module):
    """A codebook stored as EMA statistics: entry i = embedding_sum[i] / max(cluster_usage[i], epsilon).

    The division is done once and cached. The cache is keyed on the identity and version counter of both
    buffers, so loading a state dict, moving the module or editing the buffers in place all invalidate it.
    Under torch.compile that key cannot be traced: a compiled step uses the cache as validated by the last eager
    call or by `fill_cache` (Mimi's `prepare_for_inference` fills the levels `encode` uses by default), so
    re-prepare after editing the codebooks; a level without a cache is computed in the compiled step.
    """

    def __init__(self, size: int, dim: int, epsilon: float = 1e-5) -> None:
        super().__init__()
        self.size = size
        self.dim = dim
        self.epsilon = epsilon
        self.register_buffer("embedding_sum", torch.zeros(size, dim))
        self.register_buffer("cluster_usage", torch.ones(size))
        self.register_buffer("_initialized", torch.zeros(1))
        self._cache_key: tuple | None = None
        self._cache: tuple[Tensor, Tensor] | None = None

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random entries ~ N(0, 0.3^2) (usage 1), so that different inputs get different codes.

        0.3: at or below the per-channel scale of a freshly initialised Mimi's projected latent (~0.2-0.8), so the
        nearest entry depends on the input's direction rather than on the entries' norms.
        `_initialized` stays 0: the entries are not fitted to data yet (a trainer may replace them, e.g. k-means).
        """
        self.embedding_sum.normal_(std=0.3)
        self.cluster_usage.fill_(1.0)
        self._initialized.zero_()

    def _key(self) -> tuple:
        s, u = self.embedding_sum, self.cluster_usage
        return (s.data_ptr(), s._version, s.dtype, s.device, u.data_ptr(), u._version)

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[override]
        self._cache_key = self._cache = None
        super()._load_from_state_dict(*args, **kwargs)

    def _compute(self) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            usage = self.cluster_usage.float().clamp(min=self.epsilon)
            codebook = (self.embedding_sum.float() / usage[:, None]).to(self.embedding_sum.dtype)
            norms = codebook.pow(2).sum(-1, keepdim=True)
            augmented = torch.cat([codebook, torch.ones_like(norms), norms], dim=-1)
        return codebook, augmented.t().contiguous()

    def codebook_and_augmented(self) -> tuple[Tensor, Tensor]:
        """The codebook [N, D] and the transposed augmented codebook [D + 2, N] ([c | 1 | |c|^2]^T)."""
        if torch.compiler.is_compiling():  # see the class doc
            return self._cache if self._cache is not None else self._compute()
        key = self._key()
        if self._cache is None or key != self._cache_key:
            self._cache, self._cache_key = self._compute(), key
        return self._cache

    def fill_cache(self) -> None:
        """Compute the cache now (4 MB per Mimi codebook: only for the levels in use)."""
        self.codebook_and_augmented()

    @property
    def codebook(self) -> Tensor:
        return self.codebook_and_augmented()[0]

    def encode(self, x: Tensor) -> Tensor:
        """Nearest entry of each vector: x [N, D] -> integer codes [N] (first index on ties)."""
        _, augmented_t = self.codebook_and_augmented()
        # |x - c| in matmul form, [-2x | |x|^2 | 1] @ [c | 1 | |c|^2]^T: one GEMM. Keeping |x|^2 in the sum and
        # taking the clamped sqrt rounds exactly as torch.cdist does, so near-ties resolve like the reference.
        xn = x.pow(2).sum(-1, keepdim=True)
        dists = torch.cat([x * -2.0, xn, torch.ones_like(xn)], dim=-1) @ augmented_t.to(x.dtype)
        return dists.clamp_min_(0).sqrt_().argmin(dim=-1)

    def decode(self, codes: Tensor) -> Tensor:
        """codes [...] -> vectors [..., D]."""
        return F.embedding(codes, self.codebook)

    @torch.no_grad()
    def ema_update(self, x: Tensor, codes: Tensor, opts: QuantizerTraining) -> int:
        """One training update from the vectors x [N, D] and their codes [N]; returns the number of dead entries
        replaced.

        usage <- decay * usage + (1 - decay) * count, sum <- decay * sum + (1 - decay) * (sum of assigned x), so
        each entry (sum / usage) moves towards the mean of its vectors. Under torch.distributed the counts and
        sums are all-reduced and the replacement vectors broadcast from rank 0, so every rank keeps equal codebooks.
        """
        x = x.float()
        if opts.init_from_data and not bool(self._initialized.item()):
            self.init_from(x)
            return 0
        counts = torch.zeros(self.size, device=x.device).index_add_(0, codes, torch.ones_like(codes, dtype=x.dtype))
        sums = torch.zeros(self.size, self.dim, device=x.device).index_add_(0, codes, x)
        n = torch.tensor(float(x.shape[0]), device=x.device)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:
            for t in (counts, sums, n):
                torch.distributed.all_reduce(t)
        decay = opts.ema_decay if opts.ema_decay is not None else 1.0
        self.cluster_usage.mul_(decay).add_(counts.to(self.cluster_usage.dtype), alpha=1 - decay)
        self.embedding_sum.mul_(decay).add_(sums.to(self.embedding_sum.dtype), alpha=1 - decay)
        # Dead: used far less than the average entry (n / size vectors per entry and step).
        expected = n / self.size
        dead = self.cluster_usage < opts.dead_code_ratio * expected
        num_dead = int(dead.sum())
        if num_dead:
            picks = x[torch.randint(0, x.shape[0], (num_dead,), device=x.device)]
            if distributed:
                torch.distributed.broadcast(picks, src=0)
            # The new entry is the picked vector, with the average usage (so it is not dead again at once).
            self.cluster_usage[dead] = expected.to(self.cluster_usage.dtype)
            self.embedding_sum[dead] = (picks * expected).to(self.embedding_sum.dtype)
        return num_dead

    @torch.no_grad()
    def init_from(self, x: Tensor) -> None:
        """Entries = random vectors of x [N, D] (with replacement when there are fewer vectors than entries)."""
        x = x.float()
        n = x.shape[0]
        idx = torch.randperm(n, device=x.device)[:self.size] if n >= self.size else torch.randint(
            0, n, (self.size,), device=x.device)
        picks = x[idx]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(picks, src=0)
        self.embedding_sum.copy_(picks)
        self.cluster_usage.fill_(1.0)
        self._initialized.fill_(1.0)

    def dead_codes(self, num_vectors: int, ratio: float) -> int:
        """Entries whose EMA usage is below `ratio` * the average for `num_vectors` vectors per step."""
        return int((self.cluster_usage < ratio * num_vectors / self.size).sum())


def _project(weight: Tensor, x: Tensor) -> Tensor:
    """A bias-free 1x1 conv on the last dim: weight [out, in, 1], x [..., in] -> [..., out]."""
    return x @ weight[:, :, 0].to(x.dtype).t()


class ResidualVQ(nn.Module):
    """A stack of codebooks, each quantising what the previous ones left, with 1x1 projections in and out."""

    def __init__(self, num_levels: int, cfg: QuantizerConfig) -> None:
        super().__init__()
        self.input_proj = nn.Parameter(torch.empty(cfg.codebook_dim, cfg.dimension, 1))
        self.output_proj = nn.Parameter(torch.empty(cfg.dimension, cfg.codebook_dim, 1))
        self.codebooks = nn.ModuleList(
            EuclideanCodebook(cfg.codebook_size, cfg.codebook_dim, cfg.epsilon) for _ in range(num_levels)
        )
        if not self.input_proj.is_meta:  # a meta-built model is initialised after `to_empty`, by `init_weights`
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Projections ~ N(0, 1/fan_in) (variance-preserving); codebooks as `EuclideanCodebook.init_weights`."""
        for p in (self.input_proj, self.output_proj):
            p.normal_(std=1 / math.sqrt(p.shape[1]))
        for codebook in self.codebooks:
            codebook.init_weights()

    def forward(self, x: Tensor, num_levels: int, opts: QuantizerTraining | None = None,
                keep: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: x [B, F, dimension] -> (quantized [B, F, dimension], codes [B, L, F], losses [L]).

        `losses[l]` is the commitment loss of level l: mean squared distance between its input residual and the
        chosen entry, whose gradient pulls the residual (so the encoder) towards the entry.
        `opts` (training only): EMA-update each codebook with the residuals it quantised. `keep` [B] (quantizer
        dropout): sequence b sums only its first keep[b] levels (codes and losses still cover all L levels).
        """
        b, f, _ = x.shape
        projected = _project(self.input_proj, x)  # [B, F, codebook_dim]
        residual, total = projected, torch.zeros_like(projected)
        codes, losses = [], []
        for level, codebook in enumerate(self.codebooks[:num_levels]):
            flat = residual.detach().reshape(b * f, -1)
            update = opts is not None and opts.ema_decay is not None
            if update and opts.init_from_data and not bool(codebook._initialized.item()):
                codebook.init_from(flat)  # before the encode: a random codebook's entries would blow the residual up
            idx = codebook.encode(flat)
            entry = codebook.decode(idx).view(b, f, -1).to(residual.dtype)  # no gradient: the codebook is a buffer
            if update:
                codebook.ema_update(flat, idx, opts)  # after the decode: this pass uses the entries it chose
            idx = idx.view(b, f)
            codes.append(idx)
            losses.append(F.mse_loss(residual, entry))
            # Dropout masks only the sum: the codes (and later residuals) are those of the full stack.
            total = total + (entry if keep is None else entry * (level < keep).to(entry.dtype)[:, None, None])
            residual = residual - entry
        # Straight-through: the value of the summed entries, the gradient of the identity.
        quantized = projected + (total - projected).detach()
        return _project(self.output_proj, quantized), torch.stack(codes, dim=1), torch.stack(losses)

    def encode(self, x: Tensor, num_levels: int) -> Tensor:
        """x [B, F, dimension] (channels last) -> codes [B, num_levels, F]."""
        b, f, _ = x.shape
        residual = _project(self.input_proj, x).reshape(b * f, -1)
        codes = []
        for level, codebook in enumerate(self.codebooks[:num_levels]):
            idx = codebook.encode(residual)
            codes.append(idx)
            if level + 1 < num_levels:  # the last residual is never used
                residual = residual - codebook.decode(idx)
        return torch.stack(codes, dim=0).view(num_levels, b, f).transpose(0, 1)

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, L, F] -> [B, F, dimension] (channels last)."""
        total = self.codebooks[0].decode(codes[:, 0])
        for level in range(1, codes.shape[1]):
            total = total + self.codebooks[level].decode(codes[:, level])
        return _project(self.output_proj, total)


class SplitResidualVQ(nn.Module):
    """Mimi's quantizer: `semantic` (first codebook) and `acoustic` (the rest), both fed the same latent."""

    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.semantic = ResidualVQ(cfg.num_semantic, cfg)
        self.acoustic = ResidualVQ(cfg.num_acoustic, cfg)
        self.training_options: QuantizerTraining | None = None  # set by a trainer; used only in train() mode

    def init_weights(self) -> None:
        self.semantic.init_weights()
        self.acoustic.init_weights()

    def forward(self, latent: Tensor, num_codebooks: int | None = None) -> QuantizerOutput:
        """Training pass: latent [B, dimension, F] -> QuantizerOutput with K = num_codebooks (default: all).

        In train() mode with `training_options` set: EMA codebook updates and quantizer dropout (`levels` then
        says how many codebooks each sequence was decoded with).
        """
        k = self.cfg.num_codebooks if num_codebooks is None else num_codebooks
        self._check_k(k)
        x = latent.transpose(1, 2)
        n_sem = self.cfg.num_semantic
        opts = self.training_options if self.training else None
        semantic, codes, losses = self.semantic(x, n_sem, opts)
        quantized, keep = semantic, None
        if k > n_sem:
            if opts is not None and opts.dropout_prob > 0:
                b = latent.shape[0]
                drop = torch.rand(b, device=latent.device) < opts.dropout_prob
                random_levels = torch.randint(0, k - n_sem + 1, (b,), device=latent.device)
                keep = torch.where(drop, random_levels, torch.full_like(random_levels, k - n_sem))
            q_ac, c_ac, l_ac = self.acoustic(x, k - n_sem, opts, keep)
            quantized, codes, losses = quantized + q_ac, torch.cat([codes, c_ac], 1), torch.cat([losses, l_ac])
        levels = None if keep is None else keep + n_sem
        return QuantizerOutput(quantized.transpose(1, 2), codes, losses.mean(), semantic.transpose(1, 2), levels)

    def _check_k(self, k: int) -> None:
        lo, hi = self.cfg.num_semantic, self.cfg.num_codebooks
        if not lo <= k <= hi:
            raise ValueError(f"number of codebooks must be in {lo}..{hi}, got {k}")

    def encode(self, latent: Tensor, num_codebooks: int | None = None) -> Tensor:
        """latent [B, dimension, F] -> codes [B, K, F] (int64), K = num_codebooks (default: all)."""
        k = self.cfg.num_codebooks if num_codebooks is None else num_codebooks
        self._check_k(k)
        x = latent.transpose(1, 2)
        n_sem = self.cfg.num_semantic
        codes = self.semantic.encode(x, n_sem)
        if k > n_sem:
            codes = torch.cat([codes, self.acoustic.encode(x, k - n_sem)], dim=1)
        return codes

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, K, F] -> latent [B, dimension, F]."""
        if codes.dim() != 3:
            raise ValueError(f"codes must be [B, K, F], got shape {tuple(codes.shape)}")
        self._check_k(codes.shape[1])
        if codes.dtype.is_floating_point:
            raise TypeError(f"codes must be integers, got {codes.dtype}")
        n_sem = self.cfg.num_semantic
        out = self.semantic.decode(codes[:, :n_sem])
        if codes.shape[1] > n_sem:
            out = out + self.acoustic.decode(codes[:, n_sem:])
        return out.transpose(1, 2)
