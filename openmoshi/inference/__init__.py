"""Streaming inference: sampling, the generator, duplex sessions, model loading."""
