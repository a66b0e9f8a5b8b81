"""`openmoshi helium`: run a Moshi checkpoint's temporal transformer (Helium) as a plain text model.

One text token per step, every audio stream given the zero token -1 (as in the report's text-only batches),
after one all-initial step (the first input of every sequence the model was trained on). The prompt is fed in
one chunk, then the continuation is sampled token by token with the KV cache.

    openmoshi helium --model DIR_OR_HF_REPO [--weights FILE] [--tokenizer FILE] "prompt"
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..lm.config import DEFAULT_REPO
from ..model_files import DTYPE_NAMES, ModelFiles, ModelFilesError, resolve_model_files
from . import common

if TYPE_CHECKING:  # torch is imported by `main` only, so `openmoshi helium --help` stays instant
    import torch

    from ..inference.sampling import SamplingConfig
    from ..lm.model import LMModel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="text to continue")
    parser.add_argument("--model", "--hf-repo", dest="model", default=DEFAULT_REPO,
                        help=f"local folder or Hugging Face repo in Kyutai's layout (default {DEFAULT_REPO})")
    parser.add_argument("--weights", default=None, metavar="FILE", help="LM safetensors (overrides the model's)")
    parser.add_argument("--tokenizer", default=None, metavar="FILE", help="SentencePiece model (overrides)")
    parser.add_argument("--max-tokens", type=common.positive_int, default=64, help="tokens to generate (default 64)")
    parser.add_argument("--temperature", type=common.non_negative_float, default=0.7)
    parser.add_argument("--top-k", type=common.non_negative_int, default=25)
    parser.add_argument("--top-p", type=common.probability, default=0.0)
    parser.add_argument("--greedy", action="store_true", help="always take the most likely token")
    parser.add_argument("--seed", type=common.seed, default=None, help="0..2**64-1 (default: random)")
    parser.add_argument("--device", type=common.device, default=None,
                        help="cpu, cuda, cuda:N, mps (default: cuda when available)")
    common.add_threads_argument(parser)
    parser.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                        help="default float32 on CPU, bfloat16 on GPU")


HELIUM_FLAGS = {"moshi": "--weights", "tokenizer": "--tokenizer", "model": "--model"}


def resolve_files(model: str, weights: str | None, tokenizer: str | None) -> ModelFiles:
    """The LM weights and the tokenizer (and config.json) from a folder or repo id, explicit files first.

    The shared resolver (`openmoshi.model_files`): quick reachability check, the hub cache alone when offline,
    one ModelFilesError listing what is missing and how to provide it.
    """
    return resolve_model_files(model, moshi_weight=weights, tokenizer=tokenizer, roles=("moshi", "tokenizer"),
                               flags=HELIUM_FLAGS)


def generate_text(
    model: LMModel,
    prompt: list[int],
    max_tokens: int,
    sampling: SamplingConfig,
    generator: torch.Generator | None = None,
    on_token=None,
) -> list[int]:
    """Continue `prompt` (text ids) with Helium: returns the generated ids; `on_token(id)` is called on each.

    Stops early at the tokenizer's end of sequence only if the caller's `on_token` returns True.
    """
    import torch

    with torch.no_grad():
        return _generate(model, prompt, max_tokens, sampling, generator, on_token)


def _generate(model, prompt, max_tokens, sampling, generator, on_token) -> list[int]:
    import torch

    from ..inference.sampling import sample
    from ..nn.streaming import streaming

    cfg = model.cfg
    K, device = cfg.num_streams, model.device
    tokens = torch.full((1, K, len(prompt) + 1), -1, dtype=torch.long, device=device)
    tokens[:, :, 0] = model.initial_tokens()
    tokens[0, 0, 1:] = torch.tensor(prompt, dtype=torch.long, device=device)
    out: list[int] = []
    with streaming(model.transformer, 1):
        _, logits = model.forward_temporal(tokens)
        step = torch.full((1, K, 1), -1, dtype=torch.long, device=device)
        for _ in range(max_tokens):
            token = sample(logits[:, -1], sampling, generator)
            value = int(token.item())  # the host needs each token (to print it): one sync per token
            out.append(value)
            if on_token is not None and on_token(value):
                break
            step[0, 0, 0] = token[0]
            _, logits = model.forward_temporal(step)
    return out


def main(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import CheckpointError
    from ..inference.models import resolve_device, resolve_dtype
    from ..inference.sampling import SamplingConfig
    from ..lm.checkpoint import load_lm
    from ..lm.text import TextStreamDecoder, TextTokenizer, TokenizerError

    common.apply_threads(args.threads)
    try:
        sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                  greedy=args.greedy)
        files = resolve_files(args.model, args.weights, args.tokenizer)
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
        # The tokenizer first: a bad file is reported before the (large) weights are read.
        tokenizer = TextTokenizer.for_model(files.tokenizer, files.repo_config.lm)
        model = load_lm(files.moshi, files.repo_config.lm, device=device, dtype=dtype)
    except (ModelFilesError, CheckpointError, TokenizerError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    gen = torch.Generator(device=device)
    if args.seed is None:
        gen.seed()
    else:
        gen.manual_seed(args.seed)
    prompt = tokenizer.encode(args.prompt)
    decoder = TextStreamDecoder(tokenizer)
    eos = tokenizer.sp.eos_id()
    sys.stdout.write(args.prompt)

    def on_token(token: int) -> bool:
        if token == eos:
            return True
        sys.stdout.write(decoder.push(token))
        sys.stdout.flush()
        return False

    generate_text(model, prompt, args.max_tokens, sampling, gen, on_token)
    sys.stdout.write("\n")
    return 0
