"""Training-time augmentation of patch batches: random flips, 90° rotations, additive spectral noise.

    xb = augment_batch(xb, {"flip": True, "rot90": True, "noise_std": 0.05}, seed=0, epoch=3, step=7)

A hyperspectral patch (C, p, p) has no preferred orientation: a field seen mirrored or turned by 90° is
the same field, so the eight symmetries of the square (a flip and a rotation by k·90°) are free extra
training samples. Spectral noise (i.i.d. Gaussian on every value, in the units of the standardised
PCA components) keeps the network from memorising exact spectra of the few training fields.

Each switch is off by default; an empty dict is the identity. The draws come from a generator seeded
by (seed, epoch, step) alone, created on the batch's device: a run is deterministic, and a resumed run
sees the same augmented batches as an uninterrupted one (the shuffle is keyed the same way).
"""
from __future__ import annotations

from typing import Any

import torch

KNOBS = {"flip": bool, "rot90": bool, "noise_std": float}
"""The switches an augmentation dict may hold, with their types: `flip` mirrors each patch left–right
with probability 1/2; `rot90` turns each patch by k·90°, k uniform in 0..3 (with `flip`: all eight
symmetries of the square); `noise_std` adds N(0, σ²) to every value (0: off)."""


def check_augment(augment: dict[str, Any]) -> None:
    """Refuse an unknown switch or a bad value, naming it and the valid choices."""
    if not isinstance(augment, dict):
        raise ValueError(f"augment={augment!r} must be a dict of switches; valid keys: {sorted(KNOBS)}")
    unknown = sorted(set(augment) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown augmentation switch(es) {unknown}; valid keys: {sorted(KNOBS)}")
    for name in ("flip", "rot90"):
        if name in augment and not isinstance(augment[name], bool):
            raise ValueError(f"augment[{name!r}]={augment[name]!r} must be True or False")
    noise = augment.get("noise_std", 0.0)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"augment['noise_std']={noise!r} must be a number >= 0 (0: off)")


def is_identity(augment: dict[str, Any]) -> bool:
    """True when no switch is on (the batch passes through untouched)."""
    return not (augment.get("flip") or augment.get("rot90") or augment.get("noise_std", 0.0) > 0)


def batch_generator(device: torch.device, seed: int, epoch: int, step: int) -> torch.Generator:
    """The generator of one batch's draws, on the batch's device, keyed by (seed, epoch, step) only."""
    # Distinct from the shuffle's key (seed · 100003 + epoch) so the two streams never coincide.
    return torch.Generator(device=device).manual_seed(((seed * 100_003 + epoch) * 1_000_003 + step) % (2 ** 63) + 7)


def rotate90(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, C, p, p) patches, each turned counter-clockwise by k[i]·90° (k: (B,) integers, taken mod 4)."""
    turned = torch.stack([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)])  # (4, B, C, p, p)
    return turned[k.remainder(4), torch.arange(len(x), device=x.device)]


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C, p, p) patches, those with mask[i] mirrored left–right."""
    return torch.where(mask.view(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)


def augment_batch(x: torch.Tensor, augment: dict[str, Any], seed: int, epoch: int, step: int) -> torch.Tensor:
    """The batch x with the switched-on augmentations applied (x itself when none is on)."""
    if is_identity(augment):
        return x
    spatial = augment.get("flip") or augment.get("rot90")
    if spatial and (x.ndim != 4 or x.shape[-1] != x.shape[-2]):
        raise ValueError(f"flip/rot90 augmentation needs square (B, C, p, p) patches; got a batch of shape "
                         f"{tuple(x.shape)}: use only noise_std for these data")
    channels_last = x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)
    g = batch_generator(x.device, seed, epoch, step)
    n = len(x)
    if augment.get("flip"):
        x = flip(x, torch.rand(n, generator=g, device=x.device) < 0.5)
    if augment.get("rot90"):
        x = rotate90(x, torch.randint(0, 4, (n,), generator=g, device=x.device))
    if augment.get("noise_std", 0.0) > 0:
        x = x + float(augment["noise_std"]) * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    # Keep the layout the training loop chose (channels-last for the CNNs: faster convolutions on CPU).
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
