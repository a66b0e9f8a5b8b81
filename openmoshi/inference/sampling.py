"""Token sampling for batched logits [B, V]: greedy, temperature, top-k, top-p, without host syncs.

A draw is softmax(logits / temperature) restricted to the top-k (then top-p) candidates, sampled exactly by the
Gumbel-max trick: the argmax of logits / temperature + Gumbel noise (no device-to-host sync).

Two forms:
- `sample(logits, cfg, generator)`: one `SamplingConfig` for the whole batch, noise from a `torch.Generator`.
- `sample_rows(logits, settings, keys)`: per-row settings (`RowSampling`) and a counter-based random stream per
  row: the noise of token v is a hash of (row seed, row step counter, stream index, v) computed with int64
  tensor ops (SplitMix64's mixer; keys = `draw_keys(seed_key(seed), counter, streams)`). A row's draw therefore
  depends only on its own logits, settings, seed and counter, never on the other rows of the batch nor on the
  order of calls; there is no generator state to carry, and a snapshot of a conversation is just its seed and
  counter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingConfig:
    """How one stream is sampled.

    `greedy` (or temperature 0) takes the argmax; top_k 0 / top_p 0 disable them.
    """

    temperature: float = 0.8
    top_k: int = 250
    top_p: float = 0.0
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0.0

    @classmethod
    def audio_default(cls) -> SamplingConfig:
        return cls(temperature=0.8, top_k=250)

    @classmethod
    def text_default(cls) -> SamplingConfig:
        return cls(temperature=0.7, top_k=25)


def sample(
    logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one token per row: logits [B, V] -> [B] long (on the logits' device)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got shape {list(logits.shape)}")
    if cfg.is_greedy:
        return logits.argmax(dim=-1)
    scaled = logits.float() / cfg.temperature
    indices = None
    if 0 < cfg.top_k < scaled.shape[-1]:
        scaled, indices = scaled.topk(cfg.top_k, dim=-1)  # sorted, descending
    probs = torch.softmax(scaled, dim=-1)
    if cfg.top_p > 0.0:
        if indices is None:
            probs, indices = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first candidate always stays).
        before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(before > cfg.top_p, 0.0)
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    choice = (probs / noise).argmax(dim=-1)
    if indices is None:
        return choice
    return indices.gather(-1, choice[:, None])[:, 0]


# ---- counter-based random numbers ------------------------------------------------------------------------
# SplitMix64's constants as signed int64 (tensor arithmetic wraps modulo 2^64).
_GOLDEN = -7046029254386353131  # 0x9e3779b97f4a7c15
_MIX1 = -4658895280553007687  # 0xbf58476d1ce4e5b9
_MIX2 = -7723592293110705685  # 0x94d049bb133111eb


def _shr(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic: clear the sign-extended bits)."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser: a bijective 64-bit hash with full avalanche."""
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


def _signed(value: int) -> int:
    """The int64 with the same low 64 bits as `value`."""
    value %= 1 << 64
    return value - (1 << 64) if value >= 1 << 63 else value


def seed_key(seed: int) -> int:
    """A row's seed, hashed on the host (SplitMix64) into the int64 its random stream starts from."""
    x = (seed + 0x9E3779B97F4A7C15) % (1 << 64)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % (1 << 64)
    return _signed(x ^ (x >> 31))


def _stream_term(stream: int) -> int:
    return _signed((stream + 1) * 0x2545F4914F6CDD1D)


_TERMS: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}


def draw_keys(seed_keys: torch.Tensor, counters: torch.Tensor, streams: Sequence[int] | range) -> torch.Tensor:
    """The keys of a step's draws: seed_keys (`seed_key` of each row's seed), counters (each row's step) [N]
    int64 -> [N, len(streams)] int64, one key per row and stream (the draws of one step: text, codebooks).

    Every bit of a key depends on every bit of (seed, counter, stream): all the mixing is done here, once per
    step on [N]-sized tensors, so that a draw adds only a few ops per candidate token."""
    key = (tuple(streams), seed_keys.device)
    terms = _TERMS.get(key)
    if terms is None:  # made once: a per-step host-to-device copy would not fit a captured (CUDA graph) step
        terms = _TERMS[key] = torch.tensor([_stream_term(s) for s in key[0]], dtype=torch.long, device=key[1])
    step = _mix(seed_keys + counters * _GOLDEN)
    return _mix(step[:, None] + terms) * _MIX1


_ID_STEP = _signed(_GOLDEN * _MIX1)  # consecutive token ids step by this (odd) after the multiply


def _element_bits(keys: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """64 hashed bits per (row, token): keys [N] (from `draw_keys`), index [N, M] or [M] -> [N, M] int64.

    A Weyl sequence over token ids offset by the row's key, then a xorshift-multiply round whose high bits are
    used (`bits_to_uniform`). The shift is arithmetic (one op fewer than a logical one): x and ~x then give the
    same bits, a collision between two tokens of one draw only if their ids sum to one 64-bit value."""
    x = torch.add(keys[:, None], index, alpha=_ID_STEP)
    return (x ^ (x >> 32)) * _MIX2


_HALF_STEP: dict[torch.device, torch.Tensor] = {}


def bits_to_uniform(bits: torch.Tensor) -> torch.Tensor:
    """int64 bits -> float32 in (0, 1) from the top 23 bits: (k + 0.5) / 2^23, k in [0, 2^23).

    23, not 24: (k + 0.5) must be exact in float32's 24-bit mantissa, so that no value rounds to 1.0 (whose
    Gumbel noise would be infinite); the largest, 1 - 2^-24, is the float just below 1."""
    offset = _HALF_STEP.get(bits.device)
    if offset is None:
        offset = _HALF_STEP[bits.device] = torch.tensor((2**22 + 0.5) / 2**23, device=bits.device)
    return torch.add(offset, bits >> 41, alpha=1.0 / 2**23)  # arithmetic shift: k - 2^22 in [-2^22, 2^22)


def uniform_noise(keys: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Uniform numbers in (0, 1), a pure function of (row key, index).

    keys [N] int64 (a column of `draw_keys`); index [N, M] or [M] int64 -> [N, M] float32 (23 random bits).
    """
    return bits_to_uniform(_element_bits(keys, index))


# ---- per-row settings -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """Host-side shape of a batched draw (fixed while the rows' settings do not change), with the device
    tensors it needs."""

    all_greedy: bool
    any_greedy: bool
    candidates: int  # tokens kept by the top-k pass (sorted); 0: no top-k pass (no row needs one)
    any_top_p: bool
    drop: torch.Tensor | None  # [N, candidates] bool: ranks past the row's top-k (None: nothing to drop)
    has_top_p: torch.Tensor | None  # [N, 1] bool: rows with top-p


class RowSampling:
    """Sampling settings of one kind of stream (text or audio) per row, as [B] device tensors.

    Settings are changed on the host (`set`), so which passes a draw needs is known without reading the device.
    """

    def __init__(self, batch_size: int, default: SamplingConfig, device: torch.device | str) -> None:
        self.configs = [default] * batch_size
        self.temperature = torch.ones(batch_size, dtype=torch.float32, device=device)
        self.top_k = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.top_p = torch.zeros(batch_size, dtype=torch.float32, device=device)
        self.greedy = torch.zeros(batch_size, dtype=torch.bool, device=device)
        self._plans: dict[int, _Plan] = {}
        self.set(range(batch_size), default)

    def set(self, rows: Sequence[int] | range, cfg: SamplingConfig) -> None:
        rows = list(rows)
        if not rows:
            return
        for r in rows:
            self.configs[r] = cfg
        index = torch.tensor(rows, dtype=torch.long, device=self.temperature.device)
        self.temperature[index] = cfg.temperature if not cfg.is_greedy else 1.0
        self.top_k[index] = cfg.top_k
        self.top_p[index] = cfg.top_p
        self.greedy[index] = cfg.is_greedy
        self._plans.clear()

    def take(self, rows: Sequence[int]) -> RowSampling:
        """The settings of `rows` only (a new RowSampling of len(rows) rows)."""
        out = RowSampling.__new__(RowSampling)
        out.configs = [self.configs[r] for r in rows]
        index = torch.tensor(list(rows), dtype=torch.long, device=self.temperature.device)
        out.temperature, out.top_k = self.temperature[index], self.top_k[index]
        out.top_p, out.greedy = self.top_p[index], self.greedy[index]
        out._plans = {}
        return out

    def plan(self, vocab: int) -> _Plan:
        if vocab not in self._plans:
            sampled = [c for c in self.configs if not c.is_greedy]
            limited = [c.top_k for c in sampled if 0 < c.top_k < vocab]
            any_top_p = any(c.top_p > 0.0 for c in sampled)
            if len(limited) == len(sampled) and sampled:
                candidates = max(limited)  # every sampled row has a top-k: keep the largest
            elif limited or any_top_p:
                candidates = vocab  # a full sort: some rows need ranks over the whole vocabulary
            else:
                candidates = 0
            drop = has_top_p = None
            if candidates and any(0 < c.top_k < candidates for c in sampled):
                rank = torch.arange(candidates, device=self.top_k.device)
                drop = rank[None, :] >= torch.where(self.top_k > 0, self.top_k, candidates)[:, None]
            if any_top_p:
                has_top_p = (self.top_p > 0)[:, None]
            self._plans[vocab] = _Plan(not sampled, len(sampled) < len(self.configs), candidates, any_top_p,
                                       drop, has_top_p)
        return self._plans[vocab]


def sample_rows(logits: torch.Tensor, settings: RowSampling, keys: torch.Tensor) -> torch.Tensor:
    """Draw one token per row with the row's own settings: logits [N, V] -> [N] long.

    keys [N] int64 (a column of `draw_keys`: the rows' seeds and step counters, and which draw of the step
    this is) select the noise. The noise of a token is keyed by its id, and a row's extra
    candidates (a larger top-k of another row) get probability 0, so a row's token does not depend on the
    other rows.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {list(logits.shape)}")
    V = logits.shape[1]
    plan = settings.plan(V)
    if plan.all_greedy:
        return logits.argmax(dim=-1)
    x = logits.float() / settings.temperature[:, None]
    ids = None
    if plan.candidates:
        x, ids = x.topk(plan.candidates, dim=-1)  # sorted, descending
        if plan.drop is not None:
            x = x.masked_fill(plan.drop, float("-inf"))
        if plan.any_top_p:
            probs = torch.softmax(x, dim=-1)
            before = probs.cumsum(dim=-1) - probs  # keep the smallest prefix reaching top_p (the first stays)
            x = x.masked_fill((before > settings.top_p[:, None]) & plan.has_top_p, float("-inf"))
    index = ids if ids is not None else torch.arange(V, device=x.device)
    # Gumbel-max: argmax(x + g), g = -log(-log(u)).
    choice = (x - torch.log(-torch.log(uniform_noise(keys, index)))).argmax(dim=-1)
    token = choice if ids is None else ids.gather(-1, choice[:, None])[:, 0]
    return torch.where(settings.greedy, logits.argmax(dim=-1), token) if plan.any_greedy else token
