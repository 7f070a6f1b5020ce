"""Root pytest configuration: notebooks collected by nbval run in the tiny `smoke` profile.

The notebooks' parameters cells read CGT_PROFILE (default 'quick' for readers); kernels started
by nbval inherit this environment.
"""
import os

os.environ.setdefault("CGT_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
