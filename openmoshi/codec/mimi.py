"""Mimi: 24 kHz mono audio <-> discrete codes at 12.5 Hz, in batch or streaming.

Encode: waveform [B, 1, T] -> SEANet encoder (25 Hz latent [B, 512, 2F]) -> encoder transformer -> stride-2
conv (12.5 Hz, [B, 512, F]) -> split RVQ -> codes [B, K, F].
Decode: codes [B, K, F] -> split RVQ decode -> depthwise transposed conv (25 Hz) -> decoder transformer ->
SEANet decoder -> waveform [B, 1, F * 1920].

Streaming: inside `with streaming(mimi, batch_size):` every call to `encode` takes a whole number of
1920-sample frames per row and `decode` any number of code frames; the rows are independent streams, and
`reset_streaming(mimi, mask)` starts new streams in the chosen rows. Streaming output equals batch output at any
length and chunking: the attention looks at exactly the last `context` steps in both modes.

Module conventions: `forward(wav)` is the training pass (reconstruction, codes, commitment loss); `init_weights()`
initialises a model built on the meta device once materialised; the constructor builds the standard layout and
`openmoshi.nn.prepare.prepare_for_inference(mimi)` applies the inference layout (loaders call it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from openmoshi.nn.attention import Attention
from openmoshi.nn.conv import StreamingConv1d, StreamingConvTranspose1d
from openmoshi.nn.norms import LayerNorm, LayerScale, RMSNorm
from openmoshi.nn.prepare import store_transposed
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


@torch.no_grad()
def _init_transformer(transformer: Transformer, cfg: TransformerConfig) -> None:
    for module in transformer.modules():
        if isinstance(module, nn.Linear):
            module.reset_parameters()
        elif isinstance(module, (LayerNorm, RMSNorm)):
            module.weight.fill_(1.0)
            if isinstance(module, LayerNorm):
                module.bias.zero_()
        elif isinstance(module, LayerScale):
            module.scale.fill_(cfg.layer_scale if cfg.layer_scale is not None else 1.0)


@dataclass
class MimiOutput:
    """What `Mimi.forward` returns (F code frames, T' = F * frame_size >= T: the input is zero-padded)."""

    reconstruction: Tensor  # [B, 1, T'] decoded from the quantized latent
    codes: Tensor  # [B, K, F] int64
    commitment_loss: Tensor  # scalar: the quantizer's commitment loss (mean over the K levels)
    latent: Tensor  # [B, D, F] the encoder's unquantized latent
    quantized: Tensor  # [B, D, F] its quantized value, straight-through gradient to `latent`
    semantic: Tensor | None = None  # [B, D, F] the semantic (first) VQ level's output (for distillation)
    levels: Tensor | None = None  # [B] codebooks each row was decoded with (quantizer dropout); None: all K
    unquantized: Tensor | None = None  # [B] bool: rows decoded from `latent` itself (`unquantized_share`)


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

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise every parameter and buffer (after `to_empty` of a model built on the meta device).

        Convs ~ N(0, 1/fan_in) with zero biases, transformer linears as torch's nn.Linear, norms to the identity,
        layer scales to `cfg.transformer.layer_scale`, quantizer as `SplitResidualVQ.init_weights` (random codebooks).
        """
        self.encoder.init_weights()
        self.decoder.init_weights()
        self.downsample.init_weights()
        self.upsample.init_weights()
        self.quantizer.init_weights()
        for transformer in (self.encoder_transformer, self.decoder_transformer):
            _init_transformer(transformer, self.cfg.transformer)

    def prepare_for_inference(self) -> None:
        """Hook of `openmoshi.nn.prepare.prepare_for_inference`: the transformers' Linear weights stored transposed.

        Streaming multiplies 2 rows by each weight, so reading the weights is the cost, and CPU BLAS reads an
        [in, out]-contiguous weight faster. Shapes, values and state-dict names are unchanged.
        Also fills the attention's lazy RoPE table and the codebook caches of the first `cfg.num_codebooks` levels,
        so that a compiled first step does not fill them (a recompile).
        """
        levels = [*self.quantizer.semantic.codebooks, *self.quantizer.acoustic.codebooks]
        for codebook in levels[:self.cfg.num_codebooks]:
            codebook.fill_cache()
        for transformer in (self.encoder_transformer, self.decoder_transformer):
            for layer in transformer.modules():
                if isinstance(layer, nn.Linear):
                    store_transposed(layer)
                elif isinstance(layer, Attention) and layer.rope_max_period:
                    layer.rope_freqs(layer.out_proj.weight.device)

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

    def forward(self, wav: Tensor, num_codebooks: int | None = None, unquantized_share: float = 0.0) -> MimiOutput:
        """Training pass (batch mode): wav [B, 1, T] -> reconstruction, codes, commitment loss.

        K = `num_codebooks`, by default all of the quantizer's (training fits every level; `encode` defaults to
        `cfg.num_codebooks`). Gradients reach every parameter; the codebooks are EMA buffers, updated only when a
        trainer sets `quantizer.training_options` (train() mode). `unquantized_share` (train() mode only): each
        row is decoded from the unquantized latent with this probability, so the decoder also learns from the
        encoder's exact output (Mimi's recipe: 0.5).
        """
        if self.is_streaming:
            raise RuntimeError("Mimi.forward is the batch training pass; stream with encode/decode")
        k = self.cfg.quantizer.num_codebooks if num_codebooks is None else num_codebooks
        latent = self.encode_latent(wav)
        q = self.quantizer(latent, k)
        decoder_in, rows = q.quantized, None
        if self.training and unquantized_share > 0:
            rows = torch.rand(latent.shape[0], device=latent.device) < unquantized_share
            decoder_in = torch.where(rows[:, None, None], latent, q.quantized)
        return MimiOutput(self.decode_latent(decoder_in), q.codes, q.commitment_loss, latent, q.quantized,
                          q.semantic, q.levels, rows)

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
