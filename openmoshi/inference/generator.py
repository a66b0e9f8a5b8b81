"""The streaming generator: one 80 ms step of Moshi's language model for a batch of conversations.

Per conversation (row) a ring of max_delay + 2 token slots per stream holds the delayed token grid:
- at step t the user's code for stream k is written at slot t + delay_k, and the model reads slot t, where
  stream k reads its initial token while t <= delay_k (so the user's first frame has no effect at all);
- text is sampled from the temporal transformer, then the depth transformer samples codebooks 0..dep_q-1
  (each fed the previous one); they are written at slot t + 1;
- the step returns nothing while t < max_delay, then the undelayed frame: the text token and the dep_q audio
  tokens of one frame (for moshiko: text and semantic sampled at step t - 1, acoustic sampled at step t).
Slots not generated yet hold -2 and are never fed to the model.

Rows are independent conversations, each with its own sampling settings and random stream (`sample_rows`:
noise keyed by the row's seed and its step counter, the row's offset), so a conversation's tokens do not depend
on the other rows. `reset(mask)` restarts rows (same settings and seeds); `start(rows, ...)` restarts rows with
new settings and seeds and runs their first step at once. A conversation's first step reads only initial tokens
at position 0, so its temporal-transformer outputs are the same for every conversation: they are computed once
(at construction) and `start` writes them into the rows' state (a `StatePatch`), then runs only the depth
transformer on those rows; no step of the whole batch is spent on a joining row. A step may leave some rows
untouched (`active`). `get_state(row)` / `set_state(row, snap)` copy one conversation out and back (any row).
Caches are allocated once; a step makes no host syncs; past the context window the temporal KV cache is a
ring, so memory stays flat.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..lm.config import UNGENERATED_TOKEN_ID as UNGENERATED  # the one home of the token ids
from ..lm.model import LMModel
from ..nn import streaming as st
from ..nn.streaming import StatePatch, StreamingSnapshot, reset_streaming, set_exec_mask, streaming
from .sampling import RowSampling, SamplingConfig, draw_keys, sample_rows, seed_key

TEXT_STREAM = 0  # noise stream of the text token; audio codebook k uses 1 + k


@dataclass
class StepOutput:
    """One frame per row: text [B] long and audio [B, dep_q] long (-2 on rows with nothing to output yet)."""

    text: torch.Tensor
    audio: torch.Tensor


@dataclass(frozen=True)
class RowSettings:
    """A row's sampling settings and seeds (text and audio streams apart)."""

    text: SamplingConfig
    audio: SamplingConfig
    text_seed: int
    audio_seed: int


@dataclass
class GeneratorSnapshot:
    """One conversation of an LMGenerator: temporal KV state, token ring [K, ring], offset [] (its step counter,
    which also drives its random stream), settings and seeds. Restore with `LMGenerator.set_state`."""

    transformer: StreamingSnapshot
    tokens: torch.Tensor
    offset: torch.Tensor
    settings: RowSettings
    steps: int  # the source generator's host-side step count (a bound on the offset)

    def to(self, device: torch.device | str) -> GeneratorSnapshot:
        """A copy on `device` (e.g. "cpu" to park a conversation off the accelerator)."""
        return GeneratorSnapshot(self.transformer.to(device), self.tokens.to(device), self.offset.to(device),
                                 self.settings, self.steps)


class LMGenerator:
    """Streaming generation with `model` for `batch_size` conversations.

    Use as a context manager (or call `close()`): it holds the model's streaming state. One model can serve
    one generator at a time. Sampling: `text_sampling` (default temperature 0.7, top-k 25) and
    `audio_sampling` (0.8, 250) are every row's defaults. Row r starts with seed + r (None: a random base);
    rows (re)started without a seed take the next of the sequence seed, seed + 1, ..., so a one-row
    generator's (or session's) conversation has `seed` itself. `set_row_sampling` / `start` change a row's.
    """

    def __init__(
        self,
        model: LMModel,
        batch_size: int = 1,
        text_sampling: SamplingConfig | None = None,
        audio_sampling: SamplingConfig | None = None,
        seed: int | None = None,
    ) -> None:
        cfg = model.cfg
        self.model, self.cfg, self.batch_size = model, cfg, batch_size
        self.text_sampling = text_sampling or SamplingConfig.text_default()
        self.audio_sampling = audio_sampling or SamplingConfig.audio_default()
        device = model.device
        self._next_seed = seed if seed is not None else random.SystemRandom().getrandbits(63)
        self.text_rows = RowSampling(batch_size, self.text_sampling, device)
        self.audio_rows = RowSampling(batch_size, self.audio_sampling, device)
        self.text_keys = torch.zeros(batch_size, dtype=torch.long, device=device)  # seed_key of each row's seeds
        self.audio_keys = torch.zeros(batch_size, dtype=torch.long, device=device)
        self._seeds: list[tuple[int, int]] = [(0, 0)] * batch_size
        for r in range(batch_size):
            self.set_row_sampling(r, seed=self._next_seed + r)  # the sequence itself still starts at `seed`
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(streaming(model.transformer, batch_size))
        self.depth_cache = model.depformer.new_cache(batch_size)
        K, self.max_delay = cfg.num_streams, cfg.max_delay
        self.ring = self.max_delay + 2
        self.cache = torch.full((batch_size, K, self.ring), UNGENERATED, dtype=torch.long, device=device)
        self.offsets = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.delays = torch.tensor(cfg.delays, dtype=torch.long, device=device)
        self.initial = model.initial_tokens()
        try:
            self._first_h, self._first_text_logits, self._first_patch = self._first_step()
        except BaseException:
            self._stack.close()
            raise
        self.steps = 0  # host-side bound on every row's offset (steps since the start or the last full reset)
        self._masked = False
        self.last_sampled: tuple[torch.Tensor, torch.Tensor] | None = None  # (text [B], audio [B, dep_q])
        self._core = self.sample_step  # or its compiled version (`compile`)

    @torch.no_grad()
    def _first_step(self) -> tuple[torch.Tensor, torch.Tensor, StatePatch]:
        """The temporal transformer's first step of any conversation: h [D], text logits [text_card] and the
        state it leaves (a patch), found by running it from state filled with 0s and with 1s."""
        B, K = self.batch_size, self.cfg.num_streams
        tokens = self.initial.view(1, K, 1).expand(B, K, 1)
        runs = []
        for fill in (0, 1):
            st.fill_state(self.model.transformer, fill)
            reset_streaming(self.model.transformer)
            h, logits = self.model.forward_temporal(tokens)
            runs.append((st.get_state(self.model.transformer, [0]), h[0, 0].clone(), logits[0, 0].clone()))
        (state_a, h, logits), (state_b, h_b, logits_b) = runs
        if not (torch.equal(h, h_b) and torch.equal(logits, logits_b)):
            raise RuntimeError("the first temporal step depends on stale streaming state")
        reset_streaming(self.model.transformer)
        return h, logits, StatePatch.between(state_a, state_b, 0, 1)

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> LMGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, rows: int | Sequence[int]) -> list[int]:
        rows = [rows] if isinstance(rows, int) else list(rows)
        for r in rows:
            if not 0 <= r < self.batch_size:
                raise IndexError(f"row {r} out of range for a batch of {self.batch_size}")
        return rows

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Restart the conversations of the rows where `mask` [B] is True (all rows when None).

        The rows keep their sampling settings and seeds (a restarted row replays the same random stream).
        """
        if mask is None:
            mask = torch.ones(self.batch_size, dtype=torch.bool, device=self.offsets.device)
            self.steps = 0
        mask = mask.to(device=self.offsets.device, dtype=torch.bool)
        if mask.shape != (self.batch_size,):
            raise ValueError(f"reset mask must have shape [{self.batch_size}], got {list(mask.shape)}")
        reset_streaming(self.model.transformer, mask)
        self.offsets.masked_fill_(mask, 0)
        self.cache.masked_fill_(mask[:, None, None], UNGENERATED)

    def set_row_sampling(
        self,
        rows: int | Sequence[int],
        text: SamplingConfig | None = None,
        audio: SamplingConfig | None = None,
        seed: int | None = None,
        audio_seed: int | None = None,
    ) -> None:
        """Sampling of `rows` from their next draw: None settings are the generator's defaults; `seed` seeds the
        text stream and, unless `audio_seed` is given, the audio streams (None: the next seed of the
        generator's sequence: one per row). Seeds are any int (taken modulo 2^64)."""
        rows = self._rows(rows)
        self.text_rows.set(rows, text or self.text_sampling)
        self.audio_rows.set(rows, audio or self.audio_sampling)
        for r in rows:
            s = seed
            if s is None:
                s, self._next_seed = self._next_seed, self._next_seed + 1
            a = audio_seed if audio_seed is not None else s
            self._seeds[r] = (s, a)
        index = torch.tensor(rows, dtype=torch.long, device=self.text_keys.device)
        self.text_keys[index] = torch.tensor([seed_key(self._seeds[r][0]) for r in rows], device=index.device)
        self.audio_keys[index] = torch.tensor([seed_key(self._seeds[r][1]) for r in rows], device=index.device)

    def row_settings(self, row: int) -> RowSettings:
        """The sampling settings and seeds of `row` (host-side, no device read)."""
        (row,) = self._rows(row)
        return RowSettings(self.text_rows.configs[row], self.audio_rows.configs[row], *self._seeds[row])

    @torch.no_grad()
    def start(
        self,
        rows: int | Sequence[int],
        text: SamplingConfig | None = None,
        audio: SamplingConfig | None = None,
        seed: int | None = None,
        audio_seed: int | None = None,
    ) -> StepOutput:
        """Start new conversations in `rows` and run their first step now, at the cost of a depth-transformer
        pass on those rows only (the other rows are not touched). Equivalent to `reset` on those rows, then
        `set_row_sampling`, then a `step` active on those rows only (whose user codes are never read).
        Returns that step's output (-2 everywhere unless max_delay is 0)."""
        rows = self._rows(rows)
        B, dq = self.batch_size, self.cfg.dep_q
        out_text = torch.full((B,), UNGENERATED, dtype=torch.long, device=self.offsets.device)
        out_audio = torch.full((B, dq), UNGENERATED, dtype=torch.long, device=self.offsets.device)
        if not rows:
            return StepOutput(out_text, out_audio)
        self.set_row_sampling(rows, text, audio, seed, audio_seed)
        index = torch.tensor(rows, dtype=torch.long, device=self.offsets.device)
        mask = torch.zeros(B, dtype=torch.bool, device=index.device).index_fill_(0, index, True)
        self.reset(mask)
        self._first_patch.apply(self.model.transformer, index)
        n = len(rows)
        zeros = torch.zeros(n, dtype=torch.long, device=index.device)
        text_rows, audio_rows = self.text_rows.take(rows), self.audio_rows.take(rows)
        logits = self._first_text_logits[None].expand(n, -1)
        text_keys, audio_keys = self._draw_keys(self.text_keys[index], self.audio_keys[index], zeros)
        text = sample_rows(logits, text_rows, text_keys)
        sampler = _AudioSampler(audio_rows, audio_keys)
        audio = self.model.depformer.generate(self._first_h[None].expand(n, -1), text, sampler,
                                              self.model.depformer.new_cache(n))
        self.offsets[index] = 1
        self.cache[index, : dq + 1, 1] = torch.cat([text[:, None], audio], dim=1)
        self.steps = max(self.steps, 1)
        if self.max_delay == 0:
            out_text[index], out_audio[index] = text, audio
        return StepOutput(out_text, out_audio)

    # ---- one step ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, user_codes: torch.Tensor | None = None, active: torch.Tensor | None = None) -> StepOutput | None:
        """Advance every row by one frame.

        user_codes [B, n_q - dep_q] long: the user's codebooks for this frame (None when dep_q == n_q).
        active [B] bool (optional): rows where it is False are left untouched by this step (output -2).
        Returns None while fewer than max_delay + 1 steps have run since the start / full reset.
        """
        cfg, B, dq = self.cfg, self.batch_size, self.cfg.dep_q
        n_user = cfg.num_user_codebooks
        if n_user:
            if user_codes is None or tuple(user_codes.shape) != (B, n_user):
                got = None if user_codes is None else list(user_codes.shape)
                raise ValueError(f"user_codes must have shape [{B}, {n_user}], got {got}")
        elif user_codes is not None and user_codes.numel():
            raise ValueError("this model generates every audio stream (dep_q == n_q): pass no user_codes")
        active = self._set_active(active)
        cache, offsets, delays = self.cache, self.offsets, self.delays
        if n_user:
            slots = (offsets[:, None] + delays[dq + 1:]) % self.ring  # [B, n_user]
            codes = user_codes.to(device=cache.device, dtype=torch.long)
            if active is not None:
                codes = torch.where(active[:, None], codes, cache[:, dq + 1:].gather(2, slots[..., None])[..., 0])
            cache[:, dq + 1:].scatter_(2, slots[..., None], codes[..., None])
        read = (offsets % self.ring).view(B, 1, 1).expand(B, cfg.num_streams, 1)
        is_init = offsets[:, None] <= delays  # [B, K]
        if active is not None:
            is_init = is_init | ~active[:, None]  # untouched rows read initial tokens: never a -2
        tokens = torch.where(is_init[..., None], self.initial[None, :, None], cache.gather(2, read))

        self.text_rows.plan(cfg.text_card)  # the draws' plans, made on the host (a compiled core only reads them)
        self.audio_rows.plan(cfg.card)
        text, audio = self._core(tokens, offsets)
        self.last_sampled = (text, audio)

        new = torch.cat([text[:, None], audio], dim=1)  # [B, 1 + dep_q]
        if active is None:
            offsets += 1
        else:
            offsets += active.long()
        write = (offsets % self.ring).view(B, 1, 1).expand(B, dq + 1, 1)
        if active is not None:
            new = torch.where(active[:, None], new, cache[:, : dq + 1].gather(2, write)[..., 0])
        cache[:, : dq + 1].scatter_(2, write, new[..., None])
        self.steps += 1
        if self.steps <= self.max_delay:
            return None
        index = (offsets[:, None] - self.max_delay + delays[: dq + 1]) % self.ring
        out = cache[:, : dq + 1].gather(2, index[..., None])[..., 0]
        not_ready = offsets <= self.max_delay
        if active is not None:
            not_ready = not_ready | ~active
        out = out.masked_fill(not_ready[:, None], UNGENERATED)
        return StepOutput(out[:, 0], out[:, 1:])

    def sample_step(self, tokens: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's part of a step: tokens [B, K, 1], offsets [B] (the rows' step counters) -> (text [B],
        audio [B, dep_q]). The temporal step, the text draw, the depth transformer's codebooks and their draws."""
        h, text_logits = self.model.forward_temporal(tokens)
        text_keys, audio_keys = self._draw_keys(self.text_keys, self.audio_keys, offsets)
        text = sample_rows(text_logits[:, 0], self.text_rows, text_keys)
        sampler = _AudioSampler(self.audio_rows, audio_keys)
        return text, self.model.depformer.generate(h[:, 0], text, sampler, self.depth_cache)

    def compile(self, backend: str = "inductor") -> None:
        """Run `sample_step` through torch.compile from now on (see inference/compiled.py); same results.
        The model is switched to static-shape attention. The compilation itself happens at the next step."""
        from ..nn.attention import set_static_shapes
        from .compiled import compile_fn

        set_static_shapes(self.model, True)
        self._core = compile_fn(self.sample_step, backend)

    def _draw_keys(self, text_seed_keys: torch.Tensor, audio_seed_keys: torch.Tensor, counters: torch.Tensor,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys of one step's draws: text [N] (stream 0), audio [N, dep_q] (codebook k: stream 1 + k)."""
        n, dq = counters.shape[0], self.cfg.dep_q
        keys = draw_keys(torch.cat([text_seed_keys, audio_seed_keys]), counters.repeat(2), range(1 + dq))
        return keys[:n, TEXT_STREAM], keys[n:, 1:]

    def _set_active(self, active: torch.Tensor | None) -> torch.Tensor | None:
        if active is None:
            if self._masked:
                set_exec_mask(self.model.transformer, None)
                self._masked = False
            return None
        if active.shape != (self.batch_size,):
            raise ValueError(f"active must have shape [{self.batch_size}], got {list(active.shape)}")
        active = active.to(device=self.offsets.device, dtype=torch.bool)
        set_exec_mask(self.model.transformer, active)
        self._masked = True
        return active

    # ---- snapshots ---------------------------------------------------------------------------------------
    def get_state(self, row: int) -> GeneratorSnapshot:
        """A copy of the conversation in `row` (on the generator's device; `.to(device)` moves it)."""
        (row,) = self._rows(row)
        return GeneratorSnapshot(
            st.get_state(self.model.transformer, [row]), self.cache[row].clone(), self.offsets[row].clone(),
            self.row_settings(row), self.steps,
        )

    def set_state(self, row: int, snapshot: GeneratorSnapshot) -> None:
        """Put the conversation `snapshot` in `row` (any row, of this or another generator of the same model);
        it continues exactly as it would have where it was taken."""
        (row,) = self._rows(row)
        if tuple(snapshot.tokens.shape) != tuple(self.cache.shape[1:]):
            raise ValueError(f"snapshot token ring has shape {list(snapshot.tokens.shape)}, "
                             f"this generator's {list(self.cache.shape[1:])}")
        st.set_state(self.model.transformer, [row], snapshot.transformer)
        self.cache[row] = snapshot.tokens.to(self.cache.device)
        self.offsets[row] = snapshot.offset.to(self.offsets.device)
        s = snapshot.settings
        self.set_row_sampling(row, s.text, s.audio, s.text_seed, s.audio_seed)
        self.steps = max(self.steps, snapshot.steps)


class _AudioSampler:
    """The depth transformer's sample_fn: codebook k (the k-th call) draws with keys [:, k] ([N, dep_q])."""

    def __init__(self, settings: RowSampling, keys: torch.Tensor) -> None:
        self.settings, self.keys, self.calls = settings, keys, 0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return sample_rows(logits, self.settings, self.keys[:, self.calls - 1])
