"""`torch.compile` of the duplex frame step (`DuplexSession(..., compile=True)`).

A frame step is thousands of tiny ops (nanomoshi at batch 4: ~7700 aten calls per step), so on a CPU its cost is
mostly per-op overhead, which inductor removes by fusing them. Three pieces are compiled, each once per batch size
(fullgraph, dynamic=False):
- Mimi's streaming encode of one frame of user audio [B, 1, frame_size] -> codes [B, n_user];
- the generator's core (`LMGenerator.sample_step`): the temporal step, the text draw and the depth transformer's
  codebooks with their draws;
- Mimi's streaming decode of one frame of codes [B, n_moshi, 1] -> [B, 1, frame_size].
What stays eager is host bookkeeping and a few ops on [B]-sized tensors (the token ring, masks), and every
per-row operation (join, leave, reset, snapshots): they write the streaming state in place, which the compiled
pieces read as inputs, so rows come and go without a recompilation. The exec mask of inactive rows is a state
tensor too (written in place), so a step with some rows idle runs the same compiled code.

Results equal the eager step's (the same tokens; audio within float rounding: fused kernels reorder some sums).
Both models are switched to static-shape attention (`set_static_shapes`), which gives the same outputs.
A change of a row's sampling settings that changes the shape of the draw (e.g. a first row with top-p, or all rows
greedy) compiles that variant once (a recompilation, seconds); temperatures and top-k values within the same plan
do not.

Compilation costs seconds to minutes at the first step (done by `DuplexSession.compile_step`, which runs one
warm-up step on throw-away state); inductor keeps its kernels in an on-disk cache (`TORCHINDUCTOR_CACHE_DIR`,
default under /tmp), so a second start with the same model shapes is much faster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def compile_fn(fn: Callable, backend: str = "inductor") -> Callable:
    """`fn` compiled once per input shape: the whole function as one graph, static shapes.

    Tensor arguments are passed with the canonical strides of their shape: the compiled code is guarded on
    exact strides, and a slice can have the same shape with other strides (even on size-1 dims, where
    `.contiguous()` keeps them), which would compile a second graph."""
    compiled = torch.compile(fn, backend=backend, fullgraph=True, dynamic=False)

    def call(*args: torch.Tensor) -> object:
        return compiled(*(canonical(a) for a in args))

    return call


def canonical(t: torch.Tensor) -> torch.Tensor:
    """`t`, or a copy of it with the row-major strides of its shape (what a fresh tensor of that shape has)."""
    stride, expected = t.stride(), 1
    for size, s in zip(reversed(t.shape), reversed(stride), strict=True):
        if s != expected:
            return t.clone(memory_format=torch.contiguous_format)
        expected *= size
    return t


class Timer:
    """Wall time of a block, for the "compiling ... done in X s" log line."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def log_start(batch_size: int) -> None:
    log.info("compiling the step for batch %d (torch.compile, inductor; minutes the first time, cached on disk)...",
             batch_size)


def log_done(batch_size: int, seconds: float) -> None:
    log.info("compiling the step for batch %d... done in %.1f s", batch_size, seconds)


def compile_models(session, backend: str = "inductor") -> tuple[Callable, Callable]:
    """Switch `session`'s models to static shapes, fill Mimi's codebook caches, compile the generator's core and
    return the compiled (encode_frame, decode_frame) of the session (compilation happens at their first call)."""
    from ..codec.quantizer import EuclideanCodebook
    from ..nn.attention import set_static_shapes
    from .sampling import bits_to_uniform

    set_static_shapes(session.mimi, True)
    # Module-level caches that a first call fills (a side effect inside the graph, then a guard failure and a
    # recompilation at the next call): filled eagerly now.
    gen = session.generator
    gen._draw_keys(gen.text_keys, gen.audio_keys, gen.offsets)
    bits_to_uniform(torch.zeros(1, dtype=torch.long, device=gen.offsets.device))
    for m in session.mimi.modules():
        if isinstance(m, EuclideanCodebook):
            m.fill_cache()
    session.generator.compile(backend)
    return compile_fn(session._encode_codes, backend), compile_fn(session.mimi.decode, backend)
