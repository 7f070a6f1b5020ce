"""Confidence-Gated Training for early-exit networks (arXiv 2509.17885)."""
