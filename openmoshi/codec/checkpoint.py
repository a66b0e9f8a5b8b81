"""Kyutai's Mimi tensor names -> ours, and strict loading from safetensors.

Two Kyutai namings are accepted: the in-memory one of the reference package (`self_attn.in_projs.0.weight`,
`self_attn.out_projs.0.weight`) and the one of the published files (`self_attn.in_proj_weight`,
`self_attn.out_proj.weight`). Our own naming is accepted as is, so a state saved from our model loads back.

Kyutai's SEANet is one flat `model` Sequential; its indices map to our named stages:
encoder: 0 conv_in, 1+3s residual of stage s, 3+3s down conv of stage s, 14 conv_out;
decoder: 0 conv_in, 2+3s up conv (transposed) of stage s, 3+3s residual of stage s, 14 conv_out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ..safetensors_io import CheckpointError, read_header, read_tensor

__all__ = ["CheckpointError", "kyutai_to_ours", "load_safetensors", "load_state", "load_mimi"]


def _seanet(part: str, idx: int, rest: str, num_stages: int) -> str | None:
    plain = re.fullmatch(r"conv\.conv\.(weight|bias)", rest)
    if idx in (0, 3 * num_stages + 2):
        return f"{part}.{'conv_in' if idx == 0 else 'conv_out'}.{plain[1]}" if plain else None
    stage, offset = divmod(idx - 1, 3) if part == "encoder" else divmod(idx - 2, 3)
    block = re.fullmatch(r"block\.(1|3)\.conv\.conv\.(weight|bias)", rest)
    if part == "encoder":
        if offset == 0 and block:
            return f"encoder.stages.{stage}.residual.{'conv1' if block[1] == '1' else 'conv2'}.{block[2]}"
        if offset == 2 and plain:
            return f"encoder.stages.{stage}.down.{plain[1]}"
    else:
        if offset == 0 and (m := re.fullmatch(r"convtr\.convtr\.(weight|bias)", rest)):
            return f"decoder.stages.{stage}.up.{m[1]}"
        if offset == 1 and block:
            return f"decoder.stages.{stage}.residual.{'conv1' if block[1] == '1' else 'conv2'}.{block[2]}"
    return None


_TRANSFORMER_LEAVES = {
    "self_attn.in_projs.0.weight": "attn.in_proj.weight",
    "self_attn.in_proj_weight": "attn.in_proj.weight",
    "self_attn.out_projs.0.weight": "attn.out_proj.weight",
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "linear1.weight": "ff.linear1.weight",
    "linear2.weight": "ff.linear2.weight",
}


def kyutai_to_ours(name: str, num_stages: int = 4) -> str | None:
    """Our name for one of Kyutai's Mimi tensor names, or None when it has no counterpart."""
    if m := re.fullmatch(r"(encoder|decoder)\.model\.(\d+)\.(.+)", name):
        return _seanet(m[1], int(m[2]), m[3], num_stages)
    if m := re.fullmatch(r"(encoder|decoder)_transformer\.transformer\.layers\.(\d+)\.(.+)", name):
        leaf = _TRANSFORMER_LEAVES.get(m[3], m[3])
        return f"{m[1]}_transformer.layers.{m[2]}.{leaf}"
    if m := re.fullmatch(r"quantizer\.rvq_(first|rest)\.(input_proj|output_proj)\.weight", name):
        return f"quantizer.{'semantic' if m[1] == 'first' else 'acoustic'}.{m[2]}"
    if m := re.fullmatch(r"quantizer\.rvq_(first|rest)\.vq\.layers\.(\d+)\._codebook\.(\w+)", name):
        return f"quantizer.{'semantic' if m[1] == 'first' else 'acoustic'}.codebooks.{m[2]}.{m[3]}"
    if name == "downsample.conv.conv.conv.weight":
        return "downsample.weight"
    if name == "upsample.convtr.convtr.convtr.weight":
        return "upsample.weight"
    return None


def _plan(model: nn.Module, shapes: Mapping[str, tuple[int, ...]], source: str) -> dict[str, str]:
    """Match a checkpoint's names and shapes to the model: {our name: checkpoint name}.

    Raises CheckpointError listing missing, unexpected and mis-shaped tensors.
    """
    expected = model.state_dict()
    plan: dict[str, str] = {}
    unexpected: list[str] = []
    for name in shapes:
        target = name if name in expected else kyutai_to_ours(name)
        if target is None or target not in expected:
            unexpected.append(name)
        elif target in plan:
            unexpected.append(f"{name} (a second tensor for {target})")
        else:
            plan[target] = name
    missing = sorted(set(expected) - set(plan))
    wrong_shape = [
        f"{ours}: file {tuple(shapes[theirs])} vs model {tuple(expected[ours].shape)}"
        for ours, theirs in plan.items()
        if tuple(shapes[theirs]) != tuple(expected[ours].shape)
    ]
    if missing or unexpected or wrong_shape:
        lines = [f"{source} does not fit the model:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if items:
                lines.append(f"  {len(items)} {title}: " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        raise CheckpointError("\n".join(lines))
    return plan


def load_state(model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Strictly load a state in Kyutai's or our naming into `model` (values are cast to the model's dtype).

    Raises CheckpointError listing missing, unexpected and mis-shaped tensors; nothing is loaded then.
    """
    plan = _plan(model, {name: tuple(value.shape) for name, value in state.items()}, source)
    targets = model.state_dict(keep_vars=True)  # the live tensors (prepared layouts hand out copies)
    with torch.no_grad():
        # In place: parameters keep their memory layout; the codebook caches see the buffers' new versions.
        for ours, theirs in plan.items():
            targets[ours].copy_(state[theirs])


def load_safetensors(model: nn.Module, path: str | Path) -> None:
    """Load a safetensors file (Kyutai's or our naming) into `model`, strictly.

    Names and shapes are checked from the file's header before any data is read; then each tensor is read
    straight from the file (no mmap, whose pages would count as resident) and copied into place, so the peak
    memory is the model plus its largest tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with open(path, "rb") as f:
            header, data_start = read_header(f, path)
            plan = _plan(model, {name: tuple(info["shape"]) for name, info in header.items()}, str(path))
            targets = model.state_dict(keep_vars=True)  # the live tensors (prepared layouts hand out copies)
            with torch.no_grad():
                for ours, theirs in plan.items():
                    targets[ours].copy_(read_tensor(f, theirs, header[theirs], data_start, path))
    except OSError as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e


def load_mimi(
    path: str | Path, preset: str = "mimi", dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
):
    """Build a Mimi of the named preset ("mimi" or "tiny") and load `path` into it, strictly. In eval mode,
    prepared for inference (`openmoshi.nn.prepare`)."""
    from ..nn.prepare import prepare_for_inference
    from .mimi import Mimi, MimiConfig

    presets = {"mimi": MimiConfig.mimi, "tiny": MimiConfig.tiny}
    if preset not in presets:
        raise ValueError(f"unknown Mimi preset {preset!r}: expected one of {sorted(presets)}")
    model = Mimi(presets[preset]())
    load_safetensors(model, path)
    return prepare_for_inference(model.to(device=device, dtype=dtype).eval())
