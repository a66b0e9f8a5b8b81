"""The duplex step: every frame (80 ms), encode the user's audio, step the generator, decode Moshi's audio.

`DuplexSession` serves a batch of independent conversations, one per row ("slot"). It does no I/O: callers
(the chat command over a file or a microphone, a server) hand it one frame of user audio per row and get back
one frame of Moshi's audio and text per row, so the same code serves every front end.

Conversations come and go at any step: `join(rows)` starts a new conversation in free or finished slots
(restarting their Mimi and generator state), `leave(rows)` frees slots; the other rows are not disturbed
(their streaming state only moves on the steps where they are active).

The start of a conversation: the generator ignores the input of a conversation's first step (every stream
reads its initial token there), so, as in Kyutai's offline tool, a conversation's first frame is the input of
its second generator step: `join` runs the first step at once (`LMGenerator.start`: a depth-transformer pass on
the joining rows only, no step of the whole batch), and the row's first `step` feeds its first frame. For moshiko
(max_delay 1) Moshi's first frame comes out on the user's first frame. Before a row's generator has produced
anything, its audio is silence and its tokens are -2. Silence from the user is just zero audio (`step(None)`).

Each conversation has its own sampling settings and seeds (`join(rows, text_sampling=..., seed=...)`), and
`get_state(row)` / `set_state(row, snap)` copy a conversation out of its slot and back into any slot (park,
move, snapshot).

Per frame no host syncs: which rows are active, fresh or already producing is known on the host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from ..codec.mimi import Mimi
from ..lm.model import LMModel
from ..nn import streaming as st
from ..nn.streaming import StreamingSnapshot, reset_streaming, set_exec_mask, streaming
from .compiled import log_done, log_start
from .generator import UNGENERATED, GeneratorSnapshot, LMGenerator, StepOutput
from .sampling import SamplingConfig


@dataclass
class FrameOutput:
    """What one session step produced, per row.

    pcm [B, 1, frame_size] float32: Moshi's audio for this frame (zeros where nothing was generated);
    text [B] and audio [B, dep_q] long: the generator's output for this step (-2 where nothing);
    user_codes [B, n_q - dep_q] long: the codes the generator was given (zeros on inactive rows);
    prime: the output of the first generator step (run at `join`) of the rows whose first frame this was
    (None when no row's was): the generator step before this one, which reads no user codes.
    """

    pcm: torch.Tensor
    text: torch.Tensor
    audio: torch.Tensor
    user_codes: torch.Tensor
    prime: StepOutput | None = None


@dataclass
class SessionSnapshot:
    """One conversation of a DuplexSession (see `DuplexSession.get_state`)."""

    mimi: StreamingSnapshot
    generator: GeneratorSnapshot
    gen_steps: int  # generator steps of the conversation so far
    prime: tuple[torch.Tensor, torch.Tensor] | None  # output of the first step, when no frame was stepped yet

    def to(self, device: torch.device | str) -> SessionSnapshot:
        """A copy on `device` (e.g. "cpu" to park a conversation off the accelerator)."""
        prime = None if self.prime is None else (self.prime[0].to(device), self.prime[1].to(device))
        return SessionSnapshot(self.mimi.to(device), self.generator.to(device), self.gen_steps, prime)


def moshi_codebooks(lm: LMModel) -> int:
    """How many of the generated audio streams are Moshi's own (decoded to audio).

    dep_q when the model only generates Moshi's side; with dep_q = n_q (also predicting the user) the first half.
    """
    cfg = lm.cfg
    return cfg.dep_q if cfg.num_user_codebooks else cfg.n_q // 2


class DuplexSession:
    """A batch of `batch_size` duplex conversations over `mimi` and `lm` (both in eval mode, same device).

    Use as a context manager (or call `close()`): it holds both models' streaming state, so a model pair
    serves one session at a time. Rows start inactive unless `start_all` (then every row joins now).
    `compile`: the step's model work runs through torch.compile (`compile_step`, done here; same results).
    """

    def __init__(
        self,
        mimi: Mimi,
        lm: LMModel,
        batch_size: int = 1,
        text_sampling: SamplingConfig | None = None,
        audio_sampling: SamplingConfig | None = None,
        seed: int | None = None,
        start_all: bool = True,
        compile: bool = False,
    ) -> None:
        cfg = lm.cfg
        if mimi.cfg.quantizer.num_codebooks < max(cfg.num_user_codebooks, moshi_codebooks(lm)):
            raise ValueError(
                f"Mimi has {mimi.cfg.quantizer.num_codebooks} codebooks, the LM needs "
                f"{max(cfg.num_user_codebooks, moshi_codebooks(lm))}"
            )
        if mimi.cfg.quantizer.codebook_size != cfg.card:
            raise ValueError(f"Mimi codebooks have {mimi.cfg.quantizer.codebook_size} entries, the LM's card is "
                             f"{cfg.card}")
        self.mimi, self.lm, self.batch_size = mimi, lm, batch_size
        self.device = lm.device
        self.frame_size = mimi.frame_size
        self.n_user = cfg.num_user_codebooks
        self.n_moshi = moshi_codebooks(lm)
        self.max_delay = cfg.max_delay
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(streaming(mimi, batch_size))
        self.generator = self._stack.enter_context(
            LMGenerator(lm, batch_size, text_sampling=text_sampling, audio_sampling=audio_sampling, seed=seed)
        )
        # Host-side bookkeeping: no device reads needed to know who is active, new, or producing audio.
        self._active = [False] * batch_size
        self._fresh = [False] * batch_size  # joined, first frame not stepped yet: `_prime` holds its output
        self._prime = self._empty_step()
        self._gen_steps = [0] * batch_size  # generator steps of each row's current conversation
        self._masks: dict[tuple[bool, ...], torch.Tensor] = {}
        self._mimi_mask: torch.Tensor | None = None  # the exec mask Mimi holds now (None: every row)
        self._zero_codes = torch.zeros(batch_size, self.n_user, dtype=torch.long, device=self.device)
        self._encode_frame: Callable[[torch.Tensor], torch.Tensor] = self._encode_codes
        self._decode_frame: Callable[[torch.Tensor], torch.Tensor] = mimi.decode
        self.compile_seconds: float | None = None  # set by `compile_step`
        if compile:
            try:
                self.compile_step()
            except BaseException:
                self.close()
                raise
        if start_all:
            self.join(range(batch_size))

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> DuplexSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def active_rows(self) -> list[int]:
        return [r for r, a in enumerate(self._active) if a]

    def free_rows(self) -> list[int]:
        return [r for r, a in enumerate(self._active) if not a]

    def _rows(self, rows: Iterable[int] | int) -> list[int]:
        rows = [rows] if isinstance(rows, int) else list(rows)
        for r in rows:
            if not 0 <= r < self.batch_size:
                raise IndexError(f"row {r} out of range for a batch of {self.batch_size}")
        return rows

    def join(
        self,
        rows: Iterable[int] | int,
        text_sampling: SamplingConfig | None = None,
        audio_sampling: SamplingConfig | None = None,
        seed: int | None = None,
        audio_seed: int | None = None,
    ) -> None:
        """Start a new conversation in `rows` (restarting them if they were in one).

        Sampling settings default to the session's; `seed` seeds the text stream and, unless `audio_seed` is
        given, the audio streams (None: the next seed of the session's seed sequence, one per row). The
        conversation's first generator step runs here, on these rows only.
        """
        rows = self._rows(rows)
        if not rows:
            return
        mask = self._mask([r in rows for r in range(self.batch_size)])
        reset_streaming(self.mimi, mask)
        prime = self.generator.start(rows, text_sampling, audio_sampling, seed, audio_seed)
        self._prime.text.copy_(torch.where(mask, prime.text, self._prime.text))
        self._prime.audio.copy_(torch.where(mask[:, None], prime.audio, self._prime.audio))
        for r in rows:
            self._active[r], self._fresh[r], self._gen_steps[r] = True, True, 1

    reset = join  # a reset is a new conversation in the same slot

    def leave(self, rows: Iterable[int] | int) -> None:
        """End the conversations in `rows`; the slots stay untouched until a `join`."""
        for r in self._rows(rows):
            self._active[r], self._fresh[r] = False, False
            self._prime.text[r] = UNGENERATED
            self._prime.audio[r] = UNGENERATED

    def _mask(self, flags: list[bool]) -> torch.Tensor:
        """A cached device bool mask: copied to the device once per distinct pattern."""
        key = tuple(flags)
        if key not in self._masks:
            if len(self._masks) > 64:  # keep the mask Mimi holds: `_set_mimi_mask` compares identities
                self._masks = {k: v for k, v in self._masks.items() if v is self._mimi_mask}
            self._masks[key] = torch.tensor(flags, dtype=torch.bool, device=self.device)
        return self._masks[key]

    # ---- one frame ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, pcm: torch.Tensor | None) -> torch.Tensor:
        """User audio [B, 1, frame_size] (None: silence) -> codes [B, n_q - dep_q] for the active rows."""
        B = self.batch_size
        if pcm is None:
            pcm = torch.zeros(B, 1, self.frame_size, device=self.device)
        if tuple(pcm.shape) != (B, 1, self.frame_size):
            raise ValueError(f"user audio must have shape [{B}, 1, {self.frame_size}], got {list(pcm.shape)}")
        if not self.n_user:
            return self._zero_codes
        return self._encode_frame(pcm.to(self.device))

    def _encode_codes(self, pcm: torch.Tensor) -> torch.Tensor:
        """pcm [B, 1, frame_size] -> codes [B, n_user] (Mimi's streaming encode; compiled by `compile_step`)."""
        return self.mimi.encode(pcm, num_codebooks=self.n_user)[:, :, 0]

    def compile_step(self, backend: str = "inductor") -> float:
        """Compile the step's model work (Mimi's encode and decode of one frame, the generator's model step) for
        this batch size and return the seconds it took; later steps give the same results, faster.

        Compiles now, by running each compiled piece once on the current state and putting the state back (rows
        and their conversations are unchanged). Switches both models to static-shape attention. Idempotent.
        See inference/compiled.py."""
        if self.compile_seconds is not None:
            return self.compile_seconds
        from .compiled import Timer, compile_models

        B = self.batch_size
        log_start(B)
        with Timer() as timer:
            self._encode_frame, self._decode_frame = compile_models(self, backend)
            rows = range(B)
            saved = st.get_state(self.mimi, rows), st.get_state(self.lm.transformer, rows)
            gen = self.generator
            tokens = self.lm.initial_tokens().view(1, -1, 1).expand(B, -1, 1).contiguous()
            with torch.no_grad():
                if self.n_user:
                    self._encode_frame(torch.zeros(B, 1, self.frame_size, device=self.device))
                self.generator.text_rows.plan(self.lm.cfg.text_card)
                self.generator.audio_rows.plan(self.lm.cfg.card)
                gen._core(tokens, gen.offsets.clone())
                self._decode_frame(torch.zeros(B, self.n_moshi, 1, dtype=torch.long, device=self.device))
            st.set_state(self.mimi, rows, saved[0])
            st.set_state(self.lm.transformer, rows, saved[1])
        self.compile_seconds = timer.seconds
        log_done(B, timer.seconds)
        return timer.seconds

    @torch.no_grad()
    def step(self, pcm: torch.Tensor | None = None) -> FrameOutput:
        """One frame for every row: user audio [B, 1, frame_size] (None: silence) -> Moshi's frame.

        Inactive rows are computed (the batch stays rectangular) but their state does not move; their outputs
        are silence and -2.
        """
        B, active = self.batch_size, self._active
        all_active = all(active)
        active_mask = None if all_active else self._mask(active)
        if not any(active):
            return self._idle_output()

        self._set_mimi_mask(active_mask)
        codes = self.encode(pcm)
        if active_mask is not None:
            codes = codes.masked_fill(~active_mask[:, None], 0)

        prime = None
        if any(a and f for a, f in zip(active, self._fresh, strict=True)):
            prime = StepOutput(self._prime.text.clone(), self._prime.audio.clone())
            self._prime.text.fill_(UNGENERATED)
            self._prime.audio.fill_(UNGENERATED)
            self._fresh = [False] * B
        out = self.generator.step(codes if self.n_user else None, active_mask) or self._empty_step()
        for r in range(B):
            if active[r]:
                self._gen_steps[r] += 1

        producing = [a and n > self.max_delay for a, n in zip(active, self._gen_steps, strict=True)]
        pcm_out = torch.zeros(B, 1, self.frame_size, device=self.device)
        if any(producing):
            produce_mask = None if all(producing) else self._mask(producing)
            moshi = out.audio[:, : self.n_moshi]
            if produce_mask is not None:
                # Rows with nothing to decode get code 0 (any valid id) and are left untouched by the decoder.
                moshi = moshi.masked_fill(~produce_mask[:, None], 0)
            self._set_mimi_mask(produce_mask)
            pcm_out = self._decode_frame(moshi[:, :, None]).float()
            if produce_mask is not None:
                pcm_out = pcm_out.masked_fill(~produce_mask[:, None, None], 0.0)
        return FrameOutput(pcm_out, out.text, out.audio, codes, prime)

    def _set_mimi_mask(self, mask: torch.Tensor | None) -> None:
        """Set Mimi's exec mask only when it changes: walking Mimi's modules costs more than a tiny step."""
        if mask is not self._mimi_mask:
            set_exec_mask(self.mimi, mask)
            self._mimi_mask = mask

    def _empty_step(self) -> StepOutput:
        dq = self.lm.cfg.dep_q
        return StepOutput(
            torch.full((self.batch_size,), UNGENERATED, dtype=torch.long, device=self.device),
            torch.full((self.batch_size, dq), UNGENERATED, dtype=torch.long, device=self.device),
        )

    def _idle_output(self) -> FrameOutput:
        empty = self._empty_step()
        pcm = torch.zeros(self.batch_size, 1, self.frame_size, device=self.device)
        return FrameOutput(pcm, empty.text, empty.audio, self._zero_codes)

    # ---- snapshots ---------------------------------------------------------------------------------------
    def get_state(self, row: int) -> SessionSnapshot:
        """A copy of the conversation in `row`: Mimi's and the generator's state and the session's bookkeeping.

        Take it between steps; `set_state` puts it back in any row (e.g. after `leave`, to park it)."""
        (row,) = self._rows(row)
        prime = (self._prime.text[row].clone(), self._prime.audio[row].clone()) if self._fresh[row] else None
        return SessionSnapshot(st.get_state(self.mimi, [row]), self.generator.get_state(row), self._gen_steps[row],
                               prime)

    def set_state(self, row: int, snapshot: SessionSnapshot) -> None:
        """Continue the conversation `snapshot` in `row` (active from now on, replacing what the row held)."""
        (row,) = self._rows(row)
        st.set_state(self.mimi, [row], snapshot.mimi)
        self.generator.set_state(row, snapshot.generator)
        self._active[row], self._gen_steps[row] = True, snapshot.gen_steps
        self._fresh[row] = snapshot.prime is not None
        if snapshot.prime is not None:
            self._prime.text[row], self._prime.audio[row] = snapshot.prime
        else:
            self._prime.text[row] = UNGENERATED
            self._prime.audio[row] = UNGENERATED

    # ---- introspection (tests, benchmarks) -------------------------------------------------------------------
    def state_bytes(self) -> int:
        """Total bytes of every tensor the session keeps between frames (streaming states, token ring)."""
        seen: set[int] = set()
        total = 0

        def add(t: torch.Tensor) -> None:
            nonlocal total
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()

        for model in (self.mimi, self.lm):
            for m in model.modules():
                state = getattr(m, "state", None)
                if state is None:
                    continue
                for value in vars(state).values():
                    for t in value if isinstance(value, (list, tuple)) else [value]:
                        if isinstance(t, torch.Tensor):
                            add(t)
        for value in vars(self.generator).values():
            if isinstance(value, torch.Tensor):
                add(value)
        return total
