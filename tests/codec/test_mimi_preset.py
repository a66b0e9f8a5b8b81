"""The `mimi` preset's figures are Kyutai's (its loader's constructor settings): attention window, sizes, codebooks.

A wrong figure here (the 250-step window one step off, say) would otherwise be caught only by the slow real-size
parity cases; the window's behaviour itself is checked exactly on a tiny transformer
(tests/nn/test_attention_window.py).
"""

from moshi.models import loaders

from openmoshi.codec.mimi import MimiConfig


def test_mimi_preset_matches_kyutai_loader_settings():
    cfg = MimiConfig.mimi()
    t, ref_t = cfg.transformer, loaders._transformer_kwargs
    assert (t.d_model, t.num_heads, t.num_layers, t.dim_feedforward, t.context) == (
        ref_t["d_model"], ref_t["num_heads"], ref_t["num_layers"], ref_t["dim_feedforward"], ref_t["context"])
    assert (t.rope_max_period, t.layer_scale, t.norm, t.gating, t.causal) == (
        ref_t["max_period"], ref_t["layer_scale"], ref_t["norm"], ref_t["gating"], ref_t["causal"])
    q, ref_q = cfg.quantizer, loaders._quantizer_kwargs
    assert (q.codebook_dim, q.num_codebooks, q.codebook_size, q.dimension) == (
        ref_q["dimension"], ref_q["n_q"], ref_q["bins"], ref_q["input_dimension"])
    s, ref_s = cfg.seanet, loaders._seanet_kwargs
    assert list(s.ratios) == ref_s["ratios"] and s.dimension == ref_s["dimension"]
    assert cfg.frame_rate == loaders.FRAME_RATE and cfg.sample_rate == loaders.SAMPLE_RATE
