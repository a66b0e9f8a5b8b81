"""The Moshi language model: Helium (temporal) and the Depth transformer."""
