"""Mutation check: apply deliberate bugs one at a time to a copy of the repository and run the tests meant to
catch each; report which were caught.

Each mutation is (name, file, the exact original snippet, its replacement, the test files that should catch it).
The snippet must occur exactly once in the file: when the code has changed so that it no longer does, the
mutation is reported as STALE (fix the list), never silently skipped. The working tree is copied once (tracked
and untracked files, without .git, virtual environments and caches) into a temporary folder; each mutation edits
the copy, runs only its tests there (`python -m pytest -x -q`, openmoshi imported from the copy), and restores the
file. Results: CAUGHT (a test failed), MISSED (every test passed), STALE, ERROR (pytest could not run the tests).

    python scripts/mutation_check.py                 # every mutation
    python scripts/mutation_check.py --list          # names, files and tests
    python scripts/mutation_check.py -k window -k rope --baseline   # a subset, after checking its tests pass
    python scripts/mutation_check.py -k priming --all-failures --tests tests/inference   # how many tests fail
Exit status: 0 when every selected mutation is caught, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache", "shared", ".mypy_cache"}


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    original: str
    replacement: str
    tests: list[str] = field(default_factory=list)


M = Mutation
MUTATIONS: list[Mutation] = [
    # ---- nn: RoPE, the attention window, conv resets ------------------------------------------------------
    M("rope-sign", "openmoshi/nn/rope.py",
      "torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1)",
      "torch.stack([re * cos + im * sin, re * sin + im * cos], dim=-1)",
      ["tests/nn/test_transformer_reference.py"]),
    M("rope-positions-ignored-in-streaming", "openmoshi/nn/attention.py",
      "positions = state.offset[:, None] + torch.arange(T, device=x.device)",
      "positions = torch.arange(T, device=x.device).expand(B, T)",
      ["tests/nn/test_transformer.py"]),
    M("window-one-too-wide", "openmoshi/nn/attention.py",
      "mask = mask & (delta < self.context)", "mask = mask & (delta <= self.context)",
      ["tests/nn/test_attention_window.py"]),
    M("window-one-too-narrow", "openmoshi/nn/attention.py",
      "mask = mask & (delta < self.context)", "mask = mask & (delta < self.context - 1)",
      ["tests/nn/test_attention_window.py"]),
    M("ring-one-slot-short", "openmoshi/nn/attention.py",
      "capacity = self.context + self.stream_chunk - 1", "capacity = self.context + self.stream_chunk - 2",
      ["tests/nn/test_attention_window.py"]),
    M("ring-fast-path-for-chunks", "openmoshi/nn/attention.py",
      "if T == 1 and capacity == self.context:", "if capacity <= self.context + 1:",
      ["tests/nn/test_attention_window.py"]),
    M("mimi-window-one-step-off", "openmoshi/codec/mimi.py",
      "dim_feedforward=2048, causal=True, context=250,", "dim_feedforward=2048, causal=True, context=251,",
      ["tests/codec/test_mimi_preset.py"]),
    M("conv-reset-keeps-history", "openmoshi/nn/conv.py",
      "self.pending.masked_fill_(mask[:, None, None], 0)",
      "self.pending.masked_fill_(mask[:, None, None] & False, 0)",
      ["tests/nn/test_conv.py", "tests/codec/test_mimi.py"]),
    M("convtr-reset-keeps-overlap", "openmoshi/nn/conv.py",
      "self.partial.masked_fill_(mask[:, None, None], 0)",
      "self.partial.masked_fill_(mask[:, None, None] & False, 0)",
      ["tests/nn/test_conv.py", "tests/codec/test_mimi.py"]),
    # ---- codec: the quantizer ---------------------------------------------------------------------------------
    M("rvq-no-residual", "openmoshi/codec/quantizer.py",
      "residual = residual - codebook.decode(idx)", "residual = residual - 0.5 * codebook.decode(idx)",
      ["tests/codec/test_quantizer.py"]),
    M("rvq-decode-drops-last-level", "openmoshi/codec/quantizer.py",
      "for level in range(1, codes.shape[1]):", "for level in range(1, codes.shape[1] - 1):",
      ["tests/codec/test_quantizer.py"]),
    M("codebook-cache-ignores-in-place-edits", "openmoshi/codec/quantizer.py",
      "return (s.data_ptr(), s._version, s.dtype, s.device, u.data_ptr(), u._version)",
      "return (s.data_ptr(), s.dtype, s.device, u.data_ptr())",
      ["tests/codec/test_quantizer.py"]),
    # ---- lm: delays and the training forward's masks -------------------------------------------------------
    M("undelay-wrong-way", "openmoshi/lm/delays.py",
      "out[:, k, : T - d] = values[:, k, d:]", "out[:, k, d:] = values[:, k, : T - d]",
      ["tests/lm/test_lm_delays.py", "tests/lm/test_lm_model.py"]),
    M("forward-keeps-minus-one-targets", "openmoshi/lm/model.py",
      "audio_mask &= codes[:, 1 : cfg.dep_q + 1] != -1", "audio_mask &= codes[:, 1 : cfg.dep_q + 1] != -2",
      ["tests/lm/test_lm_model.py"]),
    M("forward-text-mask-ignored", "openmoshi/lm/model.py",
      "text_mask &= codes[:, :1] != -1", "text_mask |= codes[:, :1] == -1",
      ["tests/lm/test_lm_model.py"]),
    # ---- the generator: ring, delays, sampling settings, resets --------------------------------------------
    # (max_delay + 1 slots would be enough: per stream the live slots span max_delay + 1 steps)
    M("generator-ring-too-short", "openmoshi/inference/generator.py",
      "self.ring = self.max_delay + 2", "self.ring = self.max_delay",
      ["tests/inference/test_generator_parity.py"]),
    M("generator-reads-initial-one-step-short", "openmoshi/inference/generator.py",
      "is_init = offsets[:, None] <= delays  # [B, K]", "is_init = offsets[:, None] < delays  # [B, K]",
      ["tests/inference/test_generator_parity.py"]),
    M("generator-output-not-undelayed", "openmoshi/inference/generator.py",
      "index = (offsets[:, None] - self.max_delay + delays[: dq + 1]) % self.ring",
      "index = (offsets[:, None] - self.max_delay + self.max_delay) % self.ring",
      ["tests/inference/test_generator_parity.py"]),
    M("text-sampled-with-audio-settings", "openmoshi/inference/generator.py",
      "text = sample_rows(text_logits[:, 0], self.text_rows, text_keys)",
      "text = sample_rows(text_logits[:, 0], self.audio_rows, text_keys)",
      ["tests/inference/test_sampling_settings.py"]),
    M("audio-sampled-with-text-settings", "openmoshi/inference/generator.py",
      "sampler = _AudioSampler(self.audio_rows, audio_keys)", "sampler = _AudioSampler(self.text_rows, audio_keys)",
      ["tests/inference/test_sampling_settings.py"]),
    M("generator-reset-clears-every-row", "openmoshi/inference/generator.py",
      "self.cache.masked_fill_(mask[:, None, None], UNGENERATED)", "self.cache.fill_(UNGENERATED)",
      ["tests/inference/test_generator.py", "tests/inference/test_session_row_isolation.py"]),
    M("generator-step-syncs", "openmoshi/inference/generator.py",
      "out = out.masked_fill(not_ready[:, None], UNGENERATED)",
      "out = out.masked_fill(not_ready[:, None], UNGENERATED) if bool(not_ready.any()) else out",
      ["tests/inference/test_no_host_sync.py"]),
    # ---- the sampler ----------------------------------------------------------------------------------------
    M("temperature-ignored", "openmoshi/inference/sampling.py",
      "scaled = logits.float() / cfg.temperature", "scaled = logits.float()",
      ["tests/inference/test_sampling_settings.py"]),
    M("top-k-ignored", "openmoshi/inference/sampling.py",
      "if 0 < cfg.top_k < scaled.shape[-1]:", "if False:",
      ["tests/inference/test_sampling_settings.py"]),
    M("top-p-ignored", "openmoshi/inference/sampling.py",
      "if cfg.top_p > 0.0:", "if False:",
      ["tests/inference/test_sampling_settings.py"]),
    M("row-temperature-ignored", "openmoshi/inference/sampling.py",
      "x = logits.float() / settings.temperature[:, None]", "x = logits.float()",
      ["tests/inference/test_sampling_settings.py"]),
    M("row-top-k-ignored", "openmoshi/inference/sampling.py",
      "limited = [c.top_k for c in sampled if 0 < c.top_k < vocab]", "limited = []",
      ["tests/inference/test_sampling_settings.py"]),
    M("row-top-p-ignored", "openmoshi/inference/sampling.py",
      'x = x.masked_fill((before > settings.top_p[:, None]) & plan.has_top_p, float("-inf"))', "x = x",
      ["tests/inference/test_sampling_settings.py"]),
    # ---- the session: resets, priming, host syncs ------------------------------------------------------------
    M("session-reset-restarts-every-mimi-row", "openmoshi/inference/session.py",
      "reset_streaming(self.mimi, mask)", "reset_streaming(self.mimi, None)",
      ["tests/inference/test_session_row_isolation.py"]),
    M("priming-on-all-rows", "openmoshi/inference/session.py",
      "prime = self.generator.start(rows, text_sampling, audio_sampling, seed, audio_seed)",
      "prime = self.generator.start(range(self.batch_size), text_sampling, audio_sampling, seed, audio_seed)",
      ["tests/inference/test_session_row_isolation.py"]),
    M("session-step-copies-to-host", "openmoshi/inference/session.py",
      "return FrameOutput(pcm_out, out.text, out.audio, codes, prime)",
      "return FrameOutput(pcm_out, out.text.cpu(), out.audio, codes, prime)",
      ["tests/inference/test_no_host_sync.py"]),
    # ---- commands -------------------------------------------------------------------------------------------
    M("save-tokens-codebooks-reversed", "openmoshi/commands/chat.py",
      '"audio": np.stack(self.audio, axis=1) if self.audio',
      '"audio": np.stack(self.audio, axis=1)[::-1] if self.audio',
      ["tests/commands/test_chat_cli.py"]),
    M("save-tokens-without-the-priming-step", "openmoshi/commands/chat.py",
      "if out.prime is not None:", "if False:",
      ["tests/commands/test_chat_cli.py"]),
    M("config-over-flags", "openmoshi/commands/chat.py",
      "return value if value is not None else gen.get(key, default)",
      "return gen.get(key, value if value is not None else default)",
      ["tests/commands/test_chat_sampling.py"]),
    M("lm-gen-config-ignored", "openmoshi/commands/chat.py",
      "sampling_configs(args, models.files.repo_config.lm_gen_config)", "sampling_configs(args, None)",
      ["tests/commands/test_chat_sampling.py"]),
    M("demo-ignores-num-codebooks", "openmoshi/commands/codec_demo.py",
      "c = mimi.encode(x[..., i * frame:(i + 1) * frame], num_codebooks)",
      "c = mimi.encode(x[..., i * frame:(i + 1) * frame], 8)",
      ["tests/commands/test_command_values.py"]),
    # ---- issue 13: the bundled model as the default, the conversation demo --------------------------------------
    M("default-model-is-kyutai", "openmoshi/model_files.py",
      "name = model or default or _bundled(flags)", "name = model or default or DEFAULT_REPO",
      ["tests/test_default_model.py"]),
    M("bundled-files-ignore-config-names", "openmoshi/default_model.py",
      "value = raw.get(key, default) if isinstance(raw, dict) else default", "value = default",
      ["tests/test_default_model.py"]),
    M("demo-without-answer-time", "openmoshi/commands/demo.py",
      "user = np.concatenate([user, np.zeros(round(args.answer_seconds * rate), dtype=np.float32)])",
      "user = np.concatenate([user, np.zeros(0, dtype=np.float32)])",
      ["tests/commands/test_demo.py"]),
    # ---- issue 7: training loss, per-row state -----------------------------------------------------------------
    M("loss-pad-weight-ignored", "openmoshi/lm/loss.py",
      "text_w = torch.where(is_pad, config.text_padding_weight, 1.0) * output.text_mask",
      "text_w = torch.where(is_pad, 1.0, 1.0) * output.text_mask",
      ["tests/lm/test_lm_loss.py"]),
    M("attention-bound-ignores-restored-rows", "openmoshi/nn/attention.py",
      "self.fill_bound = min(self.keys.shape[2], max(before, written))",
      "self.fill_bound = min(self.keys.shape[2], before)",
      ["tests/inference/test_session_rows.py"]),
    M("row-noise-ignores-seed", "openmoshi/inference/generator.py",
      "text = sample_rows(logits, text_rows, text_keys)",
      "text = sample_rows(logits, text_rows, text_keys * 0)",
      ["tests/inference/test_session_rows.py", "tests/inference/test_generator_rows.py"]),
]


def copy_tree(src: Path, dst: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in SKIP or n.endswith((".pyc", ".egg-info"))}

    shutil.copytree(src, dst, ignore=ignore, symlinks=True)


def run_tests(copy: Path, tests: list[str], timeout: float, stop: bool = True) -> tuple[int, str]:
    env = {**os.environ, "NO_TORCH_COMPILE": "1", "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", *(["-x"] if stop else []), "-q", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s"
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return proc.returncode, lines[-1] if lines else ""


def apply(copy: Path, m: Mutation) -> str | None:
    """Edit the copy; returns the original text to restore, or None when the snippet is not there exactly once."""
    path = copy / m.file
    if not path.is_file():
        return None
    text = path.read_text()
    if text.count(m.original) != 1:
        return None
    path.write_text(text.replace(m.original, m.replacement))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="apply deliberate bugs to a copy of the repo, run their tests")
    parser.add_argument("-k", dest="only", action="append", default=[],
                        help="run the mutations whose name contains this (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--baseline", action="store_true", help="first check the selected tests pass unmutated")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutation (default 900)")
    parser.add_argument("--all-failures", action="store_true",
                        help="run every listed test (no -x): how many tests catch each mutation")
    parser.add_argument("--tests", nargs="+", default=None, metavar="TEST",
                        help="run these tests instead of each mutation's own list")
    args = parser.parse_args(argv)
    selected = [m for m in MUTATIONS if not args.only or any(s in m.name for s in args.only)]
    if args.list:
        for m in selected:
            print(f"{m.name:42s} {m.file:36s} {' '.join(m.tests)}")
        return 0
    if not selected:
        print("no mutation matches", file=sys.stderr)
        return 2
    results: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="openmoshi-mutants-") as tmp:
        copy = Path(tmp) / "repo"
        copy_tree(ROOT, copy)
        check = subprocess.run([sys.executable, "-c", "import openmoshi; print(openmoshi.__file__)"], cwd=copy,
                               env={**os.environ, "PYTHONPATH": str(copy)}, capture_output=True, text=True)
        if not check.stdout.strip().startswith(str(copy)):
            print(f"error: the copy does not import its own openmoshi: {check.stdout}{check.stderr}", file=sys.stderr)
            return 2
        if args.baseline:
            tests = args.tests or sorted({t for m in selected for t in m.tests})
            rc, last = run_tests(copy, tests, args.timeout * 4)
            print(f"baseline ({len(tests)} test files): {'ok' if rc == 0 else 'FAILS'}  {last}", flush=True)
            if rc != 0:
                return 2
        for m in selected:
            start = time.perf_counter()
            original = apply(copy, m)
            if original is None:
                status, detail = "STALE", f"snippet not found exactly once in {m.file}: {m.original!r}"
            else:
                try:
                    rc, detail = run_tests(copy, args.tests or m.tests, args.timeout, stop=not args.all_failures)
                finally:
                    (copy / m.file).write_text(original)
                status = {0: "MISSED", 1: "CAUGHT"}.get(rc, "ERROR")
            results.append((m.name, status, detail))
            print(f"{status:7s} {m.name:42s} {time.perf_counter() - start:6.1f} s  {detail}", flush=True)
    caught = sum(s == "CAUGHT" for _, s, _ in results)
    print(f"\n{caught}/{len(results)} caught", flush=True)
    for name, status, detail in results:
        if status != "CAUGHT":
            print(f"  {status}: {name} ({detail})")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
