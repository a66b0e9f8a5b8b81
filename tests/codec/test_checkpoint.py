"""Kyutai's names -> ours, the real-size parameter count, and strict loading with named errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from codec_testutils import random_state, randomize_model, reference_shapes, to_published_naming
from safetensors.torch import save_file

from openmoshi.codec.checkpoint import CheckpointError, kyutai_to_ours, load_safetensors, load_state
from openmoshi.codec.mimi import Mimi, MimiConfig


@pytest.fixture(scope="module")
def meta_mimi() -> Mimi:
    with torch.device("meta"):
        return Mimi(MimiConfig.mimi())


def test_real_size_parameter_count(meta_mimi: Mimi) -> None:
    assert sum(p.numel() for p in meta_mimi.parameters()) == 79_308_609


@pytest.mark.parametrize("published", [False, True])
def test_every_reference_tensor_maps_to_ours_with_its_shape(meta_mimi: Mimi, published: bool) -> None:
    ours = {name: tuple(t.shape) for name, t in meta_mimi.state_dict().items()}
    shapes = reference_shapes()
    if published:
        shapes = {k: v.shape for k, v in to_published_naming({k: torch.empty(s, device="meta")
                                                               for k, s in shapes.items()}).items()}
        assert any("in_proj_weight" in k for k in shapes)
    targets = {}
    for name, shape in shapes.items():
        target = kyutai_to_ours(name)
        assert target in ours, (name, target)
        assert ours[target] == tuple(shape), name
        targets[target] = name
    assert set(targets) == set(ours)  # one to one, nothing of ours left out


def test_unknown_names_map_to_nothing() -> None:
    for name in ["encoder.model.2.conv.conv.weight", "encoder.model.1.block.2.conv.conv.weight",
                 "decoder.model.2.conv.conv.weight", "quantizer.rvq_first.foo.weight", "foo"]:
        assert kyutai_to_ours(name) is None, name


def _tiny() -> Mimi:
    return randomize_model(Mimi(MimiConfig.tiny()), seed=1)


def test_our_naming_round_trips_through_safetensors(tmp_path: Path) -> None:
    src = _tiny()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    dst = Mimi(MimiConfig.tiny())
    load_safetensors(dst, tmp_path / "w.safetensors")
    for name, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[name], value), name
    wav = torch.randn(1, 1, 10 * 48)
    assert torch.equal(src.encode(wav), dst.encode(wav))  # the codebook cache followed the load


def test_strict_loading_lists_problems(tmp_path: Path) -> None:
    state = dict(_tiny().state_dict())
    del state["encoder.conv_in.weight"]
    state["decoder.conv_out.bias"] = torch.zeros(3)
    state["something.else"] = torch.zeros(1)
    model = Mimi(MimiConfig.tiny())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_state(model, state)
    msg = str(err.value)
    assert "1 missing: encoder.conv_in.weight" in msg
    assert "something.else" in msg and "unexpected" in msg
    assert "1 mis-shaped: decoder.conv_out.bias (3,) (-> decoder.conv_out.bias (1,))" in msg
    for name, value in model.state_dict().items():  # nothing was loaded
        assert torch.equal(value, before[name]), name


def test_load_errors_for_bad_files(tmp_path: Path) -> None:
    model = Mimi(MimiConfig.tiny())
    with pytest.raises(FileNotFoundError, match="not found"):
        load_safetensors(model, tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_safetensors(model, tmp_path / "bad.safetensors")
    # A valid file cut short: the names and shapes fit, the data is missing.
    save_file({k: v.contiguous() for k, v in _tiny().state_dict().items()}, tmp_path / "full.safetensors")
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_safetensors(model, tmp_path / "cut.safetensors")


def test_bf16_file_loads_into_fp32_model(tmp_path: Path) -> None:
    src = _tiny()
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in src.state_dict().items()}, tmp_path / "h.safetensors")
    dst = Mimi(MimiConfig.tiny())
    load_safetensors(dst, tmp_path / "h.safetensors")
    for name, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[name], value.to(torch.bfloat16).float()), name


def test_both_kyutai_namings_load_the_same_real_size_weights() -> None:
    state = random_state(7)
    a, b = Mimi(MimiConfig.mimi()), Mimi(MimiConfig.mimi())
    load_state(a, state)
    load_state(b, to_published_naming(state))
    name = "decoder_transformer.layers.3.attn.in_proj.weight"
    key = "decoder_transformer.transformer.layers.3.self_attn.in_projs.0.weight"
    assert torch.equal(a.state_dict()[name], state[key])
    assert torch.equal(b.state_dict()[name], state[key])


def _header_edit(path: Path, out: Path, edit) -> None:
    """Rewrite a safetensors file's header with `edit(header)` (the data is kept as is)."""
    import json

    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    edit(header)
    raw = json.dumps(header).encode()
    out.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + size:])


def test_corrupt_headers_are_checkpoint_errors(tmp_path: Path) -> None:
    """Offsets disagreeing with shapes/dtypes, overlapping tensors, a bad dtype: one clear error, no traceback."""
    save_file({k: v.contiguous() for k, v in _tiny().state_dict().items()}, tmp_path / "full.safetensors")
    name = "decoder.conv_out.weight"

    def shape(h):  # same bytes, a shape that needs more
        h[name]["shape"] = [h[name]["shape"][0] * 2, *h[name]["shape"][1:]]

    def dtype(h):  # F32 declared F64: the offsets span half the bytes needed
        h[name]["dtype"] = "F64"

    def overlap(h):
        other = "decoder.conv_out.bias"
        begin = h[name]["data_offsets"][0]
        size = h[other]["data_offsets"][1] - h[other]["data_offsets"][0]
        h[other]["data_offsets"] = [begin, begin + size]

    def unknown(h):
        h[name]["dtype"] = "F8_E9"

    def past_end(h):
        begin, end = h[name]["data_offsets"]
        h[name]["data_offsets"] = [begin + 10**9, end + 10**9]

    cases = [(shape, "needs"), (dtype, "needs"), (overlap, "overlap"), (unknown, "unsupported dtype"),
             (past_end, "past the end of the file")]
    for edit, expected in cases:
        out = tmp_path / f"{edit.__name__}.safetensors"
        _header_edit(tmp_path / "full.safetensors", out, edit)
        with pytest.raises(CheckpointError, match=expected) as err:
            load_safetensors(Mimi(MimiConfig.tiny()), out)
        assert "decoder.conv_out" in str(err.value), edit.__name__


def test_nan_or_inf_weights_are_refused_naming_the_tensor(tmp_path: Path) -> None:
    """Today's defect: NaN weights decoded to a constant full-scale signal. Now the load refuses them."""
    for bad in (float("nan"), float("inf")):
        state = {k: v.contiguous().clone() for k, v in _tiny().state_dict().items()}
        state["decoder_transformer.layers.1.ff.linear1.weight"][3, 2] = bad
        save_file(state, tmp_path / "nan.safetensors")
        with pytest.raises(CheckpointError, match="decoder_transformer.layers.1.ff.linear1.weight holds 1 NaN"):
            load_safetensors(Mimi(MimiConfig.tiny()), tmp_path / "nan.safetensors")
        with pytest.raises(CheckpointError, match="NaN or infinite"):
            load_state(Mimi(MimiConfig.tiny()), state)


def test_load_mimi_presets_come_from_the_registry(tmp_path: Path) -> None:
    from openmoshi.codec.checkpoint import load_mimi
    from openmoshi.codec.presets import MIMI_PRESETS, mimi_preset

    assert set(MIMI_PRESETS) == {"mimi", "tiny"}
    for name in MIMI_PRESETS:
        assert mimi_preset(name) == getattr(MimiConfig, name)()
    save_file({k: v.contiguous() for k, v in _tiny().state_dict().items()}, tmp_path / "w.safetensors")
    assert load_mimi(tmp_path / "w.safetensors", "tiny").cfg == MimiConfig.tiny()
    with pytest.raises(ValueError, match="unknown Mimi preset 'huge' \\(known: mimi, tiny\\)"):
        load_mimi(tmp_path / "w.safetensors", "huge")
