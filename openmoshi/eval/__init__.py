"""Evaluation: codec metrics and reports (`openmoshi eval codec`)."""
