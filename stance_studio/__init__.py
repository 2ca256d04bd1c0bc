"""Stance Studio: encode epistemic stances into language models, store them as small
checkpoints, and blend and compare them."""

__version__ = "0.1.0"
