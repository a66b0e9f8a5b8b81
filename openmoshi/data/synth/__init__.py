"""Synthetic spoken two-party conversations, generated offline (`openmoshi data synth`, docs/synth.md).

content.py and facts.py say what is said, script.py plans who says what and when, voices.py speaks it
(festival, flite, espeak-ng, piper), effects.py varies the user's sound (speed, pitch, loudness, room, noise),
mix.py lays it all on a stereo timeline with word alignments, generate.py writes a dataset (resumable, parallel).
"""
