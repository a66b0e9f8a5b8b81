"""Mimi: 24 kHz mono audio <-> discrete codes at 12.5 Hz, in batch or streaming.

Encode: waveform [B, 1, T] -> SEANet encoder (25 Hz latent [B, 512, 2F]) -> encoder transformer -> stride-2
conv (12.5 Hz, [B, 512, F]) -> split RVQ -> codes [B, K, F].
Decode: codes [B, K, F] -> split RVQ decode -> depthwise transposed conv (25 Hz) -> decoder transformer ->
SEANet decoder -> waveform [B, 1, F * 1920].

Streaming: inside `with streaming(mimi, batch_size):` every call to `encode` takes a whole number of
1920-sample frames per row and `decode` any number of code frames; the rows are independent streams, and
`reset_streaming(mimi, mask)` starts new streams in the chosen rows. Streaming output equals batch output at any
length and chunking: the attention looks at exactly the last `context` steps in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from openmoshi.nn.conv import StreamingConv1d, StreamingConvTranspose1d
from openmoshi.nn.transformer import Transformer, TransformerConfig

from .quantizer import QuantizerConfig, SplitResidualVQ
from .seanet import SEANetConfig, SEANetDecoder, SEANetEncoder


def _mimi_transformer() -> TransformerConfig:
    return TransformerConfig(
        d_model=512, num_heads=8, num_layers=8, dim_feedforward=2048, causal=True, context=250,
        rope_max_period=10_000.0, norm="layer_norm", norm_eps=1e-5, layer_scale=0.01, gating="none",
        stream_chunk=2,  # one 80 ms frame = 2 transformer steps: streamed frame by frame without cache copies
    )


@dataclass
class MimiConfig:
    sample_rate: int = 24_000
    resample_stride: int = 2  # encoder frames (25 Hz) per code frame (12.5 Hz)
    num_codebooks: int = 8  # default K of `encode` (Moshi's); up to quantizer.num_codebooks
    seanet: SEANetConfig = field(default_factory=SEANetConfig.mimi)
    transformer: TransformerConfig = field(default_factory=_mimi_transformer)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig.mimi)

    def __post_init__(self) -> None:
        dims = {self.seanet.dimension, self.transformer.d_model, self.quantizer.dimension}
        if len(dims) != 1:
            raise ValueError(f"SEANet, transformer and quantizer dimensions differ: {sorted(dims)}")
        if not 1 <= self.num_codebooks <= self.quantizer.num_codebooks:
            raise ValueError(f"num_codebooks {self.num_codebooks} not in 1..{self.quantizer.num_codebooks}")

    @property
    def frame_size(self) -> int:
        """Samples per code frame (1920 for Mimi: 80 ms at 24 kHz)."""
        return self.seanet.hop_length * self.resample_stride

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.frame_size

    @classmethod
    def mimi(cls) -> MimiConfig:
        """Kyutai's released Mimi (79,308,609 parameters)."""
        return cls()

    @classmethod
    def tiny(cls) -> MimiConfig:
        """A few thousand parameters with the same structure, for tests (frame of 48 samples)."""
        return cls(
            num_codebooks=4,
            seanet=SEANetConfig.tiny(),
            transformer=TransformerConfig(
                d_model=32, num_heads=2, num_layers=2, dim_feedforward=64, context=10, layer_scale=0.01,
                stream_chunk=2,
            ),
            quantizer=QuantizerConfig.tiny(),
        )


def _store_transposed(module: nn.Module) -> None:
    """Give every Linear weight [out, in] the memory layout of its transpose (same shape, same values).

    Streaming multiplies 2 rows by each weight, so the weights' memory traffic is the cost: with the weight
    stored [in, out] contiguous, CPU BLAS reads it ~20% faster than a transposed operand. Loading
    (copy_) and `.to()` keep the layout; `state_dict()` tensors need `.contiguous()` before saving.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            w = layer.weight
            layer.weight = nn.Parameter(w.detach().t().contiguous().t(), requires_grad=w.requires_grad)


class Mimi(nn.Module):
    """The codec. `encode` [B, 1, T] -> codes [B, K, F]; `decode` codes [B, K, F] -> [B, 1, F * frame_size]."""

    def __init__(self, cfg: MimiConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or MimiConfig.mimi()
        self.cfg = cfg
        dim, stride = cfg.seanet.dimension, cfg.resample_stride
        self.encoder = SEANetEncoder(cfg.seanet)
        self.encoder_transformer = Transformer(cfg.transformer)
        # Replicate padding: the first frame is padded with copies of itself (Kyutai's choice, kept for parity).
        self.downsample = StreamingConv1d(dim, dim, 2 * stride, stride=stride, bias=False, pad_mode="replicate")
        self.quantizer = SplitResidualVQ(cfg.quantizer)
        self.upsample = StreamingConvTranspose1d(dim, dim, 2 * stride, stride=stride, groups=dim, bias=False)
        self.decoder_transformer = Transformer(cfg.transformer)
        self.decoder = SEANetDecoder(cfg.seanet)
        for transformer in (self.encoder_transformer, self.decoder_transformer):
            _store_transposed(transformer)

    @property
    def frame_size(self) -> int:
        return self.cfg.frame_size

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    @property
    def is_streaming(self) -> bool:
        return self.downsample.state is not None

    def _dtype(self) -> torch.dtype:
        return self.downsample.weight.dtype

    def encode_latent(self, wav: Tensor) -> Tensor:
        """Unquantized latent: wav [B, 1, T] -> [B, D, F]. Batch mode zero-pads T to a multiple of frame_size."""
        if wav.dim() != 3 or wav.shape[1] != self.cfg.seanet.channels:
            raise ValueError(f"expected audio [B, {self.cfg.seanet.channels}, T], got {list(wav.shape)}")
        length = wav.shape[-1]
        if self.is_streaming:
            if length % self.frame_size:
                raise ValueError(f"streaming encode takes whole frames of {self.frame_size} samples, got {length}")
        elif length % self.frame_size:
            wav = nn.functional.pad(wav, (0, self.frame_size - length % self.frame_size))
        x = self.encoder(wav.to(self._dtype()))
        x = self.encoder_transformer(x.transpose(1, 2)).transpose(1, 2)
        return self.downsample(x)

    @torch.no_grad()
    def encode(self, wav: Tensor, num_codebooks: int | None = None) -> Tensor:
        """wav [B, 1, T] -> codes [B, K, ceil(T / frame_size)] (int64). K defaults to cfg.num_codebooks."""
        k = self.cfg.num_codebooks if num_codebooks is None else num_codebooks
        return self.quantizer.encode(self.encode_latent(wav), k)

    def decode_latent(self, latent: Tensor) -> Tensor:
        """latent [B, D, F] -> wav [B, 1, F * frame_size]."""
        x = self.upsample(latent.to(self._dtype()))
        x = self.decoder_transformer(x.transpose(1, 2)).transpose(1, 2)
        return self.decoder(x)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, K, F] -> wav [B, 1, F * frame_size], in the model's dtype."""
        return self.decode_latent(self.quantizer.decode(codes))
