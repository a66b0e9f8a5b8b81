"""Mimi: the streaming neural audio codec (SEANet + transformers + split RVQ)."""
