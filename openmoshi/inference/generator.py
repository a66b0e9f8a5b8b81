"""The streaming generator: one 80 ms step of Moshi's language model for a batch of conversations.

Per conversation (row) a ring of max_delay + 2 token slots per stream holds the delayed token grid:
- at step t the user's code for stream k is written at slot t + delay_k, and the model reads slot t, where
  stream k reads its initial token while t <= delay_k (so the user's first frame has no effect at all);
- text is sampled from the temporal transformer, then the depth transformer samples codebooks 0..dep_q-1
  (each fed the previous one); they are written at slot t + 1;
- the step returns nothing while t < max_delay, then the undelayed frame: the text token and the dep_q audio
  tokens of one frame (for moshiko: text and semantic sampled at step t - 1, acoustic sampled at step t).
Slots not generated yet hold -2 and are never fed to the model.

Rows are independent: `reset(mask)` restarts the given rows (their outputs are -2 until they have run
max_delay + 1 steps again), and a step may leave some rows untouched (`active`). Caches are allocated once;
a step makes no host syncs; past the context window the temporal KV cache is a ring, so memory stays flat.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..lm.config import UNGENERATED_TOKEN_ID as UNGENERATED  # the one home of the token ids
from ..lm.model import LMModel
from ..nn.streaming import reset_streaming, set_exec_mask, streaming
from .sampling import SamplingConfig, sample


@dataclass
class StepOutput:
    """One frame per row: text [B] long and audio [B, dep_q] long (-2 on rows with nothing to output yet)."""

    text: torch.Tensor
    audio: torch.Tensor


class LMGenerator:
    """Streaming generation with `model` for `batch_size` conversations.

    Use as a context manager (or call `close()`): it holds the model's streaming state. One model can serve
    one generator at a time. Sampling: `text_sampling` (default temperature 0.7, top-k 25) and
    `audio_sampling` (0.8, 250); `seed` makes the draws reproducible (None: a random seed).
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
        self.rng = torch.Generator(device=device)
        if seed is None:
            self.rng.seed()
        else:
            self.rng.manual_seed(seed)
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(streaming(model.transformer, batch_size))
        self.depth_cache = model.depformer.new_cache(batch_size)
        K, self.max_delay = cfg.num_streams, cfg.max_delay
        self.ring = self.max_delay + 2
        self.cache = torch.full((batch_size, K, self.ring), UNGENERATED, dtype=torch.long, device=device)
        self.offsets = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.delays = torch.tensor(cfg.delays, dtype=torch.long, device=device)
        self.initial = model.initial_tokens()
        self.steps = 0  # host-side steps since the start or the last full reset
        self._masked = False
        self.last_sampled: tuple[torch.Tensor, torch.Tensor] | None = None  # (text [B], audio [B, dep_q])

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> LMGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Restart the conversations of the rows where `mask` [B] is True (all rows when None)."""
        if mask is None:
            mask = torch.ones(self.batch_size, dtype=torch.bool, device=self.offsets.device)
            self.steps = 0
        mask = mask.to(device=self.offsets.device, dtype=torch.bool)
        if mask.shape != (self.batch_size,):
            raise ValueError(f"reset mask must have shape [{self.batch_size}], got {list(mask.shape)}")
        reset_streaming(self.model.transformer, mask)
        self.offsets.masked_fill_(mask, 0)
        self.cache.masked_fill_(mask[:, None, None], UNGENERATED)

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

        h, text_logits = self.model.forward_temporal(tokens)
        text = sample(text_logits[:, 0], self.text_sampling, self.rng)
        audio = self.model.depformer.generate(h[:, 0], text, self._sample_audio, self.depth_cache)
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

    def _sample_audio(self, logits: torch.Tensor) -> torch.Tensor:
        return sample(logits, self.audio_sampling, self.rng)

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
