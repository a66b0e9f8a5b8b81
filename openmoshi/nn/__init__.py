"""Streaming building blocks that know nothing of audio or of Moshi."""
